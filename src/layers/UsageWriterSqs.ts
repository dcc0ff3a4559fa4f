import { SendMessageBatchCommand, SQSClient } from "@aws-sdk/client-sqs"
import { Effect, Layer } from "effect"
import { promisify } from "node:util"
import { gzip } from "node:zlib"
import type { UsageRow } from "../domain/usage.ts"
import { UsageWriteError, UsageWriter } from "../services/UsageSink.ts"

/** SQS allows 256 KiB per SendMessageBatch request (all entries together); keep a margin. */
const MAX_BATCH_BYTES = 240 * 1024
const MAX_ENTRIES = 10

export interface PackedBatch {
  readonly rows: ReadonlyArray<UsageRow>
  /** `{"rows":[…]}`, decodable with UsageBatchJson. */
  readonly json: string
}

const batchJson = (encodedRows: ReadonlyArray<string>) => `{"rows":[${encodedRows.join(",")}]}`

/**
 * Split rows into batches whose JSON is at most `maxBytes`, encoding every row once and packing
 * greedily. A single row larger than `maxBytes` still gets a batch of its own, for SQS to refuse
 * loudly rather than dropping it.
 */
export const packUsageBatches = (rows: ReadonlyArray<UsageRow>, maxBytes: number): ReadonlyArray<PackedBatch> => {
  const frame = batchJson([]).length
  const batches: Array<PackedBatch> = []
  let start = 0
  let encoded: Array<string> = []
  let size = frame
  rows.forEach((row, i) => {
    const text = JSON.stringify(row)
    const bytes = Buffer.byteLength(text) + (encoded.length > 0 ? 1 : 0)
    if (encoded.length > 0 && size + bytes > maxBytes) {
      batches.push({ rows: rows.slice(start, i), json: batchJson(encoded) })
      start = i
      encoded = []
      size = frame
    }
    size += Buffer.byteLength(text) + (encoded.length > 0 ? 1 : 0)
    encoded.push(text)
  })
  if (encoded.length > 0) batches.push({ rows: rows.slice(start), json: batchJson(encoded) })
  return batches
}

const gzipAsync = promisify(gzip)

/** Usage JSON compresses about tenfold; packing at 6× the limit leaves room for less repetitive batches. */
const COMPRESSED_PACKING_FACTOR = 6

/**
 * Message bodies for rows (see decodeUsageMessage): batch JSON gzip-compressed at level 1 on
 * libuv's thread pool (the event loop does not pay for it) and base64-encoded, each at most
 * `maxBytes`. A batch that still compresses too large is split in half and tried again.
 */
export const compressUsageMessages = async (rows: ReadonlyArray<UsageRow>, maxBytes: number): Promise<ReadonlyArray<string>> => {
  const compress = async (batch: PackedBatch): Promise<ReadonlyArray<string>> => {
    const body = (await gzipAsync(batch.json, { level: 1 })).toString("base64")
    if (body.length <= maxBytes || batch.rows.length <= 1) return [body]
    const half = Math.ceil(batch.rows.length / 2)
    const halves = [batch.rows.slice(0, half), batch.rows.slice(half)].map((r) => ({ rows: r, json: batchJson(r.map((x) => JSON.stringify(x))) }))
    return [...(await compress(halves[0]!)), ...(await compress(halves[1]!))]
  }
  const compressed = await Promise.all(packUsageBatches(rows, maxBytes * COMPRESSED_PACKING_FACTOR).map(compress))
  return compressed.flat()
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
          const bodies = yield* Effect.promise(() => compressUsageMessages(rows, MAX_BATCH_BYTES / MAX_ENTRIES))
          for (let i = 0; i < bodies.length; i += MAX_ENTRIES) yield* sendBodies(bodies.slice(i, i + MAX_ENTRIES))
        })
    })
  }))
