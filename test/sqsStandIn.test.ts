import {
  ChangeMessageVisibilityBatchCommand, ChangeMessageVisibilityCommand, DeleteMessageBatchCommand, DeleteMessageCommand, MessageNotInflight,
  ReceiptHandleIsInvalid, ReceiveMessageCommand, type ReceiveMessageCommandInput, SendMessageBatchCommand, SendMessageCommand, type SQSClient
} from "@aws-sdk/client-sqs"
import { createHash } from "node:crypto"
import { afterEach, describe, expect, it } from "vitest"
import { md5OfMessageAttributes } from "../src/simulators/sqsStandIn.ts"
import { sqsClientFor, type SqsStandIn, type SqsStandInOptions, startSqsStandIn } from "./support/awsStandIns.ts"

/**
 * The SQS stand-in's consumer side, through the real @aws-sdk/client-sqs (which checks MD5OfBody
 * on every receive and MD5OfMessageBody on every send). Visibility timeouts are 1 s, the
 * shortest SQS accepts, so the file runs in a few seconds.
 */

const open: Array<{ readonly sqs: SqsStandIn; readonly client: SQSClient }> = []
afterEach(async () => {
  for (const { sqs, client } of open.splice(0)) {
    client.destroy()
    await sqs.close()
  }
})

const queue = async (options: SqsStandInOptions = {}) => {
  const sqs = await startSqsStandIn(options)
  const client = sqsClientFor(sqs)
  open.push({ sqs, client })
  const receive = (input: Omit<ReceiveMessageCommandInput, "QueueUrl"> = {}) =>
    client.send(new ReceiveMessageCommand({ QueueUrl: sqs.queueUrl, ...input })).then((out) => out.Messages ?? [])
  const send = (body: string) => client.send(new SendMessageCommand({ QueueUrl: sqs.queueUrl, MessageBody: body }))
  return { sqs, client, receive, send }
}

const md5 = (text: string) => createHash("md5").update(text, "utf8").digest("hex")
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe("MD5OfMessageAttributes", () => {
  it("matches SQS's digests for published examples", () => {
    // Values SQS returned for these attributes, as recorded by other SQS implementations' tests.
    expect(md5OfMessageAttributes({ SellerName: { DataType: "String", StringValue: "Example Store" } })).toBe("cd28f3b68aeee4b2eac9c66f2f694b58")
    expect(md5OfMessageAttributes({ timestamp: { DataType: "Number", StringValue: "1493147359900" } })).toBe("235c5c510d26fb653d073faed50ae77c")
    expect(md5OfMessageAttributes({
      ordinal: { DataType: "Number", StringValue: "1" },
      category: { DataType: "String", StringValue: "test" }
    })).toBe("d21ae90c49061e927f57df5f5d72be1f")
    expect(md5OfMessageAttributes({})).toBeUndefined()
  })
})

describe("SQS stand-in, consumer side (real SDK client, AWS JSON 1.0)", () => {
  it("send, receive and delete round trip with message attributes and system attributes", async () => {
    const { sqs, client, receive } = await queue()
    const messageAttributes = {
      type: { DataType: "String", StringValue: "usage_log" },
      v: { DataType: "Number", StringValue: "1" },
      blob: { DataType: "Binary", BinaryValue: Uint8Array.of(0, 1, 2, 250) }
    }
    const before = Date.now()
    const sent = await client.send(new SendMessageCommand({ QueueUrl: sqs.queueUrl, MessageBody: "{\"type\":\"usage_log\"}", MessageAttributes: messageAttributes }))
    expect(sent.MD5OfMessageBody).toBe(md5("{\"type\":\"usage_log\"}"))
    expect(sent.MD5OfMessageAttributes).toMatch(/^[0-9a-f]{32}$/)

    const [message, ...others] = await receive({ MessageAttributeNames: ["All"], MessageSystemAttributeNames: ["All"] })
    expect(others).toEqual([])
    expect(message?.MessageId).toBe(sent.MessageId)
    expect(message?.Body).toBe("{\"type\":\"usage_log\"}")
    expect(message?.MessageAttributes).toEqual(messageAttributes)
    // The digest of what came back is the digest of what was sent.
    expect(message?.MD5OfMessageAttributes).toBe(sent.MD5OfMessageAttributes)
    expect(message?.Attributes?.ApproximateReceiveCount).toBe("1")
    const sentTimestamp = Number(message?.Attributes?.SentTimestamp)
    expect(sentTimestamp).toBeGreaterThanOrEqual(before)
    expect(sentTimestamp).toBeLessThanOrEqual(Date.now())
    expect(Number(message?.Attributes?.ApproximateFirstReceiveTimestamp)).toBeGreaterThanOrEqual(sentTimestamp)
    expect(sqs.inFlight()).toBe(1)
    expect(sqs.visible()).toBe(0)

    await client.send(new DeleteMessageCommand({ QueueUrl: sqs.queueUrl, ReceiptHandle: message?.ReceiptHandle }))
    expect(sqs.inQueue()).toBe(0)
    expect(sqs.deleted()).toBe(1)
    expect(await receive({ MaxNumberOfMessages: 10 })).toEqual([])
    expect(sqs.violations).toEqual([])
  })

  it("returns only the attributes asked for, by name or prefix", async () => {
    const { sqs, client, receive } = await queue()
    await client.send(new SendMessageBatchCommand({
      QueueUrl: sqs.queueUrl,
      Entries: ["a", "b"].map((Id) => ({
        Id,
        MessageBody: Id,
        MessageAttributes: {
          type: { DataType: "String", StringValue: "usage_log" },
          "trace.id": { DataType: "String", StringValue: "t-1" },
          "trace.span": { DataType: "String", StringValue: "s-1" }
        }
      }))
    }))
    const [first] = await receive({ MessageAttributeNames: ["type"] })
    expect(first?.MessageAttributes).toEqual({ type: { DataType: "String", StringValue: "usage_log" } })
    expect(first?.MD5OfMessageAttributes).toBe(md5OfMessageAttributes({ type: { DataType: "String", StringValue: "usage_log" } }))
    expect(first?.Attributes).toBeUndefined()
    const [second] = await receive({ MessageAttributeNames: ["trace.*"], MessageSystemAttributeNames: ["ApproximateReceiveCount"] })
    expect(Object.keys(second?.MessageAttributes ?? {}).sort()).toEqual(["trace.id", "trace.span"])
    expect(second?.Attributes).toEqual({ ApproximateReceiveCount: "1" })
  })

  it("a long poll answers as soon as a message arrives, and an empty one after its wait", async () => {
    const { sqs, receive, send } = await queue()
    const started = Date.now()
    const polling = receive({ WaitTimeSeconds: 20, MaxNumberOfMessages: 10 })
    await sleep(200)
    expect(sqs.requests.filter((r) => r.target === "AmazonSQS.ReceiveMessage")).toHaveLength(1)
    await send("late")
    const messages = await polling
    expect(messages.map((m) => m.Body)).toEqual(["late"])
    // Answered on the message, not at the end of the 20 s wait.
    expect(Date.now() - started).toBeLessThan(10_000)

    const emptyStarted = Date.now()
    expect(await receive({ WaitTimeSeconds: 1 })).toEqual([])
    expect(Date.now() - emptyStarted).toBeGreaterThanOrEqual(900)
  })

  it("closing the stand-in ends a pending long poll with an empty answer", async () => {
    const sqs = await startSqsStandIn()
    const client = sqsClientFor(sqs)
    try {
      const started = Date.now()
      const polling = client.send(new ReceiveMessageCommand({ QueueUrl: sqs.queueUrl, WaitTimeSeconds: 20 })).then(
        (out) => out.Messages ?? [],
        () => "failed"
      )
      await sleep(200)
      await sqs.close()
      const outcome = await polling
      expect(outcome).toEqual([])
      expect(Date.now() - started).toBeLessThan(10_000)
    } finally {
      client.destroy()
    }
  })

  it("a long poll the client aborts takes no message: the next one arrives for the next receive", async () => {
    const { sqs, client, receive, send } = await queue()
    const abort = new AbortController()
    const aborted = client.send(new ReceiveMessageCommand({ QueueUrl: sqs.queueUrl, WaitTimeSeconds: 20 }), { abortSignal: abort.signal }).then(
      () => "answered",
      () => "aborted"
    )
    await sleep(200)
    abort.abort()
    expect(await aborted).toBe("aborted")
    await sleep(100)
    const sent = await send("for the next receive")
    const [message] = await receive({ MessageSystemAttributeNames: ["ApproximateReceiveCount"] })
    expect(message?.MessageId).toBe(sent.MessageId)
    expect(message?.Attributes?.ApproximateReceiveCount).toBe("1")
  })

  it("a message not deleted is received again after its visibility timeout, ApproximateReceiveCount 2", async () => {
    const { sqs, receive, send, client } = await queue()
    const sent = await send("redeliver me")
    const [first] = await receive({ VisibilityTimeout: 1, MessageSystemAttributeNames: ["ApproximateReceiveCount"] })
    expect(first?.Attributes?.ApproximateReceiveCount).toBe("1")
    expect(await receive()).toEqual([])
    expect(sqs.inFlight()).toBe(1)

    const [second] = await receive({ WaitTimeSeconds: 5, MessageSystemAttributeNames: ["ApproximateReceiveCount"] })
    expect(second?.MessageId).toBe(sent.MessageId)
    expect(second?.Attributes?.ApproximateReceiveCount).toBe("2")
    expect(second?.ReceiptHandle).not.toBe(first?.ReceiptHandle)
    // As on SQS standard queues, the first receive's (stale) handle still deletes the message.
    await client.send(new DeleteMessageCommand({ QueueUrl: sqs.queueUrl, ReceiptHandle: first?.ReceiptHandle }))
    expect(sqs.inQueue()).toBe(0)
  })

  it("the queue's default visibility timeout applies when a receive names none; maxReceiveCount dead-letters", async () => {
    const { sqs, receive, send } = await queue({ visibilityTimeoutSeconds: 0.2, maxReceiveCount: 2 })
    const sent = await send("poison")
    expect(await receive()).toHaveLength(1)
    expect(await receive()).toEqual([])
    const again = await receive({ WaitTimeSeconds: 2, MessageSystemAttributeNames: ["ApproximateReceiveCount"] })
    expect(again.map((m) => m.Attributes?.ApproximateReceiveCount)).toEqual(["2"])
    // Received twice: the next receive moves it to the dead letters instead of returning it.
    await sleep(300)
    expect(await receive()).toEqual([])
    expect(sqs.inQueue()).toBe(0)
    expect(sqs.deadLetters()).toEqual([{ messageId: sent.MessageId, body: "poison", messageAttributes: {}, receiveCount: 2 }])
  })

  it("ChangeMessageVisibility extends a message's timeout, and 0 makes it visible at once", async () => {
    const { sqs, client, receive, send } = await queue()
    await send("slow batch")
    const [message] = await receive({ VisibilityTimeout: 1 })
    await client.send(new ChangeMessageVisibilityCommand({ QueueUrl: sqs.queueUrl, ReceiptHandle: message?.ReceiptHandle, VisibilityTimeout: 30 }))
    await sleep(1_300)
    expect(await receive()).toEqual([])
    expect(sqs.inFlight()).toBe(1)

    await client.send(new ChangeMessageVisibilityCommand({ QueueUrl: sqs.queueUrl, ReceiptHandle: message?.ReceiptHandle, VisibilityTimeout: 0 }))
    const [again] = await receive({ VisibilityTimeout: 30, MessageSystemAttributeNames: ["ApproximateReceiveCount"] })
    expect(again?.Body).toBe("slow batch")
    expect(again?.Attributes?.ApproximateReceiveCount).toBe("2")

    // The first handle is stale now; a handle of a visible message is not in flight.
    await expect(client.send(new ChangeMessageVisibilityCommand({ QueueUrl: sqs.queueUrl, ReceiptHandle: message?.ReceiptHandle, VisibilityTimeout: 5 })))
      .rejects.toBeInstanceOf(ReceiptHandleIsInvalid)
    await client.send(new ChangeMessageVisibilityCommand({ QueueUrl: sqs.queueUrl, ReceiptHandle: again?.ReceiptHandle, VisibilityTimeout: 0 }))
    await expect(client.send(new ChangeMessageVisibilityCommand({ QueueUrl: sqs.queueUrl, ReceiptHandle: again?.ReceiptHandle, VisibilityTimeout: 5 })))
      .rejects.toBeInstanceOf(MessageNotInflight)
  })

  it("ChangeMessageVisibilityBatch extends or releases each entry and reports the ones it cannot change", async () => {
    const { sqs, client, receive } = await queue()
    await client.send(new SendMessageBatchCommand({ QueueUrl: sqs.queueUrl, Entries: ["a", "b"].map((Id) => ({ Id, MessageBody: Id })) }))
    const messages = await receive({ MaxNumberOfMessages: 10, VisibilityTimeout: 30 })
    const handleOf = (body: string) => messages.find((m) => m.Body === body)?.ReceiptHandle
    const out = await client.send(new ChangeMessageVisibilityBatchCommand({
      QueueUrl: sqs.queueUrl,
      Entries: [
        { Id: "release", ReceiptHandle: handleOf("a"), VisibilityTimeout: 0 },
        { Id: "extend", ReceiptHandle: handleOf("b"), VisibilityTimeout: 60 },
        { Id: "bogus", ReceiptHandle: "never-issued", VisibilityTimeout: 60 }
      ]
    }))
    expect(out.Successful?.map((s) => s.Id).sort()).toEqual(["extend", "release"])
    expect(out.Failed?.map((f) => [f.Id, f.Code, f.SenderFault])).toEqual([["bogus", "ReceiptHandleIsInvalid", true]])
    expect((await receive({ MaxNumberOfMessages: 10 })).map((m) => m.Body)).toEqual(["a"])
  })

  it("DeleteMessageBatch deletes the good handles and reports the bad ones as Failed entries", async () => {
    const { sqs, client, receive } = await queue()
    await client.send(new SendMessageBatchCommand({ QueueUrl: sqs.queueUrl, Entries: ["a", "b", "c"].map((Id) => ({ Id, MessageBody: Id })) }))
    const messages = await receive({ MaxNumberOfMessages: 10 })
    expect(messages).toHaveLength(3)
    const handleOf = (body: string) => messages.find((m) => m.Body === body)?.ReceiptHandle
    const out = await client.send(new DeleteMessageBatchCommand({
      QueueUrl: sqs.queueUrl,
      Entries: [
        { Id: "first", ReceiptHandle: handleOf("a") },
        { Id: "bad", ReceiptHandle: "not-a-receipt-handle" },
        { Id: "third", ReceiptHandle: handleOf("c") }
      ]
    }))
    expect(out.Successful?.map((s) => s.Id).sort()).toEqual(["first", "third"])
    expect(out.Failed).toHaveLength(1)
    expect(out.Failed?.[0]).toMatchObject({ Id: "bad", Code: "ReceiptHandleIsInvalid", SenderFault: true })
    expect(sqs.inQueue()).toBe(1)
    expect(sqs.deleted()).toBe(2)

    await expect(client.send(new DeleteMessageCommand({ QueueUrl: sqs.queueUrl, ReceiptHandle: "not-a-receipt-handle" })))
      .rejects.toBeInstanceOf(ReceiptHandleIsInvalid)
    await expect(client.send(new DeleteMessageBatchCommand({
      QueueUrl: sqs.queueUrl,
      Entries: [{ Id: "x", ReceiptHandle: handleOf("b") }, { Id: "x", ReceiptHandle: handleOf("b") }]
    }))).rejects.toMatchObject({ name: "BatchEntryIdsNotDistinct" })
  })

  it("MaxNumberOfMessages is honoured (default 1, at most 10)", async () => {
    const { sqs, client, receive } = await queue()
    for (let batch = 0; batch < 3; batch++) {
      const entries = Array.from({ length: batch < 2 ? 10 : 5 }, (_, i) => ({ Id: `m${i}`, MessageBody: `body ${batch}-${i}` }))
      await client.send(new SendMessageBatchCommand({ QueueUrl: sqs.queueUrl, Entries: entries }))
    }
    expect(await receive()).toHaveLength(1)
    expect(await receive({ MaxNumberOfMessages: 3 })).toHaveLength(3)
    expect(await receive({ MaxNumberOfMessages: 10 })).toHaveLength(10)
    expect(await receive({ MaxNumberOfMessages: 10 })).toHaveLength(10)
    expect(await receive({ MaxNumberOfMessages: 10 })).toHaveLength(1)
    expect(sqs.violations).toEqual([])
    await expect(receive({ MaxNumberOfMessages: 11 })).rejects.toMatchObject({ name: "InvalidParameterValue" })
    expect(sqs.violations).toHaveLength(1)
  })

  it("test controls: enqueue, expireVisibility and the queue's counts in GET /_stats", async () => {
    const { sqs, receive } = await queue()
    const id = sqs.enqueue("not a usage message", { type: { DataType: "String", StringValue: "bogus" } })
    const [message] = await receive({ VisibilityTimeout: 60, MessageAttributeNames: ["All"] })
    expect(message?.MessageId).toBe(id)
    expect(message?.MessageAttributes?.["type"]?.StringValue).toBe("bogus")
    expect([sqs.visible(), sqs.inFlight()]).toEqual([0, 1])
    expect(sqs.expireVisibility()).toBe(1)
    expect([sqs.visible(), sqs.inFlight()]).toEqual([1, 0])
    const stats = await fetch(`${sqs.url}/_stats`).then((r) => r.json() as Promise<unknown>)
    expect(stats).toMatchObject({ messages: 1, rows: 0, undecodable: 1, inQueue: 1, inFlight: 0, deleted: 0, deadLetters: 0 })
  })
})
