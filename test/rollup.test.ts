import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"
import { bucketOf, bucketSql, SKETCH_GAMMA, sketchOf, unpackSketch } from "../src/domain/latencySketch.ts"
import { migrate } from "../src/layers/migrations/index.ts"
import { refreshUsageDailyView, refreshUsageRollup, refreshUsageRollupDays, UsageRollupSchedule } from "../src/layers/rollup/UsageRollupLive.ts"
import { UsageSummariesLive } from "../src/layers/rollup/UsageSummariesLive.ts"
import { UsageSummaries } from "../src/services/UsageSummaries.ts"
import { freshPgLayer } from "./support/services.ts"
import { ReaderSqlFromWriter } from "../src/layers/DatabaseLive.ts"

const DAY = 86_400_000
const HOUR = 3_600_000
const NOW = Date.now()
const TODAY = Math.floor(NOW / DAY) * DAY
/** The Monday of a whole closed week of test rows, 8 to 14 days back (1970-01-01 was a Thursday). */
const WEEK = (Math.floor((TODAY - 8 * DAY) / DAY) - ((Math.floor((TODAY - 8 * DAY) / DAY) + 3) % 7)) * DAY
const KEY_A = randomUUID()
const KEY_B = randomUUID()
const dayName = (ms: number) => new Date(ms).toISOString().slice(0, 10)

/** `n` rows of `key` (null: keyless) at random over [start, start + span), varied in every rollup dimension. */
const insertRows = (key: string | null, n: number, start: number, span: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`
      INSERT INTO usage_logs (id, request_id, api_key_id, service, protocol, endpoint, asset, quote, source, price,
                              status_code, error_code, latency_us, client_ip, node, region, bytes_out, created_at)
      SELECT gen_random_uuid(), 'r-' || g, ${key}::uuid, (ARRAY['LPO', 'LRS'])[1 + g % 2], 'udp',
             (ARRAY['/price', 'price'])[1 + (g / 2) % 2], (ARRAY['BTC', NULL])[1 + (g / 4) % 2], 'USD',
             (ARRAY['consensus', NULL])[1 + (g / 8) % 2], 1, (ARRAY[200, 200, 400, 503])[1 + (g / 16) % 4], NULL,
             CASE WHEN g % 40 = 0 THEN 0 ELSE floor(exp(random() * 14))::int END, '10.0.0.2', 'n', 'local', g % 700,
             ${new Date(start).toISOString()}::timestamptz + random() * (${String(span)} || ' milliseconds')::interval
      FROM generate_series(1, ${n}::int) g`
  })

/** One late row of KEY_A at `at` (a row the queued writer or a spool replay commits after its day was rolled up). */
const insertLateRow = (at: number, latencyUs: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`
      INSERT INTO usage_logs (id, request_id, api_key_id, service, protocol, endpoint, asset, quote, source, price,
                              status_code, error_code, latency_us, client_ip, node, region, bytes_out, created_at)
      VALUES (gen_random_uuid(), 'late', ${KEY_A}::uuid, 'LPO', 'http', '/price', 'BTC', 'USD', 'consensus', 1, 200, NULL,
              ${latencyUs}, '10.0.0.3', 'n', 'local', 10, ${new Date(at).toISOString()}::timestamptz)`
  })

/** KEY_A's requests in [from, to) as the summaries answer them (whole rolled-up days from the rollup). */
const summaryRequests = (from: number, to: number) =>
  Effect.flatMap(UsageSummaries, (s) => s.summary({ apiKeyId: KEY_A, from, to, groupBy: "day" })).pipe(
    Effect.map((r) => r.groups.reduce((n, g) => n + g.requests, 0))
  )

const requestsOfDay = (day: number) => summaryRequests(day, day + DAY)

const rawRequests = (from: number, to: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ n: number }>`SELECT count(*)::float8 AS n FROM usage_logs WHERE api_key_id = ${KEY_A}::uuid
      AND created_at >= ${new Date(from).toISOString()}::timestamptz AND created_at < ${new Date(to).toISOString()}::timestamptz`
    return rows[0]?.n ?? -1
  })

const rawRequestsOfDay = (day: number) => rawRequests(day, day + DAY)

interface FineRow {
  readonly key: string | null
  readonly day: string
  readonly asset: string | null
  readonly source: string | null
  readonly service: string
  readonly endpoint: string
  readonly status_code: number
  readonly requests: number
  readonly errors: number
  readonly bytes_out: number
  readonly latency_sum: number
  readonly last_at: Date
  readonly latencies: ReadonlyArray<number>
}

const GROUP_COLUMNS = "api_key_id::text AS key, asset, source, service, endpoint, status_code"
const DIMENSION_COLUMNS: ReadonlyArray<readonly [string, string]> = [
  ["day", "NULL::text"], ["asset", "asset"], ["source", "source"], ["service", "service"], ["endpoint", "endpoint"], ["status", "status_code::text"]
]

describe("usage rollup refresh (real PostgreSQL)", () => {
  const PgLive = freshPgLayer("usage_rollup", 4)
  const TestLive = UsageSummariesLive.pipe(
    Layer.provideMerge(ReaderSqlFromWriter),
    Layer.provideMerge(PgLive)
  )

  it.live("PostgreSQL's bucketSql puts every latency in bucketOf's bucket (bucket edges, 0, 2^31-1)", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const values = new Set<number>([0, 2 ** 31 - 1, 2 ** 31 - 2])
      for (let x = 1; x <= 3000; x++) values.add(x)
      for (let i = 0; SKETCH_GAMMA ** i < 2 ** 31 - 2; i++) {
        const edge = Math.floor(SKETCH_GAMMA ** i)
        for (const x of [edge - 1, edge, edge + 1]) if (x >= 0) values.add(x)
      }
      const rows = yield* sql.unsafe<{ v: number; b: number }>(
        `SELECT v, ${bucketSql("v")} AS b FROM unnest($1::int[]) AS v`, [`{${[...values].join(",")}}`]
      )
      assert.strictEqual(rows.length, values.size)
      const differing = rows.filter((r) => r.b !== bucketOf(r.v))
      assert.deepStrictEqual(differing, [])
    }).pipe(Effect.provide(PgLive)))

  it.live("rolls up every closed day (never today): each group's counts and latency sketch equal SQL over its rows", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* migrate
      yield* insertRows(KEY_A, 8000, TODAY - 15 * DAY, NOW - (TODAY - 15 * DAY))
      yield* insertRows(KEY_B, 3000, TODAY - 15 * DAY, NOW - (TODAY - 15 * DAY))
      yield* insertRows(null, 700, TODAY - 15 * DAY, NOW - (TODAY - 15 * DAY))
      const result = yield* refreshUsageRollup({ now: NOW })
      // First run: every day of the 93-day window, oldest first, today excluded.
      assert.strictEqual(result.days.length, 93)
      assert.strictEqual(result.days[92], dayName(TODAY - DAY))
      // Every closed ISO week whose 7 days are rolled up (all of the 93 days' whole weeks).
      assert.include(result.weeks, dayName(WEEK))
      const closedWeeks: Array<string> = []
      for (let w = WEEK - 20 * 7 * DAY; w + 7 * DAY <= TODAY; w += 7 * DAY) if (w >= TODAY - 93 * DAY) closedWeeks.push(dayName(w))
      assert.deepStrictEqual(result.weeks, closedWeeks)
      assert.strictEqual(result.rows, (yield* sql<{ n: number }>`SELECT count(*)::float8 AS n FROM usage_logs WHERE created_at < ${new Date(TODAY).toISOString()}::timestamptz`)[0]?.n)

      const expected = yield* sql.unsafe<FineRow>(`
        SELECT ${GROUP_COLUMNS}, to_char((created_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS day,
               count(*)::float8 AS requests, count(*) FILTER (WHERE status_code >= 400)::float8 AS errors,
               sum(bytes_out)::float8 AS bytes_out, sum(latency_us)::float8 AS latency_sum, max(created_at) AS last_at,
               array_agg(latency_us) AS latencies
        FROM usage_logs WHERE created_at < $1::timestamptz GROUP BY 1, 2, 3, 4, 5, 6, 7`, [new Date(TODAY).toISOString()])
      const stored = yield* sql<FineRow & { latency_buckets: ReadonlyArray<number>; latency_counts: ReadonlyArray<number> }>`
        SELECT api_key_id::text AS key, asset, source, service, endpoint, status_code, to_char(day, 'YYYY-MM-DD') AS day,
               requests::float8 AS requests, errors::float8 AS errors, bytes_out::float8 AS bytes_out,
               latency_sum::float8 AS latency_sum, last_at, latency_buckets, latency_counts::float8[] AS latency_counts
        FROM usage_daily_rollup`
      const groupId = (r: FineRow) => JSON.stringify([r.key, r.day, r.asset, r.source, r.service, r.endpoint, r.status_code])
      const byGroup = new Map(stored.map((r) => [groupId(r), r]))
      assert.strictEqual(stored.length, expected.length)
      assert.isAbove(expected.length, 100)
      for (const e of expected) {
        const s = byGroup.get(groupId(e))
        assert.isDefined(s, groupId(e))
        assert.deepStrictEqual(
          [s!.requests, s!.errors, s!.bytes_out, s!.latency_sum, s!.last_at.getTime()],
          [e.requests, e.errors, e.bytes_out, e.latency_sum, e.last_at.getTime()], groupId(e))
        assert.deepStrictEqual({ buckets: s!.latency_buckets, counts: s!.latency_counts }, sketchOf(e.latencies), groupId(e))
      }

      // The per-dimension rows: the same totals and sketches as SQL grouped by that one dimension.
      for (const [dimension, column] of DIMENSION_COLUMNS) {
        const exact = yield* sql.unsafe<{ key: string | null; day: string; value: string | null; requests: number; errors: number; latencies: ReadonlyArray<number> }>(`
          SELECT api_key_id::text AS key, to_char((created_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS day, ${column} AS value,
                 count(*)::float8 AS requests, count(*) FILTER (WHERE status_code >= 400)::float8 AS errors, array_agg(latency_us) AS latencies
          FROM usage_logs WHERE created_at < $1::timestamptz GROUP BY 1, 2, 3`, [new Date(TODAY).toISOString()])
        const rows = yield* sql<{ key: string | null; day: string; value: string | null; requests: number; errors: number; latency_sketch: Uint8Array }>`
          SELECT api_key_id::text AS key, to_char(day, 'YYYY-MM-DD') AS day, value, requests::float8 AS requests, errors::float8 AS errors, latency_sketch
          FROM usage_daily_rollup_dim WHERE dimension = ${dimension}`
        const dimId = (r: { key: string | null; day: string; value: string | null }) => JSON.stringify([r.key, r.day, r.value])
        const byId = new Map(rows.map((r) => [dimId(r), r]))
        assert.strictEqual(rows.length, exact.length, dimension)
        for (const e of exact) {
          const r = byId.get(dimId(e))
          assert.isDefined(r, `${dimension} ${dimId(e)}`)
          assert.deepStrictEqual([r!.requests, r!.errors], [e.requests, e.errors], `${dimension} ${dimId(e)}`)
          assert.deepStrictEqual(unpackSketch(r!.latency_sketch), sketchOf(e.latencies), `${dimension} ${dimId(e)}`)
        }
      }
    }).pipe(Effect.provide(PgLive)), 60_000)

  it.live("week rows equal SQL over their 7 days' rows in every dimension but day", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const weeks = (yield* sql<{ week: string }>`SELECT to_char(week, 'YYYY-MM-DD') AS week FROM usage_weekly_rollup_weeks ORDER BY 1`).map((w) => w.week)
      assert.include(weeks, dayName(WEEK))
      for (const [dimension, column] of DIMENSION_COLUMNS.filter(([d]) => d !== "day")) {
        const exact = yield* sql.unsafe<{ key: string | null; value: string | null; requests: number; errors: number; bytes_out: number; latencies: ReadonlyArray<number> }>(`
          SELECT api_key_id::text AS key, ${column} AS value, count(*)::float8 AS requests,
                 count(*) FILTER (WHERE status_code >= 400)::float8 AS errors, sum(bytes_out)::float8 AS bytes_out, array_agg(latency_us) AS latencies
          FROM usage_logs WHERE created_at >= $1::timestamptz AND created_at < $2::timestamptz GROUP BY 1, 2`,
          [new Date(WEEK).toISOString(), new Date(WEEK + 7 * DAY).toISOString()])
        const rows = yield* sql<{ key: string | null; value: string | null; requests: number; errors: number; bytes_out: number; latency_sketch: Uint8Array }>`
          SELECT api_key_id::text AS key, value, requests::float8 AS requests, errors::float8 AS errors, bytes_out::float8 AS bytes_out, latency_sketch
          FROM usage_weekly_rollup_dim WHERE dimension = ${dimension} AND week = ${dayName(WEEK)}::date`
        const byId = new Map(rows.map((r) => [JSON.stringify([r.key, r.value]), r]))
        assert.strictEqual(rows.length, exact.length, dimension)
        for (const e of exact) {
          const id = JSON.stringify([e.key, e.value])
          const r = byId.get(id)
          assert.isDefined(r, `${dimension} ${id}`)
          assert.deepStrictEqual([r!.requests, r!.errors, r!.bytes_out], [e.requests, e.errors, e.bytes_out], `${dimension} ${id}`)
          assert.deepStrictEqual(unpackSketch(r!.latency_sketch), sketchOf(e.latencies), `${dimension} ${id}`)
        }
      }
    }).pipe(Effect.provide(PgLive)))

  it.live("mv_usage_daily is the rollup per day × key × service × asset (errors: status ≥ 400)", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* refreshUsageDailyView
      const view = yield* sql<Record<string, unknown>>`
        SELECT day, api_key_id::text AS key, service, asset, requests::float8 AS requests, errors::float8 AS errors,
               round(avg_latency_us::numeric, 6)::float8 AS avg, bytes_out::float8 AS bytes
        FROM mv_usage_daily ORDER BY 1, 2, 3, 4`
      const exact = yield* sql<Record<string, unknown>>`
        SELECT date_trunc('day', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day, api_key_id::text AS key, service, asset,
               count(*)::float8 AS requests, count(*) FILTER (WHERE status_code >= 400)::float8 AS errors,
               round(avg(latency_us), 6)::float8 AS avg, sum(bytes_out)::float8 AS bytes
        FROM usage_logs WHERE created_at < ${new Date(TODAY).toISOString()}::timestamptz
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4`
      assert.isAbove(exact.length, 20)
      assert.deepStrictEqual(view, exact)
    }).pipe(Effect.provide(PgLive)))

  it.live("late rows: a recent day is recomputed on the next run; older than the lag window only when asked", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual((yield* refreshUsageRollup({ now: NOW })).days, [], "nothing changed, nothing recomputed")
      const yesterday = TODAY - DAY
      const before = yield* requestsOfDay(yesterday)
      assert.strictEqual(before, yield* rawRequestsOfDay(yesterday))
      yield* insertLateRow(yesterday + 1000, 77)
      // The summary of a rolled-up day reads the rollup: the late row counts once the refresh has run.
      assert.strictEqual(yield* requestsOfDay(yesterday), before)
      // Most of that day (the rollup minus the rest of the day, read raw) sees the row count changed
      // and reads the part raw instead: exact, late row or not.
      for (const [from, to] of [[yesterday + HOUR, TODAY], [yesterday, TODAY - HOUR], [yesterday + 1, TODAY - 1]] as const) {
        assert.strictEqual(yield* summaryRequests(from, to), yield* rawRequests(from, to), `${from - yesterday} to ${to - yesterday}`)
      }
      assert.deepStrictEqual((yield* refreshUsageRollup({ now: NOW, lagDays: 3 })).days, [dayName(yesterday)])
      assert.strictEqual(yield* requestsOfDay(yesterday), before + 1)

      const old = TODAY - 5 * DAY
      const oldBefore = yield* requestsOfDay(old)
      yield* insertLateRow(old + 5000, 1_000_000)
      assert.deepStrictEqual((yield* refreshUsageRollup({ now: NOW, lagDays: 3 })).days, [], "beyond the lag window")
      assert.strictEqual(yield* requestsOfDay(old), oldBefore)
      assert.deepStrictEqual((yield* refreshUsageRollup({ now: NOW, lagDays: 6 })).days, [dayName(old)])
      assert.strictEqual(yield* requestsOfDay(old), oldBefore + 1)
      assert.strictEqual(yield* requestsOfDay(old), yield* rawRequestsOfDay(old))
    }).pipe(Effect.provide(TestLive)))

  it.live("a late row in a built week: recomputing its day builds the week again, and summaries by asset count it", () =>
    Effect.gen(function*() {
      const bySource = Effect.flatMap(UsageSummaries, (s) => s.summary({ apiKeyId: KEY_A, from: WEEK, to: WEEK + 7 * DAY, groupBy: "source" })).pipe(
        Effect.map((r) => r.groups.reduce((n, g) => n + g.requests, 0))
      )
      const before = yield* bySource
      assert.strictEqual(before, yield* rawRequests(WEEK, WEEK + 7 * DAY))
      yield* insertLateRow(WEEK + 2 * DAY + 1000, 123)
      const result = yield* refreshUsageRollupDays([WEEK + 2 * DAY], { now: NOW })
      assert.deepStrictEqual([result.days, result.weeks], [[dayName(WEEK + 2 * DAY)], [dayName(WEEK)]])
      assert.strictEqual(yield* bySource, before + 1)
      assert.deepStrictEqual((yield* refreshUsageRollup({ now: NOW, lagDays: 0 })).weeks, [], "nothing changed since")
    }).pipe(Effect.provide(TestLive)))

  it.live("two refreshes of the same days at once count every row once", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const days = [TODAY - 3 * DAY, TODAY - 2 * DAY, TODAY - DAY]
      const results = yield* Effect.all([refreshUsageRollupDays(days), refreshUsageRollupDays(days), refreshUsageRollupDays(days)], { concurrency: 3 })
      assert.isAtLeast(results.reduce((n, r) => n + r.days.length, 0), 3)
      const [totals] = yield* sql<{ rolled: number; raw: number }>`
        SELECT (SELECT sum(requests) FROM usage_daily_rollup WHERE day >= ${dayName(TODAY - 3 * DAY)}::date)::float8 AS rolled,
               (SELECT count(*) FROM usage_logs WHERE created_at >= ${new Date(TODAY - 3 * DAY).toISOString()}::timestamptz
                  AND created_at < ${new Date(TODAY).toISOString()}::timestamptz)::float8 AS raw`
      assert.strictEqual(totals!.rolled, totals!.raw)
    }).pipe(Effect.provide(PgLive)))

  it.live("whole days are read from the rollup, not usage_logs (rows dropped with an old partition stay summarised)", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const day = TODAY - 4 * DAY
      const rolled = yield* requestsOfDay(day)
      assert.isAbove(rolled, 0)
      yield* sql`DELETE FROM usage_logs WHERE created_at >= ${new Date(day).toISOString()}::timestamptz
        AND created_at < ${new Date(day + DAY).toISOString()}::timestamptz`
      assert.strictEqual(yield* requestsOfDay(day), rolled)
      // Fewer rows than rolled up (dropped, not late): the refresh keeps the rollup as it is.
      assert.notInclude((yield* refreshUsageRollup({ now: NOW, lagDays: 6 })).days, dayName(day))
      assert.strictEqual(yield* requestsOfDay(day), rolled)
    }).pipe(Effect.provide(TestLive)))

  it.live("UsageRollupSchedule refreshes on its schedule; mv_usage_daily on its first run and when the rollup changed", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const yesterday = TODAY - DAY
      const viewRequests = sql<{ n: number }>`SELECT coalesce(sum(requests), 0)::float8 AS n FROM mv_usage_daily
        WHERE day = ${new Date(yesterday).toISOString()}::timestamptz AND api_key_id = ${KEY_A}::uuid`.pipe(Effect.map((r) => r[0]?.n ?? -1))
      const waitForView = (expected: number) =>
        Effect.gen(function*() {
          let seen = -1
          for (let i = 0; i < 100 && seen !== expected; i++) {
            yield* Effect.sleep("100 millis")
            seen = yield* viewRequests
          }
          assert.strictEqual(seen, expected)
        })
      // A change only the view's refresh can show (the refresh does not see it as a changed day).
      const tamper = sql`UPDATE usage_daily_rollup SET requests = requests + 1000 WHERE ctid IN (
        SELECT ctid FROM usage_daily_rollup WHERE day = ${dayName(yesterday)}::date AND api_key_id = ${KEY_A}::uuid LIMIT 1)`
      yield* refreshUsageDailyView
      const before = yield* viewRequests
      yield* tamper
      yield* Layer.build(UsageRollupSchedule({ interval: "100 millis", lagDays: 2 }))
      yield* waitForView(before + 1000)
      // Nothing changed for the refresh: five runs later the view has not been refreshed again.
      yield* tamper
      yield* Effect.sleep("500 millis")
      assert.strictEqual(yield* viewRequests, before + 1000)
      // Two late rows one after the other: each is counted by a later run (recomputing the day also undoes the tampering).
      yield* insertLateRow(yesterday + 2000, 5)
      yield* waitForView(before + 1)
      yield* insertLateRow(yesterday + 3000, 6)
      yield* waitForView(before + 2)
    }).pipe(Effect.provide(PgLive)), 30_000)

  it.live("keeps the retention window's days and deletes older ones", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* refreshUsageRollup({ now: NOW, retentionDays: 3 })
      const [range] = yield* sql<{ oldest: string; fine: string; dim: string }>`
        SELECT (SELECT to_char(min(day), 'YYYY-MM-DD') FROM usage_daily_rollup_days) AS oldest,
               (SELECT to_char(min(day), 'YYYY-MM-DD') FROM usage_daily_rollup) AS fine,
               (SELECT to_char(min(day), 'YYYY-MM-DD') FROM usage_daily_rollup_dim) AS dim`
      assert.deepStrictEqual(range, { oldest: dayName(TODAY - 3 * DAY), fine: dayName(TODAY - 3 * DAY), dim: dayName(TODAY - 3 * DAY) })
    }).pipe(Effect.provide(PgLive)))
})
