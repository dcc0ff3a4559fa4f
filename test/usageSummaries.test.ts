import { assert, describe, expect, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { startEmbeddedPostgres } from "../src/layers/EmbeddedPostgres.ts"
import { migrate } from "../src/layers/migrations/index.ts"
import { refreshUsageDailyView, refreshUsageRollup } from "../src/layers/rollup/UsageRollupLive.ts"
import { UsageSummariesLive } from "../src/layers/rollup/UsageSummariesLive.ts"
import { SUMMARY_GROUPINGS, type SummaryGroupBy, UsageSummaries, type UsageSummary } from "../src/services/UsageSummaries.ts"
import { freshPgLayer } from "./support/services.ts"
import { ReaderSqlFromWriter } from "../src/layers/DatabaseLive.ts"

const DAY = 86_400_000
const HOUR = 3_600_000
const NOW = Date.now()
const TODAY = Math.floor(NOW / DAY) * DAY
/** The Monday of a whole week of test rows, 8 to 14 days back (1970-01-01 was a Thursday). */
const WEEK = (Math.floor((TODAY - 8 * DAY) / DAY) - ((Math.floor((TODAY - 8 * DAY) / DAY) + 3) % 7)) * DAY
const KEY_A = randomUUID()
const KEY_B = randomUUID()
const KEY_EMPTY = randomUUID()

/**
 * `n` usage rows of `key` spread at random over [start, start + span): several services, endpoints,
 * assets (some null), sources, statuses (errors among them) and latencies from 0 to ~160 ms.
 */
const insertRows = (key: string, n: number, start: number, span: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`
      INSERT INTO usage_logs (id, request_id, api_key_id, service, protocol, endpoint, asset, quote, source, price,
                              status_code, error_code, latency_us, client_ip, node, region, bytes_out, created_at)
      SELECT gen_random_uuid(), 'r-' || g, ${key}::uuid, (ARRAY['LPO', 'LPO', 'LRS'])[1 + g % 3], 'http',
             (ARRAY['/price', '/prices', '/reports/usage', 'price'])[1 + (g / 3) % 4],
             (ARRAY['BTC', 'ETH', 'SOL', NULL])[1 + (g / 5) % 4], 'USD',
             (ARRAY['consensus', 'kraken', NULL])[1 + (g / 7) % 3], 97000,
             (ARRAY[200, 200, 200, 200, 404, 429, 500])[1 + (g / 11) % 7], NULL,
             CASE WHEN g % 50 = 0 THEN 0 ELSE floor(exp(random() * 12))::int END,
             '10.0.0.1', 'n', 'local', 100 + g % 900,
             ${new Date(start).toISOString()}::timestamptz + random() * (${String(span)} || ' milliseconds')::interval
      FROM generate_series(1, ${n}::int) g`
  })

const GROUP_SQL: Record<SummaryGroupBy, string> = {
  day: "to_char((created_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD')",
  asset: "asset",
  source: "source",
  service: "service",
  endpoint: "endpoint",
  status: "status_code::text"
}

interface Exact {
  readonly grp: string | null
  readonly requests: number
  readonly errors: number
  readonly bytes_out: number
  readonly p50: number
  readonly p95: number
  readonly p99: number
}

/** The same summary computed exactly by PostgreSQL over usage_logs (percentile_disc). */
const exactSummary = (key: string, from: number, to: number, groupBy: SummaryGroupBy) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const groups = yield* sql.unsafe<Exact>(`
      SELECT ${GROUP_SQL[groupBy]} AS grp, count(*)::float8 AS requests, count(*) FILTER (WHERE status_code >= 400)::float8 AS errors,
             sum(bytes_out)::float8 AS bytes_out,
             percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_us) AS p50,
             percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_us) AS p95,
             percentile_disc(0.99) WITHIN GROUP (ORDER BY latency_us) AS p99
      FROM usage_logs WHERE api_key_id = $1::uuid AND created_at >= $2::timestamptz AND created_at < $3::timestamptz
      GROUP BY 1`, [key, new Date(from).toISOString(), new Date(to).toISOString()])
    const through = yield* sql.unsafe<{ ms: number | null }>(`
      SELECT floor(extract(epoch FROM max(created_at)) * 1000)::float8 AS ms FROM usage_logs
      WHERE api_key_id = $1::uuid AND created_at >= $2::timestamptz AND created_at < $3::timestamptz`,
      [key, new Date(from).toISOString(), new Date(to).toISOString()])
    return { groups, dataThrough: through[0]?.ms ?? null }
  })

const summary = (apiKeyId: string, from: number, to: number, groupBy: SummaryGroupBy) =>
  Effect.flatMap(UsageSummaries, (s) => s.summary({ apiKeyId, from, to, groupBy }))

const withinOnePercent = (actual: number | null, exact: number, what: string) => {
  assert.isNotNull(actual, what)
  assert.isAtMost(Math.abs(actual! - exact), exact * 0.01, `${what}: ${actual} vs percentile_disc ${exact}`)
}

/** The service's answer agrees with PostgreSQL's exact one: counts equal, percentiles within 1 %. */
const checkAgainstExact = (answer: UsageSummary, exact: { groups: ReadonlyArray<Exact>; dataThrough: number | null }, what: string) => {
  const answered = new Map(answer.groups.map((g) => [g.group, g]))
  assert.strictEqual(answered.size, answer.groups.length, `${what}: one row per group`)
  for (const e of exact.groups) {
    const got = answered.get(e.grp)
    assert.isDefined(got, `${what}: group ${e.grp}`)
    assert.deepStrictEqual([got!.requests, got!.errors, got!.bytes_out], [e.requests, e.errors, e.bytes_out], `${what}: ${e.grp} counts`)
    withinOnePercent(got!.p50_us, e.p50, `${what}: ${e.grp} p50`)
    withinOnePercent(got!.p95_us, e.p95, `${what}: ${e.grp} p95`)
    withinOnePercent(got!.p99_us, e.p99, `${what}: ${e.grp} p99`)
  }
  // Any other group answered is an empty day (zero-filled), never rows from elsewhere.
  const exactGroups = new Set(exact.groups.map((e) => e.grp))
  for (const g of answer.groups.filter((g) => !exactGroups.has(g.group))) {
    assert.deepStrictEqual(g, { group: g.group, requests: 0, errors: 0, bytes_out: 0, p50_us: null, p95_us: null, p99_us: null }, `${what}: extra group`)
  }
  assert.strictEqual(answer.data_through, exact.dataThrough, `${what}: data_through`)
}

const WINDOWS: ReadonlyArray<readonly [string, number, number]> = [
  ["whole days", TODAY - 7 * DAY, TODAY - 2 * DAY],
  ["partial edge days", TODAY - 8 * DAY + 5 * HOUR + 17 * 60_000 + 123, TODAY - DAY + 3 * HOUR],
  ["inside one day", TODAY - 3 * DAY + HOUR, TODAY - 3 * DAY + 2.5 * HOUR],
  ["most of one day", TODAY - 3 * DAY + HOUR, TODAY - 2 * DAY - 2 * HOUR],
  ["most of the last day", TODAY - 5 * DAY, TODAY - DAY - 2 * HOUR],
  ["up to now (today raw)", TODAY - 6 * DAY + 1, NOW + 1],
  ["today only", TODAY, NOW + 1],
  ["a whole week (from its rollup) and edges", WEEK - DAY + 3 * HOUR, WEEK + 7 * DAY + 5 * HOUR],
  ["exactly a whole week", WEEK, WEEK + 7 * DAY],
  ["all and beyond", TODAY - 20 * DAY, NOW + HOUR]
]

describe("UsageSummaries (real PostgreSQL)", () => {
  const PgLive = freshPgLayer("usage_summaries", 4)
  const TestLive = UsageSummariesLive.pipe(
    Layer.provideMerge(ReaderSqlFromWriter),
    Layer.provideMerge(PgLive)
  )

  it.live("counts equal SQL and p50/p95/p99 are within 1 % of percentile_disc, for every grouping and window", () =>
    Effect.gen(function*() {
      yield* migrate
      yield* insertRows(KEY_A, 40_000, TODAY - 16 * DAY, NOW - (TODAY - 16 * DAY))
      yield* insertRows(KEY_B, 10_000, TODAY - 16 * DAY, NOW - (TODAY - 16 * DAY))
      const refreshed = yield* refreshUsageRollup({ now: NOW })
      assert.isAtLeast(refreshed.days.length, 16)
      // At least one whole ISO week (Monday to Sunday) of rows is closed, so the week rows get built and read.
      assert.include(refreshed.weeks, new Date(WEEK).toISOString().slice(0, 10))
      for (const [name, from, to] of WINDOWS) {
        for (const groupBy of SUMMARY_GROUPINGS) {
          const answer = yield* summary(KEY_A, from, to, groupBy)
          checkAgainstExact(answer, yield* exactSummary(KEY_A, from, to, groupBy), `${name} by ${groupBy}`)
        }
      }
    }).pipe(Effect.provide(TestLive)), 120_000)

  it.live("never counts another key's rows", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const [count] = yield* sql<{ a: number; all: number }>`
        SELECT count(*) FILTER (WHERE api_key_id = ${KEY_A}::uuid)::float8 AS a, count(*)::float8 AS all FROM usage_logs`
      for (const groupBy of SUMMARY_GROUPINGS) {
        const answer = yield* summary(KEY_A, TODAY - 20 * DAY, NOW + 1, groupBy)
        assert.strictEqual(answer.groups.reduce((n, g) => n + g.requests, 0), count!.a, groupBy)
      }
      assert.isAbove(count!.all, count!.a)
      const none = yield* summary(KEY_EMPTY, TODAY - 20 * DAY, NOW + 1, "asset")
      assert.deepStrictEqual(none, { groups: [], data_through: null })
    }).pipe(Effect.provide(TestLive)))

  it.live("by day lists every UTC day of the window, zero-filled, ascending", () =>
    Effect.gen(function*() {
      const from = TODAY - 25 * DAY + 7 * HOUR
      const answer = yield* summary(KEY_A, from, NOW + 1, "day")
      const days = Array.from({ length: 26 }, (_, i) => new Date(TODAY - (25 - i) * DAY).toISOString().slice(0, 10))
      assert.deepStrictEqual(answer.groups.map((g) => g.group), days)
      for (const g of answer.groups.slice(0, 9)) {
        assert.deepStrictEqual(g, { group: g.group, requests: 0, errors: 0, bytes_out: 0, p50_us: null, p95_us: null, p99_us: null })
      }
      for (const g of answer.groups.slice(9)) assert.isAbove(g.requests, 0, g.group ?? "")
      const empty = yield* summary(KEY_EMPTY, TODAY - 2 * DAY, TODAY + 1, "day")
      expect(empty.groups.map((g) => [g.group, g.requests])).toEqual([
        [new Date(TODAY - 2 * DAY).toISOString().slice(0, 10), 0],
        [new Date(TODAY - DAY).toISOString().slice(0, 10), 0],
        [new Date(TODAY).toISOString().slice(0, 10), 0]
      ])
      // An empty window has no days; a window ending at a midnight does not list the next day.
      assert.deepStrictEqual((yield* summary(KEY_A, TODAY, TODAY, "day")).groups, [])
      assert.strictEqual((yield* summary(KEY_A, TODAY - DAY, TODAY, "day")).groups.length, 1)
    }).pipe(Effect.provide(TestLive)))
})

describe("UsageSummaries on the embedded database (PGlite behind its socket)", () => {
  it.live("rolls up and answers the same way: counts equal SQL, percentiles within 1 % of percentile_disc", () =>
    Effect.gen(function*() {
      const { url, password } = yield* startEmbeddedPostgres(mkdtempSync(join(tmpdir(), "tb-summaries-")))
      const EmbeddedLive = UsageSummariesLive.pipe(
        Layer.provideMerge(ReaderSqlFromWriter),
        Layer.provideMerge(PgClient.layer({ url: Redacted.make(url), password, maxConnections: 2 }))
      )
      yield* Effect.gen(function*() {
        yield* migrate
        yield* insertRows(KEY_A, 3000, TODAY - 4 * DAY, NOW - (TODAY - 4 * DAY))
        yield* insertRows(KEY_B, 500, TODAY - 4 * DAY, NOW - (TODAY - 4 * DAY))
        assert.isAtLeast((yield* refreshUsageRollup({ now: NOW })).days.length, 4)
        // mv_usage_daily refreshes CONCURRENTLY there too, and holds the closed days' rows.
        yield* refreshUsageDailyView
        const sql = yield* SqlClient.SqlClient
        const [view] = yield* sql<{ view: number; raw: number }>`
          SELECT (SELECT sum(requests) FROM mv_usage_daily)::float8 AS view,
                 (SELECT count(*) FROM usage_logs WHERE created_at < ${new Date(TODAY).toISOString()}::timestamptz)::float8 AS raw`
        assert.strictEqual(view!.view, view!.raw)
        for (const groupBy of ["day", "asset", "status"] as const) {
          const from = TODAY - 3 * DAY + 5 * HOUR
          const answer = yield* summary(KEY_A, from, NOW + 1, groupBy)
          checkAgainstExact(answer, yield* exactSummary(KEY_A, from, NOW + 1, groupBy), `embedded by ${groupBy}`)
        }
      }).pipe(Effect.provide(EmbeddedLive))
    }).pipe(Effect.scoped), 120_000)
})
