import { Effect, Layer } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import { bucketOf, bucketSql, forEachPackedPair, type LatencySketch, quantile, ZERO_BUCKET } from "../../domain/latencySketch.ts"
import { ReaderSql } from "../../services/Database.ts"
import {
  type SummaryGroup,
  type SummaryGroupBy,
  type SummaryQuery,
  UsageSummaries,
  UsageSummariesError,
  type UsageSummary
} from "../../services/UsageSummaries.ts"
import { DAY_MS, DIMENSION_VALUE_SQL, dayName, dayStart, WEEK_MS, weekStart } from "./dimensions.ts"

/**
 * One group's totals while they are being added up (from rollup rows and raw buckets). Bucket
 * counts sit in a dense array indexed by bucket + 1 (latency_us is int4: buckets -1 to ~2690), much
 * cheaper than a Map when 93 days of a few hundred buckets each are added.
 */
interface Accumulator {
  requests: number
  errors: number
  bytesOut: number
  counts: Float64Array
}

const INITIAL_BUCKETS = bucketOf(2 ** 31) + 2

const addCount = (group: Accumulator, bucket: number, count: number) => {
  const at = bucket - ZERO_BUCKET
  if (at >= group.counts.length) {
    const grown = new Float64Array(at + 1)
    grown.set(group.counts)
    group.counts = grown
  }
  group.counts[at] = group.counts[at]! + count
}

const sketchOfCounts = (counts: Float64Array): LatencySketch => {
  const buckets: Array<number> = []
  const nonZero: Array<number> = []
  for (let i = 0; i < counts.length; i++) {
    if (counts[i] !== 0) {
      buckets.push(i + ZERO_BUCKET)
      nonZero.push(counts[i]!)
    }
  }
  return { buckets, counts: nonZero }
}

interface RollupRow {
  readonly day: string
  readonly value: string | null
  readonly requests: number | null
  readonly errors: number | null
  readonly bytes_out: number | null
  readonly last_at: Date | null
  readonly latency_sketch: Uint8Array | null
}

interface RawBucketRow {
  readonly value: string | null
  readonly bucket: number
  readonly n: number
  readonly errors: number
  readonly bytes_out: number
  readonly last_at: Date
}

/** The group a raw usage row falls in: the day's name for `day`, else the dimension's value. */
const rawGroupSql = (groupBy: SummaryGroupBy): string =>
  groupBy === "day" ? "to_char((created_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD')" : DIMENSION_VALUE_SQL[groupBy]

const RAW_BUCKETS = (groupBy: SummaryGroupBy) => `
  SELECT ${rawGroupSql(groupBy)} AS value, ${bucketSql("latency_us")} AS bucket, count(*)::float8 AS n,
         count(*) FILTER (WHERE status_code >= 400)::float8 AS errors, coalesce(sum(bytes_out), 0)::float8 AS bytes_out,
         max(created_at) AS last_at
  FROM usage_logs WHERE api_key_id = $1::uuid AND created_at >= $2::timestamptz AND created_at < $3::timestamptz
  GROUP BY 1, 2`

/**
 * The rolled-up days of [first, end) outside the weeks already read ($5): every one listed, with
 * this key's rows of the dimension when it has any.
 */
const ROLLUP_ROWS = `
  SELECT to_char(d.day, 'YYYY-MM-DD') AS day, r.value, r.requests::float8 AS requests, r.errors::float8 AS errors,
         r.bytes_out::float8 AS bytes_out, r.last_at, r.latency_sketch
  FROM usage_daily_rollup_days d
  LEFT JOIN usage_daily_rollup_dim r ON r.api_key_id = $1::uuid AND r.dimension = $2 AND r.day = d.day
  WHERE d.day >= $3::date AND d.day < $4::date AND d.day - (extract(isodow FROM d.day)::int - 1) <> ALL($5::date[])`

/** The built weeks inside [first, end) (Mondays), with this key's week rows of the dimension when it has any. */
const WEEK_ROWS = `
  SELECT to_char(w.week, 'YYYY-MM-DD') AS day, r.value, r.requests::float8 AS requests, r.errors::float8 AS errors,
         r.bytes_out::float8 AS bytes_out, r.last_at, r.latency_sketch
  FROM usage_weekly_rollup_weeks w
  LEFT JOIN usage_weekly_rollup_dim r ON r.api_key_id = $1::uuid AND r.dimension = $2 AND r.week = w.week
  WHERE w.week >= $3::date AND w.week + 7 <= $4::date`

/**
 * The key's row count on one day (epoch ms bounds $2, $3) and its newest created_at in the part
 * [$4, $5) of that day: an index-only count, far cheaper than reading the rows.
 */
const DAY_CHECK = `
  SELECT count(*)::float8 AS n, max(created_at) FILTER (WHERE created_at >= $4::timestamptz AND created_at < $5::timestamptz) AS last_at
  FROM usage_logs WHERE api_key_id = $1::uuid AND created_at >= $2::timestamptz AND created_at < $3::timestamptz`

/** [start, end) ranges of epoch ms, adjacent ones joined. */
const joinRanges = (ranges: ReadonlyArray<readonly [number, number]>): Array<readonly [number, number]> => {
  const joined: Array<[number, number]> = []
  for (const [start, end] of [...ranges].filter(([s, e]) => e > s).sort((a, b) => a[0] - b[0])) {
    const last = joined[joined.length - 1]
    if (last !== undefined && start <= last[1]) last[1] = Math.max(last[1], end)
    else joined.push([start, end])
  }
  return joined
}

const storage = (e: SqlError.SqlError) => new UsageSummariesError({ reason: "Storage", message: e.message })

/** The summary (see UsageSummaries) read through `sql` (the reader pool). */
export const makeSummary = (sql: SqlClient.SqlClient) => (query: SummaryQuery): Effect.Effect<UsageSummary, UsageSummariesError> =>
  Effect.gen(function*() {
    const { apiKeyId, from, to, groupBy } = query
    if (!Number.isFinite(from) || !Number.isFinite(to) || to < from) {
      return yield* new UsageSummariesError({ reason: "BadWindow", message: `no window from ${from} to ${to}` })
    }
    const groups = new Map<string | null, Accumulator>()
    let dataThrough: number | null = null
    const groupOf = (key: string | null): Accumulator => {
      let group = groups.get(key)
      if (group === undefined) {
        group = { requests: 0, errors: 0, bytesOut: 0, counts: new Float64Array(INITIAL_BUCKETS) }
        groups.set(key, group)
      }
      return group
    }
    const seen = (lastAt: Date | null) => {
      if (lastAt !== null && (dataThrough === null || lastAt.getTime() > dataThrough)) dataThrough = lastAt.getTime()
    }
    /** Adds (sign 1) or takes away (sign -1) one rollup row's totals. */
    const addRollupRow = (row: RollupRow, sign: 1 | -1) => {
      if (row.requests === null || row.latency_sketch === null) return
      const group = groupOf(groupBy === "day" ? row.day : row.value)
      group.requests += sign * row.requests
      group.errors += sign * (row.errors ?? 0)
      group.bytesOut += sign * (row.bytes_out ?? 0)
      forEachPackedPair(row.latency_sketch, (bucket, count) => addCount(group, bucket, sign * count))
    }
    const rawStatement = RAW_BUCKETS(groupBy)
    /** Adds (sign 1) or takes away (sign -1) the key's usage_logs rows in [start, end), per group and bucket. */
    const addRaw = (start: number, end: number, sign: 1 | -1) =>
      sql.unsafe<RawBucketRow>(rawStatement, [apiKeyId, new Date(start).toISOString(), new Date(end).toISOString()]).pipe(
        Effect.map((rows) => {
          for (const row of rows) {
            const group = groupOf(row.value)
            group.requests += sign * row.n
            group.errors += sign * row.errors
            group.bytesOut += sign * row.bytes_out
            addCount(group, row.bucket, sign * row.n)
            if (sign === 1) seen(row.last_at)
          }
        })
      )

    // Every UTC day the window touches: a whole day from the rollup when it has it; a partial day
    // covering most of a rolled-up day as the rollup minus the rest of the day read raw (when the
    // key's row count shows the rollup has every row of that day, i.e. no late row since); any
    // other part from usage_logs. One snapshot for all statements (repeatable read), so a refresh
    // or a row committed meanwhile cannot be half seen.
    const read = Effect.gen(function*() {
      yield* sql`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`
      const firstDay = dayStart(from)
      const endDay = dayStart(to) === to ? to : dayStart(to) + DAY_MS
      // Whole ISO weeks inside the window (not for day): one merged row per value instead of seven.
      const weeks = new Set<number>()
      const firstWhole = Math.ceil(from / DAY_MS) * DAY_MS
      const firstWeek = weekStart(firstWhole) === firstWhole ? firstWhole : weekStart(firstWhole) + WEEK_MS
      if (groupBy !== "day" && firstWeek + WEEK_MS <= dayStart(to)) {
        const weekRows = yield* sql.unsafe<RollupRow>(WEEK_ROWS, [apiKeyId, groupBy, dayName(firstWeek), dayName(dayStart(to))])
        for (const row of weekRows) {
          weeks.add(Date.parse(`${row.day}T00:00:00Z`))
          addRollupRow(row, 1)
          seen(row.last_at)
        }
      }
      const rows = yield* sql.unsafe<RollupRow>(ROLLUP_ROWS, [
        apiKeyId, groupBy, dayName(firstDay), dayName(endDay), `{${[...weeks].map(dayName).join(",")}}`
      ])
      const rolled = new Map<string, Array<RollupRow>>()
      for (const row of rows) {
        const list = rolled.get(row.day) ?? []
        if (row.requests !== null) list.push(row)
        rolled.set(row.day, list)
      }
      const rawRanges: Array<readonly [number, number]> = []
      for (let day = firstDay; day < endDay; day += DAY_MS) {
        if (weeks.has(weekStart(day))) continue
        const start = Math.max(from, day)
        const end = Math.min(to, day + DAY_MS)
        const dayRows = rolled.get(dayName(day))
        if (dayRows === undefined) {
          rawRanges.push([start, end])
        } else if (start === day && end === day + DAY_MS) {
          for (const row of dayRows) {
            addRollupRow(row, 1)
            seen(row.last_at)
          }
        } else if (end - start > DAY_MS / 2 && (yield* subtractRest(day, start, end, dayRows))) {
          // counted as the rollup minus the rest of the day
        } else {
          rawRanges.push([start, end])
        }
      }
      for (const [start, end] of joinRanges(rawRanges)) yield* addRaw(start, end, 1)
    })
    /**
     * The part [start, end) of a rolled-up day as its rollup rows minus the key's other rows of
     * that day, if the key's row count in usage_logs still equals the rollup's (usage_logs only
     * gains rows, so equal counts mean the same rows). Answers false (nothing added) otherwise.
     */
    const subtractRest = (day: number, start: number, end: number, dayRows: ReadonlyArray<RollupRow>) =>
      Effect.gen(function*() {
        const rolledRequests = dayRows.reduce((n, row) => n + (row.requests ?? 0), 0)
        const [check] = yield* sql.unsafe<{ n: number; last_at: Date | null }>(DAY_CHECK, [
          apiKeyId, new Date(day).toISOString(), new Date(day + DAY_MS).toISOString(), new Date(start).toISOString(), new Date(end).toISOString()
        ])
        if (check === undefined || check.n !== rolledRequests) return false
        for (const row of dayRows) addRollupRow(row, 1)
        if (start > day) yield* addRaw(day, start, -1)
        if (end < day + DAY_MS) yield* addRaw(end, day + DAY_MS, -1)
        seen(check.last_at)
        return true
      })
    if (to > from) yield* sql.withTransaction(read)

    const summarise = (key: string | null, group: Accumulator | undefined): SummaryGroup => {
      if (group === undefined || group.requests === 0) {
        return { group: key, requests: 0, errors: 0, bytes_out: 0, p50_us: null, p95_us: null, p99_us: null }
      }
      const sketch = sketchOfCounts(group.counts)
      return {
        group: key,
        requests: group.requests,
        errors: group.errors,
        bytes_out: group.bytesOut,
        p50_us: quantile(sketch, 0.5) ?? null,
        p95_us: quantile(sketch, 0.95) ?? null,
        p99_us: quantile(sketch, 0.99) ?? null
      }
    }
    if (groupBy === "day") {
      const days: Array<SummaryGroup> = []
      if (to > from) {
        for (let day = dayStart(from); day < to; day += DAY_MS) days.push(summarise(dayName(day), groups.get(dayName(day))))
      }
      return { groups: days, data_through: dataThrough }
    }
    const keys = [...groups.keys()].filter((key) => (groups.get(key)?.requests ?? 0) > 0).sort((a, b) => (a === null ? 1 : b === null ? -1 : a < b ? -1 : a > b ? 1 : 0))
    return { groups: keys.map((key) => summarise(key, groups.get(key))), data_through: dataThrough }
  }).pipe(
    Effect.catchTag("SqlError", (e) => Effect.fail(storage(e))),
    Effect.withSpan("UsageSummaries.summary", { attributes: { "summary.group_by": query.groupBy } })
  )

/** UsageSummaries over the reader pool. */
export const UsageSummariesLive: Layer.Layer<UsageSummaries, never, ReaderSql> = Layer.effect(
  UsageSummaries,
  Effect.map(ReaderSql, (sql) => UsageSummaries.of({ summary: makeSummary(sql) }))
)
