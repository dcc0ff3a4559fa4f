/**
 * The usage thread: a worker_threads entry that runs the usage pipeline
 * (src/layers/usage/pipeline.ts) off the serving thread, so that a price answer never pays for
 * encoding or sending usage rows. Started, fed and stopped by UsageSinkThreaded.
 */
import { Effect, Layer, Option, Schedule, Schema } from "effect"
import { parentPort, workerData } from "node:worker_threads"
import { AppConfig } from "../config/AppConfig.ts"
import { messageOf } from "../domain/errorMessage.ts"
import { DEFAULT_PARAMS, mergeParams, paramRows, type ParamName, type ParamValues } from "../domain/params.ts"
import { checkChunk } from "../domain/usageChunk.ts"
import { DatabaseLive } from "../layers/DatabaseLive.ts"
import { runDetachedLog, withModule } from "../layers/Logging.ts"
import { ObservabilityLive } from "../layers/ObservabilityLive.ts"
import { makeUsagePipeline, type UsagePipeline } from "../layers/usage/pipeline.ts"
import { makeUsageSpool, usageSpoolDir } from "../layers/usage/spool.ts"
import { type FromUsageThread, ToUsageThread, UsageThreadData } from "../layers/usage/threadProtocol.ts"
import { UsageWriterDatabase } from "../layers/usage/UsageWriterDatabase.ts"
import { usageWriterSqs } from "../layers/usage/UsageWriterSqs.ts"
import { Params, ParamsError } from "../services/Params.ts"
import { UsageWriter } from "../services/UsageSink.ts"
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

const ThreadLive = Layer.mergeAll(WriterLive, ParamsFromServingThread).pipe(
  Layer.provideMerge(BaseLive),
  Layer.provideMerge(ThreadObservabilityLive)
)

const STATS_EVERY = "250 millis"

const reportLost = (seq: number, e: unknown) =>
  runDetachedLog(Effect.logError("usage chunk does not hold together; its rows are lost", { seq, error: messageOf(e) }).pipe(withModule("usage-thread")))

/** Feed the serving thread's chunks into the pipeline until it asks to stop. */
const serveChunks = (pipeline: UsagePipeline) =>
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
            // A bug on the serving thread: said loudly, and not sent again for ever.
            reportLost(message.seq, e)
            post({ type: "ack", seq: message.seq })
            return
          }
          return pipeline.add(message.seq, message.chunk)
        }
        case "params":
          values = mergeParams(values, message.values)
          return
        case "stop":
          return resume(pipeline.stop)
      }
    })
    post({ type: "ready" })
  })

const main = Effect.gen(function*() {
  const config = yield* AppConfig
  const pipeline = yield* makeUsagePipeline({
    writer: yield* UsageWriter,
    spool: makeUsageSpool(usageSpoolDir(config.dataDir)),
    params: yield* Params,
    ack: (seq) => post({ type: "ack", seq }),
    // The serving thread waits half its shutdown budget for this thread; finish well inside it.
    stopWithinMs: Math.max(1_000, Math.floor(config.shutdownTimeoutMs / 3))
  })
  yield* Effect.sync(() => post({ type: "stats", stats: pipeline.stats() })).pipe(Effect.repeat(Schedule.spaced(STATS_EVERY)), Effect.forkScoped)
  yield* serveChunks(pipeline)
  return pipeline.stats
})

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
