import { Effect, Fiber, Layer, Option, Redacted, Schema } from "effect"
import { randomFillSync } from "node:crypto"
import { Worker } from "node:worker_threads"
import { AppConfig } from "../../config/AppConfig.ts"
import { makeAnonymousRowGate } from "../../domain/anonymousRowGate.ts"
import { messageOf } from "../../domain/errorMessage.ts"
import type { ParamValues } from "../../domain/params.ts"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import { makeUsageChunkBuilder, type UsageChunk, type UsageFacts } from "../../domain/usageChunk.ts"
import { encodeUsageLogMessagesOfChunks } from "../../domain/usageQueueMessage.ts"
import { USAGE_LOG_MAX_BODY_BYTES } from "./UsageWriterSqs.ts"
import { requestTag } from "../http/httpKit.ts"
import { ServerInfo } from "../../services/ServerInfo.ts"
import { DatabaseInfo } from "../../services/Database.ts"
import { Params } from "../../services/Params.ts"
import { Metrics } from "../../services/Metrics.ts"
import { RuntimeStats } from "../../services/RuntimeStats.ts"
import { addUsageStats as addStats, UsageSink, type UsageSinkStats, ZERO_USAGE_STATS as ZERO } from "../../services/UsageSink.ts"
import { withModule, runDetachedLog } from "../Logging.ts"
import { makeUsageSpool, usageSpoolDir } from "./spool.ts"
import { FromUsageThread, type ToUsageThread } from "./threadProtocol.ts"

/** Rows per chunk handed to the usage thread (~22 KB of columns). */
const CHUNK_ROWS = 256
/** The longest a row waits on the serving thread before its chunk is handed over. */
const SHIP_EVERY_MS = 20
/** Parameters are pushed to the usage thread when they change, checked this often. */
const PARAMS_EVERY_TICKS = 50
const RESTART_AFTER_MS = 1_000
const STARTUP_WAIT_MS = 30_000
/**
 * Client addresses whose rows without a valid key are written in one second; rows of further
 * addresses are only counted. Bounds the gate's memory, and the keyless rows a flood from many
 * addresses writes (this times `anonymous_rows_per_ip_per_s` a second).
 */
const MAX_ANONYMOUS_ADDRESSES_PER_SECOND = 1_000

/** The thread's entry next to this module: .ts under the test runner, .js when built. */
const threadEntry = () => new URL(import.meta.url.endsWith(".ts") ? "../../programs/usageThread.ts" : "../../programs/usageThread.js", import.meta.url)

interface Chunk {
  readonly seq: number
  readonly chunk: UsageChunk
  sent: boolean
}

const decodeFromThread = Schema.decodeUnknownSync(FromUsageThread)

/**
 * The UsageSink of a server: `record` writes the request's facts into the current column chunk
 * (domain/usageChunk.ts: a few typed-array stores) and returns; chunks go to the usage thread
 * (src/programs/usageThread.ts), which writes them with the database or SQS writer. The serving
 * thread keeps every chunk until the usage thread acknowledges it; a usage thread that dies is
 * restarted and sent the unacknowledged chunks again. Memory here is bounded by
 * `usage_buffer_max_rows` (beyond it the oldest chunks go to the spool, which the usage thread
 * replays). At shutdown: hand over the last chunk, ask the thread to flush and stop, and spool
 * whatever it did not acknowledge. Rows of requests without a valid key (no key id; admin rows
 * excepted) pass the anonymous-row gate first (spec "Storage"): past `anonymous_rows_per_ip_per_s`
 * per client address per second they are only counted (`anonymous_rows_dropped`).
 */
export const UsageSinkThreaded = Layer.effect(UsageSink, Effect.gen(function*() {
  const config = yield* AppConfig
  const params = yield* Params
  const database = yield* DatabaseInfo
  const meta = yield* ServerInfo
  const counters = yield* RuntimeStats
  const metrics = yield* Metrics
  const spool = makeUsageSpool(usageSpoolDir(config.dataDir))
  // The usage thread gets half of the shutdown budget for its final flush; then it is terminated.
  const waitForThreadMs = Math.max(2_000, Math.floor(config.shutdownTimeoutMs / 2))
  // The thread reads its configuration from its environment: make where rows go this process's
  // choice. An embedded database is found through DATA_DIR (port and password files), not a URL.
  const databaseUrl = database.kind === "embedded" ? undefined : Option.getOrUndefined(Option.map(config.databaseUrl, Redacted.value))
  const threadEnv: NodeJS.ProcessEnv = {
    ...process.env,
    DATA_DIR: config.dataDir,
    ...(databaseUrl === undefined ? {} : { DATABASE_URL: databaseUrl }),
    ...Option.match(config.sqsQueueUrl, { onNone: () => ({}), onSome: (url) => ({ SQS_QUEUE_URL: url }) })
  }
  if (Option.isNone(config.sqsQueueUrl)) delete threadEnv["SQS_QUEUE_URL"]

  const builder = makeUsageChunkBuilder({ capacity: CHUNK_ROWS, node: meta.node, region: meta.region, requestTag, fillRandom: randomFillSync })
  /** Chunks not yet acknowledged, oldest first (a Map keeps insertion order). */
  const outbox = new Map<number, Chunk>()
  let outboxRows = 0
  let seq = 0
  /** The running thread, once it has said it is ready. */
  let thread: Worker | undefined
  let threadStats: UsageSinkStats = ZERO
  /** Counts of the threads that ran before the current one. */
  let earlier: UsageSinkStats = ZERO
  let spooledHere = 0
  let stopping = false
  let paramsSent: ParamValues | undefined
  let onReady: (() => void) | undefined

  const post = (worker: Worker, message: ToUsageThread) => worker.postMessage(message)

  const send = (c: Chunk) => {
    if (thread === undefined) return
    post(thread, { type: "rows", seq: c.seq, chunk: c.chunk })
    c.sent = true
  }

  const takeOff = (c: Chunk) => {
    outbox.delete(c.seq)
    outboxRows -= c.chunk.rows
  }

  /** Move the oldest chunks to the spool until at most `keep` rows wait here. */
  const spillOldest = (keep: number) => {
    for (const c of outbox.values()) {
      if (outboxRows <= keep) return
      try {
        spool.put(encodeUsageLogMessagesOfChunks([c.chunk], USAGE_LOG_MAX_BODY_BYTES))
      } catch (e) {
        runDetachedLog(Effect.logError("usage rows could not be spooled; kept in memory", { rows: c.chunk.rows, error: messageOf(e) }).pipe(withModule("usage")))
        return
      }
      takeOff(c)
      spooledHere += c.chunk.rows
    }
  }

  const ship = () => {
    const chunk = builder.take()
    if (chunk === undefined) return
    const c: Chunk = { seq: seq++, chunk, sent: false }
    outbox.set(c.seq, c)
    outboxRows += c.chunk.rows
    send(c)
    const maxRows = params.int("usage_buffer_max_rows")
    if (outboxRows > maxRows && Number.isFinite(maxRows)) spillOldest(maxRows >>> 1)
  }

  const anonymousRows = makeAnonymousRowGate({ maxAddresses: MAX_ANONYMOUS_ADDRESSES_PER_SECOND })
  /** Metrics come second to the row: a failure there is logged once and never reaches the request. */
  let metricsFailed = false
  const countInMetrics = (facts: UsageFacts) => {
    try {
      metrics.answered(facts)
    } catch (e) {
      if (metricsFailed) return
      metricsFailed = true
      runDetachedLog(Effect.logError("recording a request in the metrics failed (logged once)", messageOf(e)).pipe(withModule("metrics")))
    }
  }
  const record = (facts: UsageFacts) => {
    countInMetrics(facts)
    if (
      // Only a served admin call (its token checked) is exempt: a refused one is as anonymous as any.
      facts.apiKeyId === undefined && !(facts.service === "ADMIN" && facts.code === "OK") &&
      !anonymousRows.admit(facts.clientIp, facts.createdAt, params.int("anonymous_rows_per_ip_per_s"))
    ) {
      counters.values[COUNTER.anonymous_rows_dropped]!++
      return
    }
    counters.values[COUNTER.usage_rows_recorded]!++
    if (builder.record(facts) >= CHUNK_ROWS) ship()
  }

  const pushParams = () => {
    const current = params.current()
    if (thread === undefined || current === paramsSent) return
    post(thread, { type: "params", values: current })
    paramsSent = current
  }

  const onMessage = (worker: Worker, raw: unknown) => {
    const message = decodeFromThread(raw)
    switch (message.type) {
      case "ready":
        thread = worker
        paramsSent = undefined
        pushParams()
        for (const c of outbox.values()) if (!c.sent) send(c)
        // Shutdown began while it was starting: it has every chunk now; flush and stop.
        if (stopping) post(worker, { type: "stop" })
        onReady?.()
        onReady = undefined
        return
      case "ack": {
        const c = outbox.get(message.seq)
        if (c !== undefined) takeOff(c)
        return
      }
      case "stats":
      case "stopped":
        threadStats = message.stats
        return
    }
  }

  /** One usage thread, from start to exit; interrupting it terminates the thread. */
  const runThread = Effect.callback<number>((resume) => {
    const worker = new Worker(threadEntry(), { workerData: { params: params.current() }, env: threadEnv })
    worker.on("message", (raw: unknown) => {
      try {
        onMessage(worker, raw)
      } catch (e) {
        runDetachedLog(Effect.logError("unexpected message from the usage thread", messageOf(e)).pipe(withModule("usage")))
      }
    })
    worker.on("error", (e) => runDetachedLog(Effect.logError("usage thread failed", messageOf(e)).pipe(withModule("usage"))))
    worker.once("exit", (code) => {
      if (thread === worker) thread = undefined
      // Whatever it did not acknowledge goes to the next thread (or the spool at shutdown).
      for (const c of outbox.values()) c.sent = false
      // A thread that is gone buffers nothing.
      earlier = addStats(earlier, { ...threadStats, buffered: 0 })
      threadStats = ZERO
      resume(Effect.succeed(code))
    })
    return Effect.promise(() => worker.terminate())
  })

  const supervise = Effect.gen(function*() {
    while (!stopping) {
      const code = yield* runThread
      if (stopping) return
      yield* Effect.logError("usage thread exited; restarting it", { code, unacknowledged_rows: outboxRows })
      yield* Effect.sleep(RESTART_AFTER_MS)
    }
  })

  /** Shutdown: last chunk, stop and flush the thread, spool what it did not acknowledge. */
  const flush = Effect.gen(function*() {
    stopping = true
    ship()
    if (thread !== undefined) post(thread, { type: "stop" })
    const finished = yield* Fiber.join(supervisor).pipe(Effect.timeoutOption(waitForThreadMs))
    if (Option.isNone(finished)) {
      yield* Effect.logError("usage thread did not stop in time; terminated", { waited_ms: waitForThreadMs })
      yield* Fiber.interrupt(supervisor)
    }
    ship()
    if (outboxRows === 0) return
    const rows = outboxRows
    spillOldest(0)
    if (outboxRows === 0) yield* Effect.logWarning("usage rows the usage thread did not take are in the spool", { rows })
    else yield* Effect.logError("usage rows could not be written nor spooled", { rows: outboxRows })
  }).pipe(Effect.uninterruptible)

  const firstReady = Effect.callback<void>((resume) => {
    onReady = () => resume(Effect.void)
  })
  const supervisor = yield* Effect.forkDetach(supervise)
  yield* Effect.addFinalizer(() => flush)
  // Serve only once rows flow; a thread that cannot start in time leaves rows held, then spooled.
  const started = yield* firstReady.pipe(Effect.timeoutOption(STARTUP_WAIT_MS))
  if (Option.isNone(started)) yield* Effect.logWarning("usage thread not ready yet; rows are held until it is", { waited_ms: STARTUP_WAIT_MS })
  let ticks = 0
  yield* Effect.acquireRelease(
    Effect.sync(() =>
      setInterval(() => {
        ship()
        if (++ticks % PARAMS_EVERY_TICKS === 0) pushParams()
      }, SHIP_EVERY_MS)
    ),
    (timer) => Effect.sync(() => clearInterval(timer))
  )

  return UsageSink.of({
    record,
    stats: () => addStats(addStats(earlier, { ...ZERO, buffered: builder.rows() + outboxRows, spooled: spooledHere }), threadStats)
  })
}).pipe(withModule("usage")))
