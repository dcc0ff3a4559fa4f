import { SendMessageBatchCommand, SQSClient } from "@aws-sdk/client-sqs"
import { Effect, Layer, Option } from "effect"
import { AppConfig } from "../config/AppConfig.ts"
import { constants, zstdCompressSync } from "node:zlib"
import type { UsageRow } from "../domain/usage.ts"
import { encodeUsageChunks, rowsOfChunk, type UsageChunk } from "../domain/usageChunk.ts"
import { encodeColumnarBatch } from "../domain/usageLine.ts"
import { UsageWriteError, UsageWriter } from "../services/UsageSink.ts"
import { messageOf } from "../domain/errorMessage.ts"
import { malformedSetting, settingUrl, type StartupError } from "../services/StartupError.ts"

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

/** Rows per message of chunk bytes: two serving-thread chunks, ~45 KB of columns, ~15 KB once compressed and base64-encoded. */
const CHUNK_ROWS_PER_MESSAGE = 512

/**
 * Message bodies for the serving thread's chunks (see decodeUsageMessage): consecutive chunks up
 * to `CHUNK_ROWS_PER_MESSAGE` rows as bytes, zstd level 1, base64. A body too large is split
 * between its chunks, and a single chunk too large goes as rows through `compressUsageMessages`.
 */
export const compressUsageChunks = (chunks: ReadonlyArray<UsageChunk>, maxBytes: number): ReadonlyArray<string> => {
  const compress = (group: ReadonlyArray<UsageChunk>): ReadonlyArray<string> => {
    const body = zstdCompressSync(encodeUsageChunks(group), ZSTD_FAST).toString("base64")
    if (body.length <= maxBytes) return [body]
    if (group.length === 1) return compressUsageMessages(rowsOfChunk(group[0]!), maxBytes)
    const half = Math.ceil(group.length / 2)
    return [...compress(group.slice(0, half)), ...compress(group.slice(half))]
  }
  const bodies: Array<string> = []
  let group: Array<UsageChunk> = []
  let rows = 0
  for (const c of chunks) {
    if (c.rows === 0) continue
    if (group.length > 0 && rows + c.rows > CHUNK_ROWS_PER_MESSAGE) {
      bodies.push(...compress(group))
      group = []
      rows = 0
    }
    group.push(c)
    rows += c.rows
  }
  if (group.length > 0) bodies.push(...compress(group))
  return bodies
}

/**
 * A queue URL SQS can take: http(s), a host, and the queue's path
 * (https://sqs.<region>.amazonaws.com/<account>/<queue>). The SDK would take anything and fail
 * each send; start-up says so instead.
 */
export const checkSqsQueueUrl = (queueUrl: string): Effect.Effect<void, StartupError> =>
  settingUrl("SQS_QUEUE_URL", queueUrl, ["https:", "http:"], SQS_URL_FORM).pipe(
    Effect.flatMap((parsed) =>
      parsed.hostname === "" || parsed.pathname.replace(/\//g, "") === ""
        ? Effect.fail(malformedSetting("SQS_QUEUE_URL", `the URL names no queue (expected ${SQS_URL_FORM})`))
        : Effect.void)
  )

const SQS_URL_FORM = "https://sqs.<region>.amazonaws.com/<account>/<queue>"

/**
 * Start-up's check of SQS_QUEUE_URL, in the serving process: the writer itself runs on the usage
 * thread, whose failure to start would only be retried.
 */
export const SqsQueueUrlCheck = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* AppConfig
  if (Option.isSome(config.sqsQueueUrl)) yield* checkSqsQueueUrl(config.sqsQueueUrl.value)
}))

/** Usage batches to the usage-log queue; `tb queued-writer` (or the Lambda entry) inserts them. */
export const usageWriterSqs = (queueUrl: string) =>
  Layer.effect(UsageWriter, Effect.gen(function*() {
    yield* checkSqsQueueUrl(queueUrl)
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
      writeChunks: (chunks) =>
        Effect.try({
          try: () => compressUsageChunks(chunks, MAX_BATCH_BYTES / MAX_ENTRIES),
          catch: (cause) => new UsageWriteError({ reason: "Queue", message: `usage chunks: ${messageOf(cause)}` })
        }).pipe(Effect.flatMap(sendBodies))
    })
  }))
