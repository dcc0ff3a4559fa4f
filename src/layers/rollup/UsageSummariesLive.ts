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
import { DAY_MS, DIMENSION_VALUE_SQL, dayName, dayStart } from "./dimensions.ts"

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
 * The rolled-up days of [first, end) (every one listed, with this key's rows of the dimension when
 * it has any), in one statement, so a refresh committing meanwhile cannot make a day both rolled up
 * and read raw, nor neither.
 */
const ROLLUP_ROWS = `
  SELECT to_char(d.day, 'YYYY-MM-DD') AS day, r.value, r.requests::float8 AS requests, r.errors::float8 AS errors,
         r.bytes_out::float8 AS bytes_out, r.last_at, r.latency_sketch
  FROM usage_daily_rollup_days d
  LEFT JOIN usage_daily_rollup_dim r ON r.api_key_id = $1::uuid AND r.dimension = $2 AND r.day = d.day
  WHERE d.day >= $3::date AND d.day < $4::date`

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

    // Whole UTC days inside the window: from the rollup where it has them.
    const firstWhole = Math.ceil(from / DAY_MS) * DAY_MS
    const endWhole = dayStart(to)
    const rawRanges: Array<readonly [number, number]> = []
    if (firstWhole < endWhole) {
      const rows = yield* sql.unsafe<RollupRow>(ROLLUP_ROWS, [apiKeyId, groupBy, dayName(firstWhole), dayName(endWhole)])
      const rolled = new Set<string>()
      for (const row of rows) {
        rolled.add(row.day)
        if (row.requests === null || row.latency_sketch === null) continue
        const group = groupOf(groupBy === "day" ? row.day : row.value)
        group.requests += row.requests
        group.errors += row.errors ?? 0
        group.bytesOut += row.bytes_out ?? 0
        forEachPackedPair(row.latency_sketch, (bucket, count) => addCount(group, bucket, count))
        seen(row.last_at)
      }
      rawRanges.push([from, firstWhole], [endWhole, to])
      for (let day = firstWhole; day < endWhole; day += DAY_MS) {
        if (!rolled.has(dayName(day))) rawRanges.push([day, day + DAY_MS])
      }
    } else {
      rawRanges.push([from, to])
    }

    // Partial edge days and days not rolled up yet: usage_logs, counted per latency bucket in SQL.
    const rawStatement = RAW_BUCKETS(groupBy)
    for (const [start, end] of joinRanges(rawRanges)) {
      const rows = yield* sql.unsafe<RawBucketRow>(rawStatement, [apiKeyId, new Date(start).toISOString(), new Date(end).toISOString()])
      for (const row of rows) {
        const group = groupOf(row.value)
        group.requests += row.n
        group.errors += row.errors
        group.bytesOut += row.bytes_out
        addCount(group, row.bucket, row.n)
        seen(row.last_at)
      }
    }

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
    const keys = [...groups.keys()].sort((a, b) => (a === null ? 1 : b === null ? -1 : a < b ? -1 : a > b ? 1 : 0))
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
