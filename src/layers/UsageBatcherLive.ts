import { Cause, Data, Effect, Fiber, Layer, Option } from "effect"
import type { UsageRow } from "../domain/usage.ts"
import { AppConfig } from "../config/AppConfig.ts"
import { Params } from "../services/Params.ts"
import { UsageBatcher, UsageWriteError, UsageWriter } from "../services/UsageSink.ts"
import { withModule } from "./Logging.ts"
import { messageOf } from "../domain/errorMessage.ts"
import { decodeSpoolBatch, makeSpool, usageSpoolDir } from "./usageSpool.ts"


/** The loop replays the spool at most once per this many passes (each pass is ~usage_flush_ms). */
const REPLAY_EVERY_PASSES = 20
/** Pause after an unexpected loop failure, so a persistent fault does not spin. */
const LOOP_RETRY_MS = 1_000
const MAX_BACKOFF_MS = 5_000

class SpoolError extends Data.TaggedError("SpoolError")<{
  readonly reason: "Io" | "Corrupt"
  readonly file: string
  readonly message: string
}> {}


/** A param read that cannot stall or spin the loop even if the value is not a positive number. */
const positiveInt = (n: number, fallback: number) => Number.isFinite(n) && n >= 1 ? Math.floor(n) : fallback

const spoolIo = <A>(file: string, f: () => A) =>
  Effect.try({ try: f, catch: (e) => new SpoolError({ reason: "Io", file, message: messageOf(e) }) })

/**
 * In-memory buffer → batches (`usage_batch_size` rows or every `usage_flush_ms`) → UsageWriter.
 * Memory is bounded by `usage_buffer_max_rows`: beyond it the loop spills the oldest rows to
 * DATA_DIR/spool, replayed once the writer succeeds again. A failing writer or disk delays rows;
 * it never drops them. `add` only pushes and compares numbers: all I/O is on the loop fiber.
 */
export const UsageBatcherLive = Layer.effect(UsageBatcher, Effect.gen(function*() {
  const writer = yield* UsageWriter
  const params = yield* Params
  const config = yield* AppConfig
  const spool = makeSpool(usageSpoolDir(config.dataDir))
  // Long enough for one more try at the writer, short enough to spool before the process watchdog.
  const finalDrainMs = Math.max(1_000, Math.floor(config.shutdownTimeoutMs / 3))
  let buffer: Array<UsageRow> = []
  /** Batches taken from the buffer and handed to the writer, not yet acknowledged. */
  const inFlight = new Set<ReadonlyArray<UsageRow>>()
  let wake: (() => void) | undefined
  let written = 0
  let batches = 0
  let failures = 0
  let spooled = 0
  let replayed = 0
  let lastBatchMs = 0
  let consecutiveFailures = 0
  let spillFailures = 0
  let spillFailing = false
  let passesSinceReplay = Infinity // the first pass replays what an earlier run left
  const quarantineFailed = new Set<string>()

  // Param values cached per loop pass, so `add` never parses strings.
  let batchSize = 1
  let maxRows = 1
  let flushMs = 250
  let wakeAt = 1
  const readLimits = () => {
    batchSize = positiveInt(params.int("usage_batch_size"), 1_000)
    maxRows = positiveInt(params.int("usage_buffer_max_rows"), 200_000)
    flushMs = positiveInt(params.int("usage_flush_ms"), 250)
    // A failing writer is retried on its backoff timer; the loop is woken early only to spill.
    wakeAt = consecutiveFailures === 0 ? Math.min(batchSize, maxRows) : spillFailing ? Infinity : maxRows
  }
  readLimits()

  const add = (row: UsageRow) => {
    buffer.push(row)
    if (buffer.length >= wakeAt && wake !== undefined) wake()
  }

  /**
   * Move the oldest rows to the spool until at most `keep` remain in memory. One synchronous step,
   * so no other fiber ever sees rows that are in neither place; on a disk error the rows not yet
   * spooled stay in the buffer.
   */
  const spillOldest = (keep: number) =>
    Effect.try({
      try: () => {
        while (buffer.length > keep) {
          const chunk = buffer.slice(0, Math.min(batchSize, buffer.length - keep))
          spool.put(chunk)
          buffer.splice(0, chunk.length)
          spooled += chunk.length
        }
      },
      catch: (e) => new SpoolError({ reason: "Io", file: spool.dir, message: messageOf(e) })
    }).pipe(
      Effect.tap(() => {
        if (!spillFailing) return Effect.void
        spillFailing = false
        return Effect.logInfo("usage spool writable again")
      }),
      Effect.catch((e) => {
        spillFailures++
        const first = !spillFailing
        spillFailing = true
        return first
          ? Effect.logWarning("usage spool not writable; rows kept in memory", { error: e.message, buffered: buffer.length, spillFailures })
          : Effect.void
      })
    )

  const spillExcess = Effect.suspend(() => buffer.length >= maxRows ? spillOldest(maxRows >>> 1) : Effect.void)

  /** One writer call. A writer defect (e.g. a rejected promise) counts as a failed write. */
  const writeBatch = (rows: ReadonlyArray<UsageRow>) =>
    Effect.gen(function*() {
      const started = Date.now()
      yield* writer.write(rows)
      lastBatchMs = Date.now() - started
      written += rows.length
      batches++
      consecutiveFailures = 0
    }).pipe(
      Effect.catchDefect((defect) =>
        Effect.fail(new UsageWriteError({ reason: writer.kind === "sqs" ? "Queue" : "Database", message: `writer defect: ${messageOf(defect)}` }))
      ),
      Effect.withSpan("UsageBatcher.writeBatch", { attributes: { rows: rows.length, writer: writer.kind } })
    )

  /**
   * Write everything buffered now. A batch that is not acknowledged (failure, defect or
   * interruption) goes back to the front of the buffer, unless the shutdown already spooled it.
   */
  const drainWhile = (keepGoing: () => boolean) => Effect.gen(function*() {
    while (buffer.length > 0 && keepGoing()) {
      // A slow writer must not let memory grow past the bound.
      yield* spillExcess
      const rows = buffer.splice(0, batchSize)
      if (rows.length === 0) break
      inFlight.add(rows)
      const result = yield* writeBatch(rows).pipe(
        Effect.onExit((exit) =>
          Effect.sync(() => {
            if (inFlight.delete(rows) && exit._tag === "Failure") buffer = rows.concat(buffer)
          })
        ),
        Effect.result
      )
      if (result._tag === "Failure") {
        failures++
        consecutiveFailures++
        if (consecutiveFailures === 1) yield* Effect.logWarning("usage writer failing; rows held", result.failure.message)
        return false
      }
    }
    return true
  })

  /** Everything buffered now (the final drain). */
  const drainOnce = drainWhile(() => true)
  /** Set at shutdown: the loop finishes the batch it is writing and stops. */
  let stopping = false

  /**
   * Write spooled batches, oldest first. Returns false when it stopped early so that live rows
   * (a full batch waiting) go first; the next pass continues.
   */
  const replaySpool = Effect.gen(function*() {
    const files = yield* spoolIo(spool.dir, spool.files)
    for (const file of files) {
      if (quarantineFailed.has(file)) continue
      if (buffer.length >= batchSize) return false
      const text = yield* spoolIo(file, () => spool.readText(file))
      const decoded = yield* Effect.try({
        try: () => decodeSpoolBatch(text).rows,
        catch: (e) => new SpoolError({ reason: "Corrupt", file, message: messageOf(e) })
      }).pipe(Effect.result)
      if (decoded._tag === "Failure") {
        yield* spoolIo(file, () => spool.quarantine(file)).pipe(
          Effect.andThen(Effect.logError("usage spool file does not decode; renamed to .bad", { file, error: decoded.failure.message })),
          // Could not even rename it: skip it for this run rather than block every file behind it.
          Effect.catch((e) =>
            Effect.sync(() => quarantineFailed.add(file)).pipe(
              Effect.andThen(Effect.logError("usage spool file does not decode and cannot be renamed; skipped", { file, error: e.message }))
            )
          )
        )
        continue
      }
      const rows = decoded.success
      // A file may be larger than a batch (written under other params): one batch at a time.
      for (let i = 0; i < rows.length; i += batchSize) yield* writeBatch(rows.slice(i, i + batchSize))
      // Written but not removed: the next replay writes it again, which inserts nothing new.
      yield* spoolIo(file, () => spool.remove(file))
      replayed += rows.length
    }
    return true
  }).pipe(
    Effect.catch((e) => Effect.logWarning("usage spool replay paused", { error: e.message }).pipe(Effect.as(true)))
  )

  const waitForWork = Effect.callback<void>((resume) => {
    // Rows that arrived while no one was waiting (before the loop started, or during a write)
    // found no `wake` to call: start on them now rather than at the timer.
    if (buffer.length >= wakeAt) return resume(Effect.void)
    const backoff = consecutiveFailures === 0 ? 0 : Math.min(MAX_BACKOFF_MS, 100 * 2 ** Math.min(consecutiveFailures, 6))
    const timer = setTimeout(() => {
      wake = undefined
      resume(Effect.void)
    }, flushMs + backoff)
    wake = () => {
      wake = undefined
      clearTimeout(timer)
      resume(Effect.void)
    }
    return Effect.sync(() => {
      clearTimeout(timer)
      wake = undefined
    })
  })

  const pass = Effect.gen(function*() {
    readLimits()
    yield* spillExcess
    // At shutdown the loop stops between batches: a batch it has sent is never sent again.
    const drained = yield* drainWhile(() => !stopping)
    passesSinceReplay++
    if (drained && !stopping && passesSinceReplay > REPLAY_EVERY_PASSES) {
      passesSinceReplay = 0
      const finished = yield* replaySpool
      if (!finished) passesSinceReplay = Infinity
    }
    readLimits()
  })

  /** Runs until the scope closes: nothing that fails inside a pass may end it. */
  const loop = Effect.gen(function*() {
    while (!stopping) {
      yield* pass.pipe(
        Effect.catchCause((cause) =>
          Effect.logError("usage sink loop failed; retrying", Cause.pretty(cause)).pipe(Effect.andThen(Effect.sleep(LOOP_RETRY_MS)))
        )
      )
      if (!stopping) yield* waitForWork
    }
  })

  /**
   * Spool whatever is not acknowledged: in-flight batches (they may still land; a duplicate
   * insert is harmless, a lost row is not) and the buffer.
   */
  const spoolLeftovers = Effect.gen(function*() {
    const pending = [...inFlight].flat()
    inFlight.clear()
    buffer = pending.concat(buffer)
    const rows = buffer.length
    if (rows === 0) return
    yield* spillOldest(0)
    if (buffer.length === 0) {
      yield* Effect.logWarning("usage writer unavailable; rows kept in the spool", { rows })
    } else {
      yield* Effect.logError("usage rows could not be written nor spooled", { rows: buffer.length, spillFailures })
    }
  })

  let loopFiber: Fiber.Fiber<void> | undefined
  /**
   * Shutdown, step one: ask the loop to stop after the batch it is writing and wait for it. A
   * batch interrupted mid-send could still land and then be sent again; only a writer hung past
   * the deadline is interrupted (its batch goes to the spool: a duplicate is possible there, a
   * loss is not).
   */
  const stopLoop = Effect.gen(function*() {
    if (loopFiber === undefined) return
    stopping = true
    wake?.()
    const finished = yield* Fiber.join(loopFiber).pipe(Effect.interruptible, Effect.timeoutOption(finalDrainMs))
    if (Option.isNone(finished)) yield* Fiber.interrupt(loopFiber)
  })

  /**
   * Shutdown: stop the loop, write what is left within the deadline, spool the rest. With time
   * left, the spool is replayed too: rows spooled during the run (a failed write, a slow writer)
   * would otherwise wait for this node's next start, which a retired node never has. A file cut
   * off by the deadline stays in the spool (and may be written twice: ids make that harmless).
   */
  const flush = Effect.gen(function*() {
    const started = Date.now()
    const leftMs = () => Math.max(1, finalDrainMs - (Date.now() - started))
    yield* stopLoop
    const drained = yield* drainOnce.pipe(Effect.interruptible, Effect.timeoutOption(leftMs()))
    if (Option.isSome(drained) && drained.value) {
      yield* replaySpool.pipe(Effect.interruptible, Effect.timeoutOption(leftMs()))
      return
    }
    yield* spoolLeftovers
  }).pipe(Effect.uninterruptible)
  yield* Effect.addFinalizer(() => flush)
  loopFiber = yield* Effect.forkDetach(loop)

  return UsageBatcher.of({
    add,
    stats: () => ({
      buffered: buffer.length + [...inFlight].reduce((n, rows) => n + rows.length, 0),
      written,
      batches,
      failures,
      spooled,
      replayed,
      lastBatchMs
    })
  })
}).pipe(withModule("usage")))
