import { SendMessageBatchCommand, SQSClient } from "@aws-sdk/client-sqs"
import { Effect, Layer } from "effect"
import type { UsageRow } from "../domain/usage.ts"
import { UsageWriteError, UsageWriter } from "../services/UsageSink.ts"

/** SQS allows 256 KiB per SendMessageBatch request (all entries together); keep a margin. */
const MAX_BATCH_BYTES = 240 * 1024
const MAX_ENTRIES = 10

/**
 * Split rows into message bodies of at most `maxBytes` each, encoding every row once and packing
 * greedily (the body is `{"rows":[…]}`, which decodes with UsageBatchJson). A single row larger
 * than `maxBytes` still gets a message of its own, for SQS to refuse loudly rather than dropping it.
 */
export const packUsageMessages = (rows: ReadonlyArray<UsageRow>, maxBytes: number): ReadonlyArray<string> => {
  const head = "{\"rows\":["
  const tail = "]}"
  const frame = head.length + tail.length
  const bodies: Array<string> = []
  let parts: Array<string> = []
  let size = frame
  for (const row of rows) {
    const encoded = JSON.stringify(row)
    const bytes = Buffer.byteLength(encoded) + (parts.length > 0 ? 1 : 0)
    if (parts.length > 0 && size + bytes > maxBytes) {
      bodies.push(head + parts.join(",") + tail)
      parts = []
      size = frame
    }
    size += Buffer.byteLength(encoded) + (parts.length > 0 ? 1 : 0)
    parts.push(encoded)
  }
  if (parts.length > 0) bodies.push(head + parts.join(",") + tail)
  return bodies
}

/** Usage batches to the usage-log queue; `tb queued-writer` (or the Lambda entry) inserts them. */
export const usageWriterSqs = (queueUrl: string) =>
  Layer.effect(UsageWriter, Effect.gen(function*() {
    const client = yield* Effect.acquireRelease(Effect.sync(() => new SQSClient({})), (c) => Effect.sync(() => c.destroy()))
    const sendBodies = (bodies: ReadonlyArray<string>) =>
      Effect.tryPromise({
        try: async () => {
          let pending = bodies.map((body, i) => ({ Id: String(i), MessageBody: body }))
          for (let attempt = 0; attempt < 3 && pending.length > 0; attempt++) {
            const out = await client.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: pending }))
            const failed = new Set((out.Failed ?? []).map((f) => f.Id))
            pending = pending.filter((e) => failed.has(e.Id))
          }
          if (pending.length > 0) throw new Error(`${pending.length} SQS entries failed`)
        },
        catch: (cause) => new UsageWriteError({ reason: "Queue", message: cause instanceof Error ? cause.message : String(cause) })
      })
    return UsageWriter.of({
      kind: "sqs",
      write: (rows) =>
        Effect.gen(function*() {
          const bodies = packUsageMessages(rows, MAX_BATCH_BYTES / MAX_ENTRIES)
          for (let i = 0; i < bodies.length; i += MAX_ENTRIES) yield* sendBodies(bodies.slice(i, i + MAX_ENTRIES))
        })
    })
  }))
