import { createHash, randomUUID } from "node:crypto"
import { createServer, type ServerResponse } from "node:http"
import { decodeUsageMessage } from "../domain/usageMessage.ts"
import { closeServer, jsonProtocolHandler, listenLoopback, type RecordedRequest, replyJson, type StandIn } from "./awsJsonProtocol.ts"

/**
 * A loopback stand-in for SQS (one queue), speaking AWS JSON 1.0 like the installed SDK client
 * (`X-Amz-Target: AmazonSQS.<Op>`, `application/x-amz-json-1.0`): SendMessage(Batch) with the
 * real service's batch quotas, ReceiveMessage with a visibility timeout, DeleteMessage(Batch).
 * Point the SDK at it with AWS_ENDPOINT_URL_SQS and STAND_IN_AWS_ENV. `GET /_stats` (not part of
 * SQS) reports what arrived, for a process that runs it as a child (`sqsStandInMain.ts`).
 */

/** SQS quotas the real service enforces on SendMessageBatch. */
export const SQS_MAX_BATCH_ENTRIES = 10
export const SQS_MAX_BATCH_BYTES = 256 * 1024

export const SQS_STATS_PATH = "/_stats"

export interface SqsStandInStats {
  /** Bodies accepted by SendMessage / SendMessageBatch. */
  readonly messages: number
  /** Usage rows in those bodies. */
  readonly rows: number
  /** Accepted bodies that are not a usage batch. */
  readonly undecodable: number
  readonly violations: ReadonlyArray<string>
}

export interface SqsStandInOptions {
  readonly queueName?: string
  /** 0 (default): any free port. */
  readonly port?: number
}

export interface SqsStandIn extends StandIn {
  readonly queueUrl: string
  /** Every body accepted by SendMessageBatch / SendMessage, in arrival order (also after deletion). */
  readonly acceptedBodies: Array<string>
  /** Messages not yet deleted. */
  readonly inQueue: () => number
  /** Report the entries with these Ids as Failed (not stored) in the next SendMessageBatch requests, `times` times each. */
  readonly failEntries: (ids: ReadonlyArray<string>, times?: number) => void
  /** Quota violations seen (a correct producer never causes any). */
  readonly violations: Array<string>
  /** Decodes the bodies accepted since the last call (not per message, to keep SendMessageBatch cheap). */
  readonly stats: () => SqsStandInStats
}

interface QueuedMessage {
  readonly messageId: string
  readonly body: string
  readonly md5: string
  receiptHandle: string | undefined
  invisibleUntil: number
  receiveCount: number
}

const SQS_JSON = "application/x-amz-json-1.0"
const md5Hex = (s: string) => createHash("md5").update(s, "utf8").digest("hex")


export const startSqsStandIn = async (options: SqsStandInOptions = {}): Promise<SqsStandIn> => {
  const requests: Array<RecordedRequest> = []
  const acceptedBodies: Array<string> = []
  const violations: Array<string> = []
  const queue: Array<QueuedMessage> = []
  const failing = new Map<string, number>()
  let queueUrl = ""

  const sqsError = (res: ServerResponse, status: number, type: string, queryCode: string, message: string) =>
    replyJson(res, SQS_JSON, status, { __type: `com.amazonaws.sqs#${type}`, message }, { "x-amzn-query-error": `${queryCode};Sender` })

  const accept = (body: string): QueuedMessage => {
    const message = { messageId: randomUUID(), body, md5: md5Hex(body), receiptHandle: undefined, invisibleUntil: 0, receiveCount: 0 }
    queue.push(message)
    acceptedBodies.push(body)
    return message
  }

  const receive = (max: number, visibilityMs: number) => {
    const now = Date.now()
    const visible = queue.filter((m) => m.invisibleUntil <= now).slice(0, max)
    for (const m of visible) {
      m.receiptHandle = randomUUID()
      m.invisibleUntil = now + visibilityMs
      m.receiveCount++
    }
    return visible
  }

  const removeByHandle = (handle: unknown) => {
    const i = queue.findIndex((m) => m.receiptHandle !== undefined && m.receiptHandle === handle)
    if (i >= 0) queue.splice(i, 1)
    return i >= 0
  }

  let decoded = 0
  let rows = 0
  let undecodable = 0
  const stats = (): SqsStandInStats => {
    for (; decoded < acceptedBodies.length; decoded++) {
      try {
        rows += decodeUsageMessage(acceptedBodies[decoded]!).length
      } catch {
        undecodable++
      }
    }
    return { messages: acceptedBodies.length, rows, undecodable, violations: [...violations] }
  }

  const handle = async (operation: string, body: Record<string, unknown>, res: ServerResponse) => {
    if (body["QueueUrl"] !== queueUrl) {
      return sqsError(res, 400, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", `The specified queue does not exist: ${String(body["QueueUrl"])}`)
    }
    switch (operation) {
      case "SendMessage": {
        const m = accept(String(body["MessageBody"] ?? ""))
        return replyJson(res, SQS_JSON, 200, { MessageId: m.messageId, MD5OfMessageBody: m.md5 })
      }
      case "SendMessageBatch": {
        const entries = Array.isArray(body["Entries"]) ? body["Entries"] as Array<{ Id: string; MessageBody: string }> : []
        if (entries.length === 0) return sqsError(res, 400, "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest", "no entries")
        if (entries.length > SQS_MAX_BATCH_ENTRIES) {
          violations.push(`SendMessageBatch with ${entries.length} entries`)
          return sqsError(res, 400, "TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", `${entries.length} entries`)
        }
        const bytes = entries.reduce((n, e) => n + Buffer.byteLength(e.MessageBody ?? "", "utf8"), 0)
        if (bytes > SQS_MAX_BATCH_BYTES) {
          violations.push(`SendMessageBatch of ${bytes} bytes`)
          return sqsError(res, 400, "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong", `${bytes} bytes`)
        }
        if (new Set(entries.map((e) => e.Id)).size !== entries.length) {
          violations.push("SendMessageBatch with duplicate entry ids")
          return sqsError(res, 400, "BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", "duplicate ids")
        }
        const Successful: Array<unknown> = []
        const Failed: Array<unknown> = []
        for (const e of entries) {
          const left = failing.get(e.Id) ?? 0
          if (left > 0) {
            failing.set(e.Id, left - 1)
            Failed.push({ Id: e.Id, SenderFault: false, Code: "InternalError", Message: "injected failure (test)" })
            continue
          }
          const m = accept(e.MessageBody)
          Successful.push({ Id: e.Id, MessageId: m.messageId, MD5OfMessageBody: m.md5 })
        }
        return replyJson(res, SQS_JSON, 200, { Successful, Failed })
      }
      case "ReceiveMessage": {
        const max = Math.min(10, Math.max(1, Number(body["MaxNumberOfMessages"] ?? 1)))
        const visibilityMs = Number(body["VisibilityTimeout"] ?? 30) * 1000
        const deadline = Date.now() + Math.min(20, Number(body["WaitTimeSeconds"] ?? 0)) * 1000
        let got = receive(max, visibilityMs)
        while (got.length === 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 25))
          got = receive(max, visibilityMs)
        }
        return replyJson(res, SQS_JSON, 200, got.length === 0 ? {} : {
          Messages: got.map((m) => ({ MessageId: m.messageId, ReceiptHandle: m.receiptHandle, MD5OfBody: m.md5, Body: m.body, Attributes: { ApproximateReceiveCount: String(m.receiveCount) } }))
        })
      }
      case "DeleteMessage": {
        if (!removeByHandle(body["ReceiptHandle"])) return sqsError(res, 400, "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", "unknown receipt handle")
        return replyJson(res, SQS_JSON, 200, {})
      }
      case "DeleteMessageBatch": {
        const entries = Array.isArray(body["Entries"]) ? body["Entries"] as Array<{ Id: string; ReceiptHandle: string }> : []
        const Successful: Array<unknown> = []
        const Failed: Array<unknown> = []
        for (const e of entries) {
          if (removeByHandle(e.ReceiptHandle)) Successful.push({ Id: e.Id })
          else Failed.push({ Id: e.Id, SenderFault: true, Code: "ReceiptHandleIsInvalid", Message: "unknown receipt handle" })
        }
        return replyJson(res, SQS_JSON, 200, { Successful, Failed })
      }
      default:
        return replyJson(res, SQS_JSON, 400, { __type: "com.amazonaws.sqs#UnsupportedOperation", message: operation })
    }
  }

  const protocol = jsonProtocolHandler(SQS_JSON, "AmazonSQS", requests, handle)
  const server = createServer((req, res) => {
    if (req.method === "GET" && req.url === SQS_STATS_PATH) return replyJson(res, "application/json", 200, stats())
    protocol(req, res)
  })
  const url = await listenLoopback(server, options.port ?? 0)
  queueUrl = `${url}/000000000000/${options.queueName ?? "usage-logs"}`
  return {
    url,
    queueUrl,
    requests,
    acceptedBodies,
    violations,
    stats,
    inQueue: () => queue.length,
    failEntries: (ids, times = 1) => {
      for (const id of ids) failing.set(id, times)
    },
    close: closeServer(server)
  }
}
