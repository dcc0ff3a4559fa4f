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
import type { UsageRow } from "../domain/usage.ts"
import { checkChunk, rowsOfChunk, type UsageChunk } from "../domain/usageChunk.ts"
import { DatabaseLive } from "../layers/DatabaseLive.ts"
import { runDetachedLog, withModule } from "../layers/Logging.ts"
import { ObservabilityLive } from "../layers/ObservabilityLive.ts"
import { UsageBatcherLive } from "../layers/UsageBatcherLive.ts"
import { type FromUsageThread, ToUsageThread, UsageThreadData } from "../layers/usageThreadProtocol.ts"
import { UsageWriterDatabase } from "../layers/UsageWriterDatabase.ts"
import { usageWriterSqs } from "../layers/UsageWriterSqs.ts"
import { Params, ParamsError } from "../services/Params.ts"
import { addUsageStats, UsageBatcher, UsageWriter } from "../services/UsageSink.ts"
import { type ChunkForwarder, makeChunkForwarder } from "../layers/usageChunkForwarder.ts"
import { makeSpool, usageSpoolDir } from "../layers/usageSpool.ts"
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

/** This thread's spans go to the same OTLP endpoint as the serving thread's (nowhere when none is configured). */
const ThreadObservabilityLive = ObservabilityLive.pipe(Layer.catch(() => Layer.empty))

const ThreadLive = UsageBatcherLive.pipe(
  Layer.provideMerge(Layer.mergeAll(WriterLive, ParamsFromServingThread)),
  Layer.provideMerge(BaseLive),
  Layer.provideMerge(ThreadObservabilityLive)
)

const STATS_EVERY = "250 millis"

/**
 * Where the rows of a chunk the writer could not take go before the chunk is acknowledged: the
 * spool on disk, which the batcher replays once the writer works again. An acknowledged chunk is
 * gone from the serving thread, so rows only held in this thread's memory would die with it.
 * Only if the spool cannot be written are they held by the batcher (memory), and that is logged.
 */
const makeFallback = (batcher: UsageBatcher["Service"], spool: ReturnType<typeof makeSpool>) => {
  let spooled = 0
  let spoolFailing = false
  const hold = (chunk: UsageChunk) => {
    const rows = rowsOfChunk(chunk)
    try {
      spool.put(rows)
      spooled += rows.length
      if (spoolFailing) {
        spoolFailing = false
        runDetachedLog(Effect.logInfo("usage spool writable again").pipe(withModule("usage-thread")))
      }
    } catch (e) {
      addRows(batcher, rows)
      if (!spoolFailing) {
        spoolFailing = true
        runDetachedLog(Effect.logWarning("usage spool not writable; rows the writer refused are held in memory", { error: messageOf(e) }).pipe(withModule("usage-thread")))
      }
    }
  }
  return { hold, spooled: () => spooled }
}

/**
 * Chunks straight to the writer, acknowledged once written (or, when the write fails, once in
 * the spool). Each write runs with this thread's services, so its span reaches the tracer.
 */
const forwarderFor = (
  writer: UsageWriter["Service"],
  fallback: (chunk: UsageChunk) => void,
  params: Params["Service"],
  run: <A, E>(effect: Effect.Effect<A, E>) => Promise<A>
): ChunkForwarder =>
  makeChunkForwarder({
    write: (chunks) =>
      run(writer.writeChunks(chunks).pipe(Effect.withSpan("UsageWriter.writeChunks", {
        attributes: { rows: chunks.reduce((n, c) => n + c.rows, 0), chunks: chunks.length, writer: writer.kind }
      }))),
    fallback,
    ack: (seq) => post({ type: "ack", seq }),
    lost: (seq, e) => reportLost(seq, e),
    batchRows: () => Math.max(1, params.int("usage_batch_size")),
    flushMs: () => Math.max(10, params.int("usage_flush_ms")),
    maxRows: () => Math.max(1, params.int("usage_buffer_max_rows"))
  })

const addRows = (batcher: UsageBatcher["Service"], rows: ReadonlyArray<UsageRow>) => {
  for (const row of rows) batcher.add(row)
}

/** A chunk whose rows cannot be made is a bug on the serving thread: say so loudly. */
const reportLost = (seq: number, e: unknown) =>
  runDetachedLog(Effect.logError("usage chunk does not hold together; its rows are lost", { seq, error: messageOf(e) }).pipe(withModule("usage-thread")))

/** Feed the serving thread's chunks into the forwarder until it asks to stop. */
const serveChunks = (forwarder: ChunkForwarder) =>
  Effect.callback<void>((resume) => {
    port.on("message", (raw: unknown) => {
      let message: ToUsageThread
      try {
        message = decodeRequest(raw)
      } catch (e) {
        runDetachedLog(Effect.logError("unexpected message from the serving thread", messageOf(e)).pipe(withModule("usage-thread")))
        return
      }
      switch (message.type) {
        case "rows": {
          try {
            checkChunk(message.chunk)
          } catch (e) {
            reportLost(message.seq, e)
            post({ type: "ack", seq: message.seq })
            return
          }
          return forwarder.add(message.seq, message.chunk)
        }
        case "params":
          values = mergeParams(values, message.values)
          return
        case "stop":
          // What waits in the forwarder is written (or handed to the batcher) before the batcher's own final flush.
          return resume(Effect.promise(() => forwarder.flush()))
      }
    })
    post({ type: "ready" })
  })

const main = Effect.gen(function*() {
  const batcher = yield* UsageBatcher
  const config = yield* AppConfig
  // The batcher's own spool directory: its replay writes these rows too.
  const fallback = makeFallback(batcher, makeSpool(usageSpoolDir(config.dataDir)))
  const forwarder = forwarderFor(yield* UsageWriter, fallback.hold, yield* Params, Effect.runPromiseWith(yield* Effect.context<never>()))
  const stats = () => {
    const own = batcher.stats()
    const forwarded = forwarder.stats()
    const both = addUsageStats(own, forwarded)
    return { ...both, spooled: both.spooled + fallback.spooled(), lastBatchMs: forwarded.lastBatchMs || own.lastBatchMs }
  }
  yield* Effect.sync(() => post({ type: "stats", stats: stats() })).pipe(Effect.repeat(Schedule.spaced(STATS_EVERY)), Effect.forkScoped)
  yield* serveChunks(forwarder)
  return stats
})

// The batcher flushes when ThreadLive's scope closes; only then are the final counts known.
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
