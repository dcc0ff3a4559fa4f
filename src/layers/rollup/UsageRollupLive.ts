import { type Duration, Effect, Layer, Schedule } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import { bucketSql, packedSketchSql } from "../../domain/latencySketch.ts"
import { withModule } from "../Logging.ts"
import { DAY_MS, DIMENSION_VALUE_SQL, DIMENSIONS, dayName, dayStart } from "./dimensions.ts"

/**
 * The daily usage rollup (tables in migration 0008), recomputed from usage_logs set-based in SQL,
 * one UTC day per transaction (delete the day, insert it again), so a rerun or two nodes at once
 * never count a row twice.
 *
 * Which days a run computes: every closed day (yesterday and older) of the retention window that
 * was never rolled up, and every day of the last `lagDays` whose usage_logs row count is above the
 * count it was rolled up with (usage_logs only gains rows, so a higher count means a late row: the
 * queued writer's backlog, a spool replay; a lower one means dropped rows, and the rollup keeps them).
 *
 * Limit: a row arriving more than `lagDays` days after its UTC day ended (created_at older than
 * that) is kept in usage_logs and served by /reports/usage, but the rollup (and so the summaries
 * and mv_usage_daily) does not count it until that day is recomputed with `refreshUsageRollupDays`.
 * Between runs, a late row of a closed day is also missing from the summaries (up to `interval`).
 */
export interface RollupRefreshOptions {
  /** Epoch ms taken as now (tests); default the clock. */
  readonly now?: number
  /** How many closed days back late rows are looked for on every run (default 3). */
  readonly lagDays?: number
  /** Days of rollup kept; older days are deleted (default 93, the reports' window). */
  readonly retentionDays?: number
}

export interface RollupRefreshResult {
  /** Days recomputed (`YYYY-MM-DD`). */
  readonly days: ReadonlyArray<string>
  /** Days another node was computing at the same moment (left to it). */
  readonly busy: ReadonlyArray<string>
  /** usage_logs rows the recomputed days hold. */
  readonly rows: number
  /** Weeks (their Mondays, `YYYY-MM-DD`) built again from their days. */
  readonly weeks: ReadonlyArray<string>
  /** Days deleted past the retention window (0 from `refreshUsageRollupDays`). */
  readonly pruned: number
}

export const DEFAULT_LAG_DAYS = 3
export const DEFAULT_RETENTION_DAYS = 93

/** Advisory lock class of the rollup (the second key is the day number), apart from the migrations' lock. */
const ROLLUP_LOCK = 7_261_535
const WEEK_LOCK = 7_261_536

const MEASURES = "requests, errors, bytes_out, latency_sum, last_at"

/** One dimension's rows of a day, from the day's (group, bucket) counts in `buckets`. */
const dimensionSelect = (dimension: keyof typeof DIMENSION_VALUE_SQL) => `
  SELECT api_key_id, '${dimension}', $day::date, value,
         sum(n)::bigint, sum(errors)::bigint, sum(bytes_out)::bigint, sum(latency_sum)::bigint, max(last_at),
         ${packedSketchSql("bucket", "n")}
  FROM (SELECT api_key_id, ${DIMENSION_VALUE_SQL[dimension]} AS value, bucket, sum(n)::bigint AS n,
               sum(CASE WHEN status_code >= 400 THEN n ELSE 0 END)::bigint AS errors,
               sum(bytes_out)::bigint AS bytes_out, sum(latency_sum)::bigint AS latency_sum, max(last_at) AS last_at
        FROM buckets GROUP BY 1, 2, 3) g
  GROUP BY api_key_id, value`

/**
 * One statement, one snapshot: the day's rows counted per (group, latency bucket) once, then
 * written as the fine rollup, the per-dimension rollup and the day's row count.
 */
export const DAY_INSERT = `
  WITH buckets AS MATERIALIZED (
    SELECT api_key_id, asset, source, service, endpoint, status_code, ${bucketSql("latency_us")} AS bucket,
           count(*)::bigint AS n, sum(bytes_out)::bigint AS bytes_out, sum(latency_us)::bigint AS latency_sum,
           max(created_at) AS last_at
    FROM usage_logs WHERE created_at >= $start::timestamptz AND created_at < $end::timestamptz
    GROUP BY 1, 2, 3, 4, 5, 6, 7
  ), fine AS (
    INSERT INTO usage_daily_rollup (api_key_id, day, asset, source, service, endpoint, status_code, ${MEASURES}, latency_buckets, latency_counts)
    SELECT api_key_id, $day::date, asset, source, service, endpoint, status_code,
           sum(n)::bigint, (CASE WHEN status_code >= 400 THEN sum(n) ELSE 0 END)::bigint,
           sum(bytes_out)::bigint, sum(latency_sum)::bigint, max(last_at),
           array_agg(bucket ORDER BY bucket), array_agg(n ORDER BY bucket)
    FROM buckets GROUP BY api_key_id, asset, source, service, endpoint, status_code
  ), dims AS (
    INSERT INTO usage_daily_rollup_dim (api_key_id, dimension, day, value, ${MEASURES}, latency_sketch)
    ${DIMENSIONS.map(dimensionSelect).join("\n    UNION ALL")}
  )
  INSERT INTO usage_daily_rollup_days (day, source_rows, refreshed_at)
  SELECT $day::date, coalesce(sum(n), 0)::bigint, now() FROM buckets
  ON CONFLICT (day) DO UPDATE SET source_rows = excluded.source_rows, refreshed_at = excluded.refreshed_at
  RETURNING source_rows::float8 AS rows`

/** `$name` placeholders → the client's positional parameters, in the order given. */
const bind = (statement: string, names: ReadonlyArray<string>) =>
  names.reduce((text, name, i) => text.replaceAll(`$${name}`, `$${i + 1}`), statement)

const DAY_INSERT_BOUND = bind(DAY_INSERT, ["start", "end", "day"])

/** One dimension's week rows, from the week's per-bucket rows in `buckets` (measures on each fine row's first bucket). */
const weekDimensionSelect = (dimension: keyof typeof DIMENSION_VALUE_SQL) => `
  SELECT api_key_id, '${dimension}', $week::date, value,
         sum(requests)::bigint, sum(errors)::bigint, sum(bytes_out)::bigint, sum(latency_sum)::bigint, max(last_at),
         ${packedSketchSql("bucket", "n")}
  FROM (SELECT api_key_id, ${DIMENSION_VALUE_SQL[dimension]} AS value, bucket, sum(n)::bigint AS n,
               sum(requests)::bigint AS requests, sum(errors)::bigint AS errors, sum(bytes_out)::bigint AS bytes_out,
               sum(latency_sum)::bigint AS latency_sum, max(last_at) AS last_at
        FROM buckets GROUP BY 1, 2, 3) g
  GROUP BY api_key_id, value`

/**
 * A week's rows merged from its 7 days of the fine rollup (not usage_logs: those days are rolled
 * up already), in one statement; the week records the newest refreshed_at of its days it saw.
 */
export const WEEK_INSERT = `
  WITH buckets AS MATERIALIZED (
    SELECT f.api_key_id, f.asset, f.source, f.service, f.endpoint, f.status_code, u.bucket, u.n,
           CASE WHEN u.ord = 1 THEN f.requests ELSE 0 END AS requests,
           CASE WHEN u.ord = 1 THEN f.errors ELSE 0 END AS errors,
           CASE WHEN u.ord = 1 THEN f.bytes_out ELSE 0 END AS bytes_out,
           CASE WHEN u.ord = 1 THEN f.latency_sum ELSE 0 END AS latency_sum,
           f.last_at
    FROM usage_daily_rollup f, unnest(f.latency_buckets, f.latency_counts) WITH ORDINALITY AS u(bucket, n, ord)
    WHERE f.day >= $week::date AND f.day < $week::date + 7
  ), dims AS (
    INSERT INTO usage_weekly_rollup_dim (api_key_id, dimension, week, value, ${MEASURES}, latency_sketch)
    ${DIMENSIONS.filter((d) => d !== "day").map(weekDimensionSelect).join("\n    UNION ALL")}
  )
  INSERT INTO usage_weekly_rollup_weeks (week, days_refreshed_at)
  SELECT $week::date, max(refreshed_at) FROM usage_daily_rollup_days WHERE day >= $week::date AND day < $week::date + 7
  ON CONFLICT (week) DO UPDATE SET days_refreshed_at = excluded.days_refreshed_at`

const WEEK_INSERT_BOUND = bind(WEEK_INSERT, ["week"])

/** Build one week's rows again; false when another node holds that week's lock. */
const computeWeek = (sql: SqlClient.SqlClient, weekMs: number): Effect.Effect<boolean, SqlError.SqlError> =>
  sql.withTransaction(Effect.gen(function*() {
    const locked = yield* sql<{ ok: boolean }>`SELECT pg_try_advisory_xact_lock(${WEEK_LOCK}::int, ${weekMs / DAY_MS}::int) AS ok`
    if (locked[0]?.ok !== true) return false
    yield* sql`DELETE FROM usage_weekly_rollup_dim WHERE week = ${dayName(weekMs)}::date`
    yield* sql.unsafe(WEEK_INSERT_BOUND, [dayName(weekMs)])
    return true
  }))

/**
 * Every closed week inside the retention window whose 7 days are rolled up and whose week rows are
 * missing or older than one of its days' refresh: built again from the fine rollup.
 */
const refreshWeeks = (sql: SqlClient.SqlClient, today: number, oldest: number) =>
  Effect.gen(function*() {
    const due = yield* sql<{ week: string }>`
      SELECT to_char(w.week, 'YYYY-MM-DD') AS week FROM (
        SELECT day - (extract(isodow FROM day)::int - 1) AS week, count(*) AS days, max(refreshed_at) AS newest
        FROM usage_daily_rollup_days GROUP BY 1) w
      LEFT JOIN usage_weekly_rollup_weeks k ON k.week = w.week
      WHERE w.days = 7 AND w.week >= ${dayName(oldest)}::date AND w.week + 7 <= ${dayName(today)}::date
        AND (k.week IS NULL OR k.days_refreshed_at < w.newest)
      ORDER BY 1`
    const built: Array<string> = []
    for (const { week } of due) {
      if (yield* computeWeek(sql, Date.parse(`${week}T00:00:00Z`))) built.push(week)
    }
    return built
  })

/** Recompute one UTC day (starting at `dayMs`); undefined when another node holds that day's lock. */
const computeDay = (sql: SqlClient.SqlClient, dayMs: number): Effect.Effect<number | undefined, SqlError.SqlError> =>
  sql.withTransaction(Effect.gen(function*() {
    const locked = yield* sql<{ ok: boolean }>`SELECT pg_try_advisory_xact_lock(${ROLLUP_LOCK}::int, ${dayMs / DAY_MS}::int) AS ok`
    if (locked[0]?.ok !== true) return undefined
    const day = dayName(dayMs)
    yield* sql`DELETE FROM usage_daily_rollup WHERE day = ${day}::date`
    yield* sql`DELETE FROM usage_daily_rollup_dim WHERE day = ${day}::date`
    const written = yield* sql.unsafe<{ rows: number }>(DAY_INSERT_BOUND, [
      new Date(dayMs).toISOString(), new Date(dayMs + DAY_MS).toISOString(), day
    ])
    return written[0]?.rows ?? 0
  }))

/**
 * Recompute the given UTC days (epoch ms inside each), whatever their state (an operator's
 * backfill), then build again every week whose days changed.
 */
export const refreshUsageRollupDays = (days: ReadonlyArray<number>, options: Pick<RollupRefreshOptions, "now" | "retentionDays"> = {}) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const done: Array<string> = []
    const busy: Array<string> = []
    let rows = 0
    for (const dayMs of new Set(days.map(dayStart))) {
      const counted = yield* computeDay(sql, dayMs)
      if (counted === undefined) busy.push(dayName(dayMs))
      else {
        done.push(dayName(dayMs))
        rows += counted
      }
    }
    const today = dayStart(options.now ?? Date.now())
    const weeks = yield* refreshWeeks(sql, today, today - (options.retentionDays ?? DEFAULT_RETENTION_DAYS) * DAY_MS)
    return { days: done, busy, rows, weeks, pruned: 0 } satisfies RollupRefreshResult
  })

/** One refresh run (see the module doc): never-rolled-up days, changed recent days, pruning. */
export const refreshUsageRollup = (options: RollupRefreshOptions = {}) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const today = dayStart(options.now ?? Date.now())
    const oldest = today - (options.retentionDays ?? DEFAULT_RETENTION_DAYS) * DAY_MS
    const lagFrom = Math.max(oldest, today - (options.lagDays ?? DEFAULT_LAG_DAYS) * DAY_MS)
    const rolled = yield* sql<{ day: string; rows: number }>`
      SELECT to_char(day, 'YYYY-MM-DD') AS day, source_rows::float8 AS rows
      FROM usage_daily_rollup_days WHERE day >= ${dayName(oldest)}::date AND day < ${dayName(today)}::date`
    const rolledRows = new Map(rolled.map((r) => [r.day, r.rows]))
    const recent = yield* sql<{ day: string; rows: number }>`
      SELECT to_char((created_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS day, count(*)::float8 AS rows
      FROM usage_logs WHERE created_at >= ${new Date(lagFrom).toISOString()}::timestamptz
        AND created_at < ${new Date(today).toISOString()}::timestamptz
      GROUP BY 1`
    const recentRows = new Map(recent.map((r) => [r.day, r.rows]))
    const due: Array<number> = []
    for (let dayMs = oldest; dayMs < today; dayMs += DAY_MS) {
      const day = dayName(dayMs)
      const rows = rolledRows.get(day)
      // More rows than rolled up: a late row. Fewer: rows dropped (a partition past usage retention), and
      // recomputing would lose what the rollup still knows of them.
      if (rows === undefined || (dayMs >= lagFrom && (recentRows.get(day) ?? 0) > rows)) due.push(dayMs)
    }
    const result = yield* refreshUsageRollupDays(due, options)
    yield* sql`DELETE FROM usage_daily_rollup WHERE day < ${dayName(oldest)}::date`
    yield* sql`DELETE FROM usage_daily_rollup_dim WHERE day < ${dayName(oldest)}::date`
    const pruned = yield* sql`DELETE FROM usage_daily_rollup_days WHERE day < ${dayName(oldest)}::date RETURNING day`
    yield* sql`DELETE FROM usage_weekly_rollup_dim WHERE week < ${dayName(oldest)}::date`
    yield* sql`DELETE FROM usage_weekly_rollup_weeks WHERE week < ${dayName(oldest)}::date`
    return { ...result, pruned: pruned.length } satisfies RollupRefreshResult
  }).pipe(Effect.withSpan("UsageRollup.refresh"))

/** mv_usage_daily again from the rollup, without blocking its readers. */
export const refreshUsageDailyView = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`REFRESH MATERIALIZED VIEW CONCURRENTLY mv_usage_daily`
}).pipe(Effect.withSpan("UsageRollup.refreshView"))

export interface RollupScheduleOptions extends Omit<RollupRefreshOptions, "now"> {
  /** Pause between runs (default 10 minutes); the first run starts at once. */
  readonly interval?: Duration.Input
}

/**
 * The rollup refreshed on a Schedule by a fiber scoped to the Layer, then mv_usage_daily: on the
 * first run (a previous process may have stopped between the two) and whenever a run changed the
 * rollup (a refresh of the view re-aggregates the whole fine rollup: ~30 s at 10 M usage rows, too
 * much to repeat for nothing). A failed run is logged and the next one tries again. Needs the
 * writer (`SqlClient`) and a migrated schema.
 */
export const UsageRollupSchedule = (options: RollupScheduleOptions = {}): Layer.Layer<never, never, SqlClient.SqlClient> =>
  Layer.effectDiscard(Effect.gen(function*() {
    let viewCurrent = false
    const run = Effect.gen(function*() {
      const r = yield* refreshUsageRollup(options)
      if (r.days.length > 0) yield* Effect.logInfo("usage rollup refreshed", { days: r.days.length, weeks: r.weeks.length, rows: r.rows })
      if (!viewCurrent || r.days.length > 0 || r.pruned > 0) {
        viewCurrent = false
        yield* refreshUsageDailyView
        viewCurrent = true
      }
    }).pipe(
      Effect.catchCause((cause) => Effect.logWarning("usage rollup refresh failed", cause)),
      withModule("rollup")
    )
    yield* run.pipe(Effect.repeat(Schedule.spaced(options.interval ?? "10 minutes")), Effect.forkScoped)
  }))
