import { Clock, Effect, Stream } from "effect"
import type { Redis } from "ioredis"
import { DEFAULT_PARAMS, mergeParams } from "../../domain/params.ts"
import { DAY_MS, utcDay, windowStart } from "../../domain/usageMirrorKeys.ts"
import { APP_CONFIG_KEY } from "../../layers/ParamsLive.ts"
import {
  clearUnfinishedFull, type Pruned, pruneUsageMirror, readSyncState, SyncError, writeApiKeys, writeAppConfig, writeSyncState, writeUsageRows
} from "../../layers/sync/usageMirrorValkey.ts"
import { openRespPipelineLike } from "../../layers/sync/respPipeline.ts"
import { copyRollup } from "../../layers/sync/rollupCopy.ts"
import { daySlices, partitionRowEstimates, readApiKeys, readParameters, streamUsageRows } from "../../layers/sync/usageSource.ts"
import { ReaderSql } from "../../services/Database.ts"

export interface SyncOptions {
  /** Reload the whole window (`--full`, FORCE_FULL_SYNC). */
  readonly full: boolean
  /** Rows inserted up to this long after their created_at are still picked up (docs/sync.md). */
  readonly lagMs: number
  /** Rows per Valkey pipeline. */
  readonly batchSize: number
  /** Pipelines in flight at once (the next batch is read from SQL while one is written). */
  readonly pipelines?: number
  readonly onProgress?: (progress: SyncProgress) => void
  /** The run's "now" (epoch ms) instead of the clock's: tests that move a day on. */
  readonly nowMs?: number
}

export interface SyncProgress {
  readonly rows: number
  readonly batches: number
  readonly elapsedMs: number
  /** Rows the run expects in all (planner estimates), undefined when unknown. */
  readonly expectedRows: number | undefined
  /** Share of the run's time range already read (0..1), for an ETA when no estimate exists. */
  readonly rangeDone: number
}

export type SyncMode = "full" | "incremental"

export interface SyncResult {
  readonly mode: SyncMode
  /** Why the run was full: asked for, no earlier run, or sync_row_days changed since the last one. */
  readonly fullReason: "requested" | "resuming an unfinished full run" | "first run" | "sync_row_days changed" | null
  readonly rows: number
  readonly batches: number
  readonly seconds: number
  /** The range of created_at read: [from, to). */
  readonly from: number
  readonly to: number
  readonly slices: number
  readonly completeThrough: number
  readonly rowDays: number
  readonly lagMs: number
  readonly pruned: Pruned
  readonly apiKeys: number
  readonly parameters: number
  /** Days of usage_daily_rollup_dim copied to `usage:rollup:*`, and the key × day hashes written. */
  readonly rollupDays: number
  readonly rollupKeys: number
}

const databaseFailed = (e: { readonly message: string }) => new SyncError({ reason: "Database", message: e.message })

/**
 * One sync run: usage_logs rows from the reader into the Valkey mirror, then prune, then API keys,
 * `app:config` and the daily rollup days refreshed since the last run.
 *
 * Late rows: the run reads created_at from the last run's `complete_through` up to its own start
 * (`now`), and sets `complete_through` to `now − lag` at most; the next run reads again from
 * there. A row inserted later than its created_at (queued writer, spool replay) but within `lag`
 * is therefore read by the next run; writes are idempotent, so rows read twice change nothing.
 *
 * Crash safety: the range is read in UTC-day slices; `complete_through` (and, in a full run,
 * `full_through`) moves only after a slice's every pipeline has succeeded, so a run killed anywhere
 * is redone from the last whole slice by the next run, and what it wrote again changes nothing.
 */
export const runSync = (redis: Redis, options: SyncOptions): Effect.Effect<SyncResult, SyncError, ReaderSql> =>
  Effect.gen(function*() {
    const reader = yield* ReaderSql
    // The rows go over a connection of their own, written as RESP directly (respPipeline.ts).
    const bulk = yield* openRespPipelineLike(redis, 5_000).pipe(
      Effect.mapError((e) => new SyncError({ reason: "Valkey", message: `bulk connection: ${e.message}` }))
    )
    const startedAt = yield* Clock.currentTimeMillis
    const now = options.nowMs ?? startedAt
    const parameters = yield* readParameters(reader).pipe(Effect.mapError(databaseFailed))
    const rowDays = Number(mergeParams(DEFAULT_PARAMS, parameters).sync_row_days)
    const state = yield* readSyncState(redis)
    const lastComplete = state["complete_through"]
    // A full run killed part-way left full_through (how far it got, for which row_days): go on from there.
    const unfinishedFull = state["full_through"] !== undefined && state["full_row_days"] === rowDays ? state["full_through"] : undefined
    const fullReason = options.full ? "requested" as const
      : unfinishedFull !== undefined ? "resuming an unfinished full run" as const
      : lastComplete === undefined ? "first run" as const
      : state["row_days"] !== rowDays ? "sync_row_days changed" as const
      : null
    const mode: SyncMode = fullReason === null ? "incremental" : "full"
    const keepFrom = windowStart(now, rowDays)
    const from = fullReason === "resuming an unfinished full run" ? Math.max(keepFrom, unfinishedFull ?? keepFrom)
      : mode === "full" || lastComplete === undefined ? keepFrom
      : Math.max(keepFrom, lastComplete)
    const completeBound = now - options.lagMs
    const slices = daySlices(from, now)
    yield* writeSyncState(redis, {
      last_started_at: startedAt, last_mode: mode, ...(mode === "full" ? { full_through: from, full_row_days: rowDays } : {})
    })

    const estimates = yield* partitionRowEstimates(reader).pipe(Effect.orElseSucceed(() => new Map<string, number>()))
    let expectedRows: number | undefined = 0
    for (const s of slices) {
      const dayRows = estimates.get(utcDay(s.from))
      if (dayRows === undefined || dayRows <= 0) {
        expectedRows = undefined
        break
      }
      expectedRows += dayRows * ((s.to - s.from) / DAY_MS)
    }

    let rows = 0
    let batches = 0
    let rangeRead = 0
    const report = () =>
      options.onProgress?.({ rows, batches, elapsedMs: Date.now() - startedAt, expectedRows, rangeDone: now > from ? rangeRead / (now - from) : 1 })

    for (const slice of slices) {
      let newest = Number.NEGATIVE_INFINITY
      yield* streamUsageRows(reader, slice.from, slice.to).pipe(
        Stream.mapError(databaseFailed),
        Stream.grouped(options.batchSize),
        Stream.mapEffect((batch) => writeUsageRows(bulk, batch, rowDays, keepFrom), { concurrency: options.pipelines ?? 2 }),
        Stream.runForEach((written) =>
          Effect.sync(() => {
            rows += written.rows
            batches++
            if (written.newest > newest) newest = written.newest
            report()
          })
        )
      )
      rangeRead += slice.to - slice.from
      // Every row of the slice is written: the marks may move past it.
      yield* writeSyncState(redis, {
        complete_through: Math.min(slice.to, completeBound),
        ...(Number.isFinite(newest) ? { synced_through: newest } : {}),
        ...(mode === "full" ? { full_through: slice.to } : {})
      })
      report()
    }
    if (slices.length === 0) yield* writeSyncState(redis, { complete_through: Math.min(from, completeBound) })

    // Written with a longer window than now: their hashes outlive the cutoff unless deleted here.
    const narrowed = state["row_days"] !== undefined && state["row_days"] > rowDays
    const pruned = yield* pruneUsageMirror(redis, keepFrom, narrowed)
    const apiKeys = yield* readApiKeys(reader).pipe(Effect.mapError(databaseFailed), Effect.flatMap((keys) => writeApiKeys(redis, keys)))
    const parameterCount = yield* writeAppConfig(redis, APP_CONFIG_KEY, parameters)
    // The daily rollup: the days refreshed since the last copy (all of them in a full run).
    const retentionDays = Number(mergeParams(DEFAULT_PARAMS, parameters).usage_retention_days)
    const rollup = yield* copyRollup(reader, redis, mode === "full" ? undefined : state["rollup_through"], now, retentionDays)
    if (rollup.through !== undefined) yield* writeSyncState(redis, { rollup_through: rollup.through })
    const finishedAt = yield* Clock.currentTimeMillis
    // row_days only once a full run for it has finished: a run cut short leaves full_through, and the next run goes on with it.
    yield* writeSyncState(redis, {
      row_days: rowDays, lag_ms: options.lagMs, last_finished_at: finishedAt, last_rows: rows, last_batches: batches
    })
    if (mode === "full") yield* clearUnfinishedFull(redis)
    const after = yield* readSyncState(redis)
    return {
      mode, fullReason, rows, batches, seconds: (finishedAt - startedAt) / 1000, from, to: now, slices: slices.length,
      completeThrough: after["complete_through"] ?? Math.min(from, completeBound), rowDays, lagMs: options.lagMs,
      pruned, apiKeys, parameters: parameterCount, rollupDays: rollup.days, rollupKeys: rollup.keys
    }
  }).pipe(Effect.scoped, Effect.withSpan("Sync.run"))
