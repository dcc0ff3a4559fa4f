import { Cause, type Duration, Effect, Fiber, Option, Queue, Schedule, type Scope, Sink, Stream } from "effect"
import { messageOf } from "../../domain/errorMessage.ts"
import type { UsageChunk } from "../../domain/usageChunk.ts"
import { encodeUsageLogMessagesOfChunks, USAGE_LOG_TYPE, USAGE_LOG_VERSION } from "../../domain/usageQueueMessage.ts"
import type { Params } from "../../services/Params.ts"
import { type RefusedBody, UsageWriteError, type UsageSinkStats, type UsageWriter, ZERO_USAGE_STATS } from "../../services/UsageSink.ts"
import type { UsageSpool } from "./spool.ts"
import { USAGE_LOG_MAX_BODY_BYTES } from "./UsageWriterSqs.ts"

/** A write is tried this often before its batch goes to the spool (~0.1 + 0.2 + 0.4 s of waiting). */
const WRITE_RETRY = Schedule.max([Schedule.exponential("100 millis"), Schedule.recurs(3)])
/** After a batch that could not be written, live batches go straight to the spool for this long. */
const BYPASS_MS = 5_000
/** How often the spool is replayed while the destination takes writes (and once at start). */
const REPLAY_EVERY = "5 seconds"
/** Pause before a batch that neither the destination nor the disk took is tried again. */
const HELD_RETRY_MS = 1_000

/** Every body this pipeline writes starts so (usageQueueMessage.ts); the row count follows. */
const BODY_PREFIX = `{"type":"${USAGE_LOG_TYPE}","v":${USAGE_LOG_VERSION},"count":`

/** The rows a spooled body holds, read from its head; 0 for a body that is not ours. */
const rowsOfBody = (body: string): number => (body.startsWith(BODY_PREFIX) ? Number.parseInt(body.slice(BODY_PREFIX.length, BODY_PREFIX.length + 12), 10) || 0 : 0)

export interface UsagePipelineOptions {
  readonly writer: UsageWriter["Service"]
  readonly spool: UsageSpool
  readonly params: Params["Service"]
  /** The serving thread may forget the chunk: its rows are written, or in the spool. */
  readonly ack: (seq: number) => void
  /** The final drain at `stop` may take this long; what is left then stays unacknowledged, with the serving thread. */
  readonly stopWithinMs: number
  readonly bypassMs?: number
  readonly replayEvery?: Duration.Input
}

export interface UsagePipeline {
  /** Synchronous: queues the chunk (or, past `usage_buffer_max_rows` waiting, spools it at once). */
  readonly add: (seq: number, chunk: UsageChunk) => void
  /** Writes what waits, replays the spool if time is left, and ends the pipeline. */
  readonly stop: Effect.Effect<void>
  readonly stats: () => UsageSinkStats
}

interface Chunk {
  readonly seq: number
  readonly chunk: UsageChunk
}

interface LiveBatch {
  readonly _tag: "Live"
  readonly chunks: Array<Chunk>
  rows: number
}

interface SpoolFile {
  readonly _tag: "SpoolFile"
  readonly file: string
}

const isMissingFile = (e: unknown) => typeof e === "object" && e !== null && "code" in e && e.code === "ENOENT"

/**
 * The usage thread's pipeline: one Effect stream. The serving thread's column chunks are batched
 * by size (`usage_batch_size` rows) or time (`usage_flush_ms` after a batch's first chunk), each
 * batch encoded once as `usage_log` message bodies (the queue's format), and written by the
 * UsageWriter (SQS, or the database as the queued writer stores messages), retried on a Schedule.
 * A batch still not written goes to the spool as those same bodies, and for `bypassMs` after that
 * live batches go straight to the spool rather than wait on a destination that is down. Spool
 * files join the same stream every few seconds and are written through the same call; a file is
 * removed once written. A chunk is acknowledged to the serving thread once its rows are written
 * or spooled: before that the serving thread keeps it, and sends it again to a new usage thread.
 */
export const makeUsagePipeline = (options: UsagePipelineOptions): Effect.Effect<UsagePipeline, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { writer, spool, params } = options
    const bypassMs = options.bypassMs ?? BYPASS_MS
    const queue = yield* Queue.unbounded<Chunk, Cause.Done>()
    let stats: UsageSinkStats = ZERO_USAGE_STATS
    /** Rows added and not yet acknowledged. */
    let waitingRows = 0
    let bypassUntil = 0
    let stopping = false
    let writerFailing = false

    const batchRows = () => Math.max(1, params.int("usage_batch_size"))
    const flushMs = () => Math.max(10, params.int("usage_flush_ms"))

    const acknowledge = (chunks: ReadonlyArray<Chunk>, rows: number) => {
      for (const c of chunks) options.ack(c.seq)
      waitingRows -= rows
    }

    const spoolNow = (bodies: ReadonlyArray<string>): Option.Option<string> => {
      try {
        spool.put(bodies)
        return Option.none()
      } catch (e) {
        return Option.some(messageOf(e))
      }
    }

    const add = (seq: number, chunk: UsageChunk) => {
      waitingRows += chunk.rows
      if (waitingRows > params.int("usage_buffer_max_rows") && !stopping) {
        // A write that hangs must not let this thread's memory grow: past the bound, chunks go to disk.
        const spoolError = spoolNow(encodeUsageLogMessagesOfChunks([chunk], USAGE_LOG_MAX_BODY_BYTES))
        if (Option.isNone(spoolError)) {
          stats = { ...stats, spooled: stats.spooled + chunk.rows }
          acknowledge([{ seq, chunk }], chunk.rows)
          return
        }
      }
      Queue.offerUnsafe(queue, { seq, chunk })
    }

    /** One writer call, retried; a writer defect counts as a failed write. */
    const write = (bodies: ReadonlyArray<string>, rows: number) =>
      writer.write(bodies).pipe(
        Effect.catchDefect((defect) =>
          Effect.fail(new UsageWriteError({ reason: writer.kind === "sqs" ? "Queue" : "Database", message: `writer defect: ${messageOf(defect)}` }))),
        Effect.retry(WRITE_RETRY),
        Effect.withSpan("UsageWriter.write", { attributes: { rows, bodies: bodies.length, writer: writer.kind } })
      )

    /** Bodies the destination will never take: kept for the operator as a `.bad` spool file, and said loudly. */
    const keepRefused = (refused: ReadonlyArray<RefusedBody>) =>
      refused.length === 0 ? Effect.void : Effect.gen(function*() {
        const kept = yield* Effect.try({ try: () => spool.putRefused(refused.map((r) => r.body)), catch: messageOf }).pipe(Effect.result)
        yield* Effect.logError("usage bodies refused by the writer; kept in the spool as .bad", {
          bodies: refused.length, reason: refused[0]!.reason, kept: kept._tag === "Success" ? "yes" : kept.failure
        })
      })

    const noteFailure = (error: UsageWriteError) =>
      Effect.suspend(() => {
        stats = { ...stats, failures: stats.failures + 1 }
        bypassUntil = Date.now() + bypassMs
        if (writerFailing) return Effect.void
        writerFailing = true
        return Effect.logWarning("usage writer failing; batches go to the spool", { error: error.message })
      })

    const noteSuccess = Effect.suspend(() => {
      if (!writerFailing) return Effect.void
      writerFailing = false
      return Effect.logInfo("usage writer writing again")
    })

    /** A live batch: written, else spooled; acknowledged either way. Held (not acknowledged) only if the disk fails too. */
    const handleLive = (batch: LiveBatch) =>
      Effect.gen(function*() {
        const bodies = encodeUsageLogMessagesOfChunks(batch.chunks.map((c) => c.chunk), USAGE_LOG_MAX_BODY_BYTES)
        if (Date.now() >= bypassUntil) {
          const started = Date.now()
          const result = yield* write(bodies, batch.rows).pipe(Effect.result)
          if (result._tag === "Success") {
            stats = { ...stats, written: stats.written + batch.rows, batches: stats.batches + 1, lastBatchMs: Date.now() - started }
            acknowledge(batch.chunks, batch.rows)
            yield* noteSuccess
            return yield* keepRefused(result.success)
          }
          yield* noteFailure(result.failure)
        }
        const spoolError = spoolNow(bodies)
        if (Option.isNone(spoolError)) {
          stats = { ...stats, spooled: stats.spooled + batch.rows }
          return acknowledge(batch.chunks, batch.rows)
        }
        yield* Effect.logError("usage rows neither written nor spooled; held in memory and tried again", { rows: batch.rows, error: spoolError.value })
        if (stopping) return // unacknowledged: the serving thread keeps them
        yield* Effect.sleep(HELD_RETRY_MS)
        yield* Queue.offerAll(queue, batch.chunks)
      })

    /** A spool file: written through the same call as a live batch, then removed; left in place while the destination fails. */
    const handleSpoolFile = (file: string, atStop = false) =>
      Effect.gen(function*() {
        // At shutdown the destination gets one more try whatever happened lately: there is no next pass.
        if (Date.now() < bypassUntil && !atStop) return false
        const read = yield* Effect.try({ try: () => spool.read(file), catch: (e) => e }).pipe(Effect.result)
        if (read._tag === "Failure") {
          // Gone: replayed already (a file listed twice), nothing to do.
          if (!isMissingFile(read.failure)) yield* Effect.logWarning("usage spool file unreadable; skipped", { file, error: messageOf(read.failure) })
          return true
        }
        const bodies = read.success
        const rows = bodies.reduce((n, body) => n + rowsOfBody(body), 0)
        if (bodies.some((body) => rowsOfBody(body) === 0 || Buffer.byteLength(body, "utf8") > USAGE_LOG_MAX_BODY_BYTES)) {
          yield* Effect.try({ try: () => spool.quarantine(file), catch: messageOf }).pipe(Effect.ignore)
          yield* Effect.logError("usage spool file holds a line that is no usage_log body this writer can send; renamed to .bad", { file })
          return true
        }
        const result = yield* write(bodies, rows).pipe(Effect.result)
        if (result._tag === "Failure") {
          yield* noteFailure(result.failure)
          return false
        }
        yield* noteSuccess
        yield* keepRefused(result.success)
        // Written but not removed (a crash now): the next replay writes it again, which stores nothing twice.
        yield* Effect.try({ try: () => spool.remove(file), catch: messageOf }).pipe(Effect.ignore)
        stats = { ...stats, replayed: stats.replayed + rows }
        return true
      })

    const liveBatches = Stream.fromQueue(queue).pipe(
      Stream.aggregateWithin(
        Sink.fold(
          (): LiveBatch => ({ _tag: "Live", chunks: [], rows: 0 }),
          (batch) => batch.rows < batchRows(),
          (batch, c: Chunk) =>
            Effect.sync(() => {
              batch.chunks.push(c)
              batch.rows += c.chunk.rows
              return batch
            })
        ),
        Schedule.spaced("250 millis").pipe(Schedule.modifyDelay(() => Effect.sync(flushMs)))
      ),
      Stream.filter((batch) => batch.chunks.length > 0)
    )

    const spoolFiles = (): ReadonlyArray<SpoolFile> => {
      if (Date.now() < bypassUntil) return []
      try {
        return spool.files().map((file) => ({ _tag: "SpoolFile", file }))
      } catch {
        return []
      }
    }

    const replays = Stream.concat(Stream.succeed(undefined), Stream.fromSchedule(Schedule.spaced(options.replayEvery ?? REPLAY_EVERY))).pipe(
      Stream.flatMap(() => Stream.fromIterable(spoolFiles()))
    )

    // One trace per batch: its root span holds the writer call (UsageWriter.write, retries and SQL within).
    const tracedLive = (batch: LiveBatch) =>
      handleLive(batch).pipe(Effect.withSpan("usage.batch", { root: true, kind: "consumer", attributes: { rows: batch.rows, chunks: batch.chunks.length } }))
    const tracedSpoolFile = (file: string) => handleSpoolFile(file).pipe(Effect.withSpan("usage.replay", { root: true, attributes: { file } }))

    const pipeline = Stream.merge(liveBatches, replays, { haltStrategy: "left" }).pipe(
      Stream.runForEach((item) => (item._tag === "Live" ? tracedLive(item) : tracedSpoolFile(item.file))),
      Effect.catchCause((cause) => Effect.logError("usage pipeline failed", Cause.pretty(cause)))
    )
    const fiber = yield* Effect.forkScoped(pipeline)

    /** What is left in the spool, once, at shutdown: a retired node has no next start to replay it. */
    const replayOnce = Effect.gen(function*() {
      const files = yield* Effect.try({ try: () => spool.files(), catch: messageOf }).pipe(Effect.orElseSucceed((): ReadonlyArray<string> => []))
      for (const file of files) {
        if (!(yield* handleSpoolFile(file, true).pipe(Effect.withSpan("usage.replay", { root: true, attributes: { file, at_stop: true } })))) return
      }
    })

    const stop = Effect.gen(function*() {
      const started = Date.now()
      const leftMs = () => Math.max(1, options.stopWithinMs - (Date.now() - started))
      stopping = true
      yield* Queue.end(queue)
      const drained = yield* Fiber.join(fiber).pipe(Effect.timeoutOption(leftMs()))
      if (Option.isNone(drained)) {
        yield* Fiber.interrupt(fiber)
        yield* Effect.logError("usage writes did not finish in time; the serving thread keeps what is unacknowledged", { rows: waitingRows })
        return
      }
      yield* replayOnce.pipe(Effect.timeoutOption(leftMs()))
    })

    return { add, stop, stats: () => ({ ...stats, buffered: waitingRows }) }
  })
