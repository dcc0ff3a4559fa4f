/**
 * The usage thread: a worker_threads entry that runs the usage sink (batching, the database or
 * SQS writer, the spool) off the serving thread, so that a price answer never pays for encoding,
 * compressing or sending usage rows. Started and stopped by UsageSinkThreaded.
 */
import { Effect, Layer, Option, Schedule, Schema } from "effect"
import { parentPort, workerData } from "node:worker_threads"
import { AppConfig } from "../config/AppConfig.ts"
import { messageOf } from "../domain/errorMessage.ts"
import { DEFAULT_PARAMS, mergeParams, paramRows, type ParamName, type ParamValues } from "../domain/params.ts"
import { decodeUsageLines } from "../domain/usageLine.ts"
import { DatabaseLive } from "../layers/DatabaseLive.ts"
import { withModule } from "../layers/Logging.ts"
import { UsageSinkLive } from "../layers/UsageSinkLive.ts"
import { type FromUsageThread, ToUsageThread, UsageThreadData } from "../layers/usageThreadProtocol.ts"
import { UsageWriterDatabase } from "../layers/UsageWriterDatabase.ts"
import { usageWriterSqs } from "../layers/UsageWriterSqs.ts"
import { Params, ParamsError } from "../services/Params.ts"
import { addUsageStats, UsageSink, UsageWriter } from "../services/UsageSink.ts"
import { type ChunkForwarder, makeChunkForwarder } from "../layers/usageChunkForwarder.ts"
import { BaseLive } from "./layers.ts"

const port = parentPort
if (port === null) throw new Error("usageThread runs as a worker thread (see UsageSinkThreaded)")
const post = (message: FromUsageThread) => port.postMessage(message)
const decodeRequest = Schema.decodeUnknownSync(ToUsageThread)

let values: ParamValues = mergeParams(DEFAULT_PARAMS, Schema.decodeUnknownSync(UsageThreadData)(workerData).params)

const readOnly = Effect.fail(new ParamsError({ reason: "Invalid", message: "parameters are set on the serving thread; the usage thread only reads them" }))

/** The serving thread's parameters, pushed here whenever they change. Read-only. */
const ParamsFromServingThread = Layer.succeed(Params, Params.of({
  current: () => values,
  int: (name: ParamName) => Number(values[name]),
  bool: (name: ParamName) => values[name] === "true",
  list: Effect.sync(() => paramRows(values)),
  profiles: readOnly,
  set: () => readOnly,
  applyProfile: () => readOnly,
  refresh: Effect.void
}))

/** SQS when SQS_QUEUE_URL is set, else the database (DATABASE_URL, set by the serving thread to its own). */
const WriterLive = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  return Option.match(config.sqsQueueUrl, {
    onNone: () => UsageWriterDatabase.pipe(Layer.provide(DatabaseLive)),
    onSome: usageWriterSqs
  })
}))

const ThreadLive = UsageSinkLive.pipe(
  Layer.provideMerge(Layer.mergeAll(WriterLive, ParamsFromServingThread)),
  Layer.provideMerge(BaseLive)
)

const STATS_EVERY = "250 millis"

/**
 * Chunks straight to a writer that takes them encoded (SQS and the database both do), acknowledged
 * once written, with the sink behind it for failures; undefined for a writer that takes rows only.
 */
const forwarderFor = (writer: UsageWriter["Service"], sink: UsageSink["Service"], params: Params["Service"]): ChunkForwarder | undefined => {
  const writeEncoded = writer.writeEncoded
  if (writeEncoded === undefined) return undefined
  return makeChunkForwarder({
    writeEncoded: (chunks) => Effect.runPromise(writeEncoded(chunks)),
    fallback: (c) => recordChunk(sink, c.chunk),
    ack: (seq) => post({ type: "ack", seq }),
    lost: (seq, e) => reportUndecodable(seq, e),
    batchRows: () => Math.max(1, params.int("usage_batch_size")),
    flushMs: () => Math.max(10, params.int("usage_flush_ms")),
    maxRows: () => Math.max(1, params.int("usage_buffer_max_rows"))
  })
}

/** Every row of a chunk into the sink. Throws if the chunk does not decode (nothing is recorded then). */
const recordChunk = (sink: UsageSink["Service"], chunk: string) => {
  for (const row of decodeUsageLines(chunk)) sink.record(row)
}

/** A chunk that does not decode is a bug on the serving thread: say so loudly. */
const reportUndecodable = (seq: number, e: unknown) =>
  Effect.runFork(Effect.logError("usage chunk does not decode; its rows are lost", { seq, error: messageOf(e) }).pipe(withModule("usage-thread")))

/** Feed the serving thread's chunks into the forwarder or the sink until it asks to stop. */
const serveChunks = (sink: UsageSink["Service"], forwarder: ChunkForwarder | undefined) =>
  Effect.callback<void>((resume) => {
    port.on("message", (raw: unknown) => {
      let message: ToUsageThread
      try {
        message = decodeRequest(raw)
      } catch (e) {
        Effect.runFork(Effect.logError("unexpected message from the serving thread", messageOf(e)).pipe(withModule("usage-thread")))
        return
      }
      switch (message.type) {
        case "rows": {
          if (forwarder !== undefined) return forwarder.add(message.seq, { chunk: message.chunk, rows: message.rows })
          try {
            recordChunk(sink, message.chunk)
          } catch (e) {
            reportUndecodable(message.seq, e)
          }
          post({ type: "ack", seq: message.seq })
          return
        }
        case "params":
          values = mergeParams(values, message.values)
          return
        case "stop":
          // What waits in the forwarder is written (or handed to the sink) before the sink's own final flush.
          return resume(Effect.promise(() => forwarder?.flush() ?? Promise.resolve()))
      }
    })
    post({ type: "ready" })
  })

const main = Effect.gen(function*() {
  const sink = yield* UsageSink
  const forwarder = forwarderFor(yield* UsageWriter, sink, yield* Params)
  const stats = () => {
    const own = sink.stats()
    if (forwarder === undefined) return own
    const forwarded = forwarder.stats()
    return { ...addUsageStats(own, forwarded), lastBatchMs: forwarded.lastBatchMs || own.lastBatchMs }
  }
  yield* Effect.sync(() => post({ type: "stats", stats: stats() })).pipe(Effect.repeat(Schedule.spaced(STATS_EVERY)), Effect.forkScoped)
  yield* serveChunks(sink, forwarder)
  return stats
})

// The sink flushes when ThreadLive's scope closes; only then are the final counts known.
Effect.runPromise(main.pipe(Effect.scoped, Effect.provide(ThreadLive), withModule("usage-thread"))).then(
  (stats) => {
    post({ type: "stopped", stats: stats() })
    port.close()
  },
  (cause: unknown) => {
    console.error(`usage thread failed: ${messageOf(cause)}`)
    process.exit(1)
  }
)
