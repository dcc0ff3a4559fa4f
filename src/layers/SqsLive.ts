import {
  ChangeMessageVisibilityBatchCommand, ChangeMessageVisibilityCommand, DeleteMessageBatchCommand, type MessageAttributeValue,
  ReceiveMessageCommand, SendMessageBatchCommand, SQSClient
} from "@aws-sdk/client-sqs"
import { Effect, Layer } from "effect"
import { messageOf } from "../domain/errorMessage.ts"
import {
  Sqs, type SqsBatchFailure, SqsError, type SqsMessageAttributes, type SqsOutgoingMessage, type SqsReceivedMessage, type SqsVisibilityChange
} from "../services/Sqs.ts"

/** SQS's limit on entries per batch request. */
export const SQS_MAX_ENTRIES = 10
/** Sends of entries SQS reports as Failed (throttling, internal errors) before giving up. */
const SEND_ATTEMPTS = 3

const groupsOf = <A>(items: ReadonlyArray<A>, size: number): ReadonlyArray<ReadonlyArray<A>> => {
  const groups: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) groups.push(items.slice(i, i + size))
  return groups
}

const toMessageAttributes = (attributes: SqsMessageAttributes): Record<string, MessageAttributeValue> =>
  Object.fromEntries(Object.entries(attributes).map(([name, value]) => [name, { DataType: "String", StringValue: value }]))

const fromMessageAttributes = (attributes: Record<string, MessageAttributeValue> | undefined): SqsMessageAttributes => {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(attributes ?? {})) if (value.StringValue !== undefined) out[name] = value.StringValue
  return out
}

/**
 * `Sqs` for one queue over @aws-sdk/client-sqs. The client is made once and destroyed when the
 * layer's scope closes; region, endpoint (AWS_ENDPOINT_URL_SQS) and credentials come from the
 * standard AWS environment, as for every AWS client of the project.
 */
export const SqsLive = (queueUrl: string) =>
  Layer.effect(Sqs, Effect.gen(function*() {
    const client = yield* Effect.acquireRelease(Effect.sync(() => new SQSClient({})), (c) => Effect.sync(() => c.destroy()))

    /** One SDK call; interruption aborts the HTTP request (a long poll ends at once). */
    const call = <A>(operation: string, send: (abortSignal: AbortSignal) => Promise<A>) =>
      Effect.tryPromise({
        try: send,
        catch: (cause) => new SqsError({ operation, message: messageOf(cause) })
      })

    const sendGroup = (group: ReadonlyArray<SqsOutgoingMessage>) =>
      call("SendMessageBatch", async (abortSignal) => {
        let pending = group.map((m, i) => ({
          Id: String(i),
          MessageBody: m.body,
          ...(m.attributes === undefined ? {} : { MessageAttributes: toMessageAttributes(m.attributes) })
        }))
        let lastReason = ""
        for (let attempt = 0; attempt < SEND_ATTEMPTS && pending.length > 0; attempt++) {
          const out = await client.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: pending }), { abortSignal })
          const failed = new Map((out.Failed ?? []).map((f) => [f.Id, f]))
          const first = out.Failed?.[0]
          if (first !== undefined) lastReason = `${first.Code ?? "unknown"}: ${first.Message ?? ""}`
          // A sender fault (too large, bad attribute) fails again the same way: no point resending.
          if ((out.Failed ?? []).some((f) => f.SenderFault === true)) break
          pending = pending.filter((e) => failed.has(e.Id))
        }
        if (pending.length > 0) throw new Error(`${pending.length} of ${group.length} entries refused (${lastReason})`)
      })

    const failuresOf = (
      handles: ReadonlyArray<string>,
      failed: ReadonlyArray<{ readonly Id?: string | undefined; readonly Code?: string | undefined; readonly Message?: string | undefined }> | undefined
    ): ReadonlyArray<SqsBatchFailure> =>
      (failed ?? []).map((f) => ({ receiptHandle: handles[Number(f.Id)] ?? "", code: f.Code ?? "unknown", message: f.Message ?? "" }))

    const deleteGroup = (handles: ReadonlyArray<string>) =>
      call("DeleteMessageBatch", (abortSignal) =>
        client.send(new DeleteMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: handles.map((ReceiptHandle, i) => ({ Id: String(i), ReceiptHandle }))
        }), { abortSignal })).pipe(Effect.map((out) => failuresOf(handles, out.Failed)))

    const changeGroup = (changes: ReadonlyArray<SqsVisibilityChange>) =>
      call("ChangeMessageVisibilityBatch", (abortSignal) =>
        client.send(new ChangeMessageVisibilityBatchCommand({
          QueueUrl: queueUrl,
          Entries: changes.map((c, i) => ({ Id: String(i), ReceiptHandle: c.receiptHandle, VisibilityTimeout: c.visibilityTimeoutSeconds }))
        }), { abortSignal })).pipe(Effect.map((out) => failuresOf(changes.map((c) => c.receiptHandle), out.Failed)))

    return Sqs.of({
      queueUrl,
      sendBatch: (messages) => Effect.forEach(groupsOf(messages, SQS_MAX_ENTRIES), sendGroup, { discard: true }),
      receive: (options) =>
        call("ReceiveMessage", (abortSignal) =>
          client.send(new ReceiveMessageCommand({
            QueueUrl: queueUrl,
            MaxNumberOfMessages: options.maxMessages,
            WaitTimeSeconds: options.waitSeconds,
            VisibilityTimeout: options.visibilityTimeoutSeconds,
            MessageSystemAttributeNames: ["ApproximateReceiveCount"],
            MessageAttributeNames: ["All"]
          }), { abortSignal })).pipe(
          Effect.map((out) =>
            (out.Messages ?? []).flatMap((m): ReadonlyArray<SqsReceivedMessage> =>
              m.MessageId === undefined || m.ReceiptHandle === undefined ? [] : [{
                id: m.MessageId,
                receiptHandle: m.ReceiptHandle,
                body: m.Body ?? "",
                attributes: fromMessageAttributes(m.MessageAttributes),
                receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? 1)
              }]))
        ),
      deleteBatch: (handles) =>
        Effect.forEach(groupsOf(handles, SQS_MAX_ENTRIES), deleteGroup).pipe(Effect.map((failures) => failures.flat())),
      changeVisibility: (change) =>
        call("ChangeMessageVisibility", (abortSignal) =>
          client.send(new ChangeMessageVisibilityCommand({
            QueueUrl: queueUrl,
            ReceiptHandle: change.receiptHandle,
            VisibilityTimeout: change.visibilityTimeoutSeconds
          }), { abortSignal })).pipe(Effect.asVoid),
      changeVisibilityBatch: (changes) =>
        Effect.forEach(groupsOf(changes, SQS_MAX_ENTRIES), changeGroup).pipe(Effect.map((failures) => failures.flat()))
    })
  }))
