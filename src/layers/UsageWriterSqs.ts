import { SendMessageBatchCommand, SQSClient } from "@aws-sdk/client-sqs"
import { Effect, Layer } from "effect"
import { constants, zstdCompressSync } from "node:zlib"
import type { UsageRow } from "../domain/usage.ts"
import { columnarBatchOfChunk, decodeUsageLines, encodeColumnarBatch } from "../domain/usageLine.ts"
import { type EncodedChunk, UsageWriteError, UsageWriter } from "../services/UsageSink.ts"
import { messageOf } from "../domain/errorMessage.ts"

/** SQS allows 256 KiB per SendMessageBatch request (all entries together); keep a margin. */
const MAX_BATCH_BYTES = 240 * 1024
const MAX_ENTRIES = 10

const ZSTD_FAST = { params: { [constants.ZSTD_c_compressionLevel]: 1 } }

/** Rows per compressed message: ~250 B each as positional JSON, ~125 KB, ~25 KB compressed and base64-encoded. */
const ROWS_PER_MESSAGE = 500

/**
 * Message bodies for rows (see decodeUsageMessage): the columnar batch JSON (one native stringify
 * of an array per row) zstd-compressed at level 1 and base64-encoded, each at most `maxBytes`. Synchronous: the writer
 * runs on the usage thread, where a blocking call holds up no answer, and it spares the thread
 * pool hops of the async API. A chunk that compresses too large is split in half and tried
 * again, down to a single row, which goes as it is for SQS to refuse loudly.
 */
export const compressUsageMessages = (rows: ReadonlyArray<UsageRow>, maxBytes: number): ReadonlyArray<string> => {
  const compress = (chunk: ReadonlyArray<UsageRow>): ReadonlyArray<string> => {
    const body = zstdCompressSync(encodeColumnarBatch(chunk), ZSTD_FAST).toString("base64")
    if (body.length <= maxBytes || chunk.length <= 1) return [body]
    const half = Math.ceil(chunk.length / 2)
    return [...compress(chunk.slice(0, half)), ...compress(chunk.slice(half))]
  }
  const bodies: Array<string> = []
  for (let i = 0; i < rows.length; i += ROWS_PER_MESSAGE) bodies.push(...compress(rows.slice(i, i + ROWS_PER_MESSAGE)))
  return bodies
}

/**
 * Text per message for encoded chunks: ~64 KB of lines compresses to ~12–16 KB of base64 (measured
 * with varied prices, latencies and addresses), well inside a 24 KB entry, so the decoding
 * fallback below stays rare. The serving thread's chunks (256 rows, ~60 KB) fit one each.
 */
const TEXT_PER_MESSAGE = 64 * 1024

/**
 * Message bodies for rows that arrive already encoded: consecutive chunks joined into one columnar
 * batch while it stays within `TEXT_PER_MESSAGE` characters and `ROWS_PER_MESSAGE` rows, compressed
 * as they are, with no decoding into objects and no second stringify. A body that compresses too
 * large is rebuilt from its decoded rows by `compressUsageMessages`, which splits it.
 */
export const compressEncodedChunks = (chunks: ReadonlyArray<EncodedChunk>, maxBytes: number): ReadonlyArray<string> => {
  const bodies: Array<string> = []
  const finish = (group: ReadonlyArray<string>) => {
    if (group.length === 0) return
    const joined = group.join(",")
    const body = zstdCompressSync(columnarBatchOfChunk(joined), ZSTD_FAST).toString("base64")
    if (body.length <= maxBytes) bodies.push(body)
    else bodies.push(...compressUsageMessages(decodeUsageLines(joined), maxBytes))
  }
  let group: Array<string> = []
  let groupRows = 0
  let groupText = 0
  for (const c of chunks) {
    if (c.rows === 0) continue
    if (groupRows + c.rows > ROWS_PER_MESSAGE || groupText + c.chunk.length > TEXT_PER_MESSAGE) {
      finish(group)
      group = []
      groupRows = 0
      groupText = 0
    }
    group.push(c.chunk)
    groupRows += c.rows
    groupText += c.chunk.length + 1
  }
  finish(group)
  return bodies
}

/** Usage batches to the usage-log queue; `tb queued-writer` (or the Lambda entry) inserts them. */
export const usageWriterSqs = (queueUrl: string) =>
  Layer.effect(UsageWriter, Effect.gen(function*() {
    const client = yield* Effect.acquireRelease(Effect.sync(() => new SQSClient({})), (c) => Effect.sync(() => c.destroy()))
    /** One SendMessageBatch request (at most MAX_ENTRIES bodies), its failed entries retried. */
    const sendBatch = (bodies: ReadonlyArray<string>) =>
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
        catch: (cause) => new UsageWriteError({ reason: "Queue", message: messageOf(cause) })
      })
    const sendBodies = (bodies: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        for (let i = 0; i < bodies.length; i += MAX_ENTRIES) yield* sendBatch(bodies.slice(i, i + MAX_ENTRIES))
      })
    return UsageWriter.of({
      kind: "sqs",
      write: (rows) => Effect.suspend(() => sendBodies(compressUsageMessages(rows, MAX_BATCH_BYTES / MAX_ENTRIES))),
      writeEncoded: (chunks) =>
        Effect.try({
          try: () => compressEncodedChunks(chunks, MAX_BATCH_BYTES / MAX_ENTRIES),
          catch: (cause) => new UsageWriteError({ reason: "Queue", message: `encoded rows: ${messageOf(cause)}` })
        }).pipe(Effect.flatMap(sendBodies))
    })
  }))
