import { Effect, Layer, Schema } from "effect"
import { mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { UsageBatchJson, type UsageRow } from "../domain/usage.ts"
import { AppConfig } from "../config/AppConfig.ts"
import { Params } from "../services/Params.ts"
import { UsageSink, UsageWriter } from "../services/UsageSink.ts"
import { withModule } from "./Logging.ts"

const encodeBatch = Schema.encodeSync(UsageBatchJson)
const decodeBatch = Schema.decodeUnknownSync(UsageBatchJson)

/**
 * Spool: batches that could not be written yet, one JSON file each, written atomically
 * (tmp + rename) so a crash mid-write leaves no half file. Synchronous on purpose: it runs only
 * when the writer is failing or at shutdown, never per request.
 */
const makeSpool = (dir: string) => {
  mkdirSync(dir, { recursive: true })
  let seq = 0
  return {
    put: (rows: ReadonlyArray<UsageRow>) => {
      const name = `usage-${Date.now()}-${process.pid}-${seq++}.json`
      writeFileSync(join(dir, `${name}.tmp`), encodeBatch({ rows }))
      renameSync(join(dir, `${name}.tmp`), join(dir, name))
    },
    files: () => readdirSync(dir).filter((f) => f.endsWith(".json")).sort(),
    read: (file: string): ReadonlyArray<UsageRow> => decodeBatch(readFileSync(join(dir, file), "utf8")).rows,
    remove: (file: string) => unlinkSync(join(dir, file))
  }
}

/**
 * In-memory buffer → batches (`usage_batch_size` rows or every `usage_flush_ms`) → UsageWriter.
 * Memory is bounded by `usage_buffer_max_rows`: beyond it the oldest rows spill to DATA_DIR/spool
 * and are replayed once the writer succeeds again. A failing writer delays rows; it never drops them.
 */
export const UsageSinkLive = Layer.effect(UsageSink, Effect.gen(function*() {
  const writer = yield* UsageWriter
  const params = yield* Params
  const config = yield* AppConfig
  const spool = makeSpool(join(config.dataDir, "spool"))
  let buffer: Array<UsageRow> = []
  let wake: (() => void) | undefined
  let written = 0
  let batches = 0
  let failures = 0
  let spooled = 0
  let replayed = 0
  let lastBatchMs = 0
  let consecutiveFailures = 0

  const spill = (rows: ReadonlyArray<UsageRow>) => {
    if (rows.length === 0) return
    spool.put(rows)
    spooled += rows.length
  }

  const record = (row: UsageRow) => {
    buffer.push(row)
    const batch = params.int("usage_batch_size")
    if (buffer.length >= params.int("usage_buffer_max_rows")) spill(buffer.splice(0, Math.max(batch, buffer.length >>> 1)))
    if (buffer.length >= batch && wake !== undefined) wake()
  }

  const writeBatch = (rows: ReadonlyArray<UsageRow>) =>
    Effect.gen(function*() {
      const started = Date.now()
      yield* writer.write(rows)
      lastBatchMs = Date.now() - started
      written += rows.length
      batches++
      consecutiveFailures = 0
    }).pipe(Effect.withSpan("UsageSink.writeBatch", { attributes: { rows: rows.length, writer: writer.kind } }))

  const replaySpool = Effect.gen(function*() {
    for (const file of spool.files()) {
      const rows = yield* Effect.try({ try: () => spool.read(file), catch: (e) => e })
      yield* writeBatch(rows)
      spool.remove(file)
      replayed += rows.length
    }
  }).pipe(Effect.catch((e) => Effect.logWarning("spool replay paused", String(e))))

  /** Write everything buffered now; on failure the batch goes back to the front of the buffer. */
  const drainOnce = Effect.gen(function*() {
    while (buffer.length > 0) {
      const rows = buffer.splice(0, params.int("usage_batch_size"))
      // Uninterruptible: rows taken out of the buffer are either written or put back, never lost.
      const ok = yield* writeBatch(rows).pipe(
        Effect.as(true),
        Effect.catch((e) =>
          Effect.sync(() => {
            buffer = rows.concat(buffer)
            failures++
            consecutiveFailures++
            return false
          }).pipe(Effect.tap(() => consecutiveFailures === 1 ? Effect.logWarning("usage writer failing; rows held", e.message) : Effect.void))
        ),
        Effect.uninterruptible
      )
      if (!ok) return false
    }
    return true
  })

  const waitForWork = Effect.callback<void>((resume) => {
    // A batch filled while no one was waiting (before the loop first ran, or during a write)
    // found no `wake` to call: start on it now rather than at the timer.
    if (consecutiveFailures === 0 && buffer.length >= params.int("usage_batch_size")) return resume(Effect.void)
    const backoff = consecutiveFailures === 0 ? 0 : Math.min(5_000, 100 * 2 ** Math.min(consecutiveFailures, 6))
    const timer = setTimeout(() => resume(Effect.void), params.int("usage_flush_ms") + backoff)
    if (consecutiveFailures === 0) wake = () => resume(Effect.void)
    return Effect.sync(() => {
      clearTimeout(timer)
      wake = undefined
    })
  })

  const loop = Effect.gen(function*() {
    let sinceReplay = Infinity
    while (true) {
      yield* waitForWork
      wake = undefined
      const ok = yield* drainOnce
      sinceReplay++
      if (ok && sinceReplay > 20 && spool.files().length > 0) {
        sinceReplay = 0
        yield* replaySpool
      }
    }
  })

  /** Shutdown: one last try at the writer, then whatever is left goes to the spool. */
  const flush = Effect.gen(function*() {
    const ok = yield* drainOnce
    if (!ok) {
      const rest = buffer
      buffer = []
      spill(rest)
      yield* Effect.logWarning("usage writer unavailable at shutdown; rows kept in the spool", { rows: rest.length })
    }
  }).pipe(Effect.uninterruptible)

  yield* replaySpool
  // Registered before the loop is forked so it runs after the loop has been interrupted.
  yield* Effect.addFinalizer(() => flush)
  yield* Effect.forkScoped(loop)

  return UsageSink.of({
    record,
    flush,
    stats: () => ({ buffered: buffer.length, written, batches, failures, spooled, replayed, lastBatchMs })
  })
}).pipe(withModule("usage")))
