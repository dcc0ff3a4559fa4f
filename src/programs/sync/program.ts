import { Config, Console, Effect, Layer, Option } from "effect"
import { appConfig } from "../../config/AppConfig.ts"
import { checkValkeyUrl } from "../../layers/CacheValkey.ts"
import { DatabaseLive } from "../../layers/DatabaseLive.ts"
import { withModule } from "../../layers/Logging.ts"
import { MigrationsLive } from "../../layers/MigrationsLive.ts"
import { openSyncValkey } from "../../layers/sync/usageMirrorValkey.ts"
import { malformedSetting } from "../../services/StartupError.ts"
import { BaseLive } from "../layers.ts"
import { runSync, type SyncProgress, type SyncResult } from "./syncJob.ts"

export interface SyncFlags {
  readonly full: boolean
  readonly json: boolean
  readonly lagHours: Option.Option<number>
  readonly batchSize: Option.Option<number>
}

export const DEFAULT_LAG_HOURS = 24
export const DEFAULT_BATCH_SIZE = 2_000
const MAX_BATCH_SIZE = 100_000

const count = (n: number) => Math.round(n).toLocaleString("en-US")
const duration = (seconds: number) => {
  const s = Math.max(0, Math.round(seconds))
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`
    : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`
}

/** `1,234,567 rows  48,210 rows/s  ETA 2m10s` (ETA from the planner's row estimates, else from the range read). */
export const progressLine = (p: SyncProgress): string => {
  const seconds = p.elapsedMs / 1000
  const rate = seconds > 0 ? p.rows / seconds : 0
  const done = p.expectedRows !== undefined && p.expectedRows > 0 ? Math.min(1, p.rows / p.expectedRows) : p.rangeDone
  const eta = done > 0 && done < 1 ? ` ETA ${duration(seconds * (1 - done) / done)}` : ""
  return `sync: ${count(p.rows)} rows  ${p.batches} batches  ${count(rate)} rows/s  ${(done * 100).toFixed(0)}%${eta}`
}

/** A progress printer for a terminal: at most one redraw a second, on one line (`\r`). */
const terminalProgress = () => {
  let last = 0
  let shown = false
  return {
    update: (p: SyncProgress) => {
      const t = Date.now()
      if (t - last < 1_000) return
      last = t
      shown = true
      process.stderr.write(`\r${progressLine(p).padEnd(78)}`)
    },
    end: () => {
      if (shown) process.stderr.write("\n")
    }
  }
}

/** The one-line summary on stdout. */
export const summaryLine = (r: SyncResult): string =>
  `synced ${r.rows} rows in ${r.batches} batches in ${r.seconds.toFixed(1)} s (${r.mode}${r.fullReason === null ? "" : `: ${r.fullReason}`}; ` +
  `${new Date(r.from).toISOString()} to ${new Date(r.to).toISOString()}; complete through ${new Date(r.completeThrough).toISOString()}; ` +
  `pruned ${r.pruned.entries} index entries, ${r.pruned.days} days; ${r.apiKeys} API keys, ${r.parameters} parameters, ${r.rollupDays} rollup days)`

export const summaryJson = (r: SyncResult) => ({
  rows: r.rows,
  batches: r.batches,
  seconds: r.seconds,
  rows_per_second: r.seconds > 0 ? Math.round(r.rows / r.seconds) : null,
  mode: r.mode,
  full_reason: r.fullReason,
  from: new Date(r.from).toISOString(),
  to: new Date(r.to).toISOString(),
  slices: r.slices,
  complete_through: new Date(r.completeThrough).toISOString(),
  row_days: r.rowDays,
  lag_hours: r.lagMs / 3_600_000,
  pruned: r.pruned,
  api_keys: r.apiKeys,
  parameters: r.parameters,
  rollup_days: r.rollupDays,
  rollup_keys: r.rollupKeys
})

/**
 * `tb sync [--full] [--json] [--lag-hours H] [--batch-size N]`: needs Valkey (VALKEY_URL or
 * CACHE_URL; without it one line and exit 2), reads usage_logs from the reader (DATABASE_READER_URL,
 * else the writer, else the embedded database). FORCE_FULL_SYNC=true is `--full`.
 */
export const syncProgram = (flags: SyncFlags) =>
  Effect.gen(function*() {
    // Settings first: a missing VALKEY_URL or a bad flag is one line before any connection is made.
    const config = yield* appConfig
    if (Option.isNone(config.valkeyUrl)) {
      return yield* malformedSetting("VALKEY_URL", "required by tb sync (the Valkey the usage rows are copied to; CACHE_URL also works)")
    }
    const valkeyUrl = config.valkeyUrl.value
    const variable = Option.isSome(yield* Config.option(Config.String("VALKEY_URL"))) ? "VALKEY_URL" : "CACHE_URL"
    const forceFull = yield* Config.Boolean("FORCE_FULL_SYNC").pipe(Config.withDefault(false))
    const lagHours = Option.getOrElse(flags.lagHours, () => DEFAULT_LAG_HOURS)
    if (!(lagHours >= 0 && lagHours <= 24 * 93)) return yield* malformedSetting("--lag-hours", "expected 0 to 2232 hours")
    const batchSize = Option.getOrElse(flags.batchSize, () => DEFAULT_BATCH_SIZE)
    if (!(batchSize >= 1 && batchSize <= MAX_BATCH_SIZE)) return yield* malformedSetting("--batch-size", `expected 1 to ${MAX_BATCH_SIZE} rows`)
    yield* checkValkeyUrl(variable, valkeyUrl)

    yield* Effect.gen(function*() {
      const redis = yield* openSyncValkey(valkeyUrl, variable)
      const progress = process.stderr.isTTY ? terminalProgress() : undefined
      const result = yield* runSync(redis, {
        full: flags.full || forceFull,
        lagMs: Math.round(lagHours * 3_600_000),
        batchSize,
        ...(progress === undefined ? {} : { onProgress: progress.update })
      }).pipe(
        Effect.ensuring(Effect.sync(() => progress?.end())),
        // Stopped (SIGTERM, the task stopped) before the end: not done. The next run goes on from the last whole slice.
        Effect.onInterrupt(() =>
          Effect.sync(() => {
            console.error("sync interrupted before the end; the next run goes on from the last whole slice")
            process.exitCode = 1
          })
        )
      )
      yield* Effect.logInfo("sync done", summaryJson(result))
      yield* Console.log(flags.json ? JSON.stringify(summaryJson(result)) : summaryLine(result))
    }).pipe(
      Effect.scoped,
      Effect.provide(MigrationsLive.pipe(Layer.provideMerge(DatabaseLive), Layer.provideMerge(BaseLive)))
    )
  }).pipe(withModule("sync"))
