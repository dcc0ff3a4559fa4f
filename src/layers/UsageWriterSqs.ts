import { SendMessageBatchCommand, SQSClient } from "@aws-sdk/client-sqs"
import { Effect, Layer, Schema } from "effect"
import type { UsageRow } from "../domain/usage.ts"
import { UsageBatchJson } from "../domain/usage.ts"
import { UsageWriteError, UsageWriter } from "../services/UsageSink.ts"

/** SQS allows 256 KiB per SendMessageBatch request (all entries together); keep a margin. */
const MAX_BATCH_BYTES = 240 * 1024
const MAX_ENTRIES = 10
const encodeBatch = Schema.encodeSync(UsageBatchJson)

/** Split rows into message bodies of at most `maxBytes` each. */
export const packUsageMessages = (rows: ReadonlyArray<UsageRow>, maxBytes: number): ReadonlyArray<string> => {
  const bodies: Array<string> = []
  let start = 0
  while (start < rows.length) {
    let end = rows.length
    let body = encodeBatch({ rows: rows.slice(start, end) })
    // Halve until it fits: a row is a few hundred bytes, so this ends in a handful of steps.
    while (Buffer.byteLength(body) > maxBytes && end - start > 1) {
      end = start + Math.ceil((end - start) / 2)
      body = encodeBatch({ rows: rows.slice(start, end) })
    }
    bodies.push(body)
    start = end
  }
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
