/**
 * /reports/summary for one key over 93 days of 10 million usage rows, on the machine's real
 * PostgreSQL (127.0.0.1:5432, user postgres), in a fresh database migrated with the project's
 * migrations (created by the benchmark; dropped unless --keep):
 * - load: day partitions for the 93 days, then `INSERT … SELECT generate_series` (in day-sized
 *   statements): half the rows are one heavy key's, the rest spread over 999 keys; 20 assets (a few
 *   popular), mostly the consensus source, mostly LPO /price, ~3 % errors, log-normal latencies;
 * - the rollup refresh of every closed day (timed: what the first refresh of a full database costs);
 * - the summary (`UsageSummaries`' implementation, on its own pool as the reader) of the heavy key:
 *   `whole days` is 93 UTC days midnight to midnight (rollup only, the target); `to now` is
 *   [now − 93 days, now), as a default-ish request asks, so the partial first day and today are
 *   read from usage_logs too. Each grouping is called `--calls` times after a few warm-up calls,
 *   one at a time; p50/p99 of the call's wall time.
 * - /reports/usage's first page (100 rows, newest first) of the same key through the LRS's database
 *   implementation (`UsageReportsDatabase`), for a 24 h and a 93-day window.
 * Run on its own: `npm run build && node dist/bench/summary.js [--rows 10000000] [--calls 200] [--keep] [--reuse]`
 * (--reuse: keep the database of an earlier --keep run with the same --rows, skip the load).
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, ManagedRuntime, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { execFileSync } from "node:child_process"
import { pathToFileURL } from "node:url"
import { migrateLocked } from "../src/layers/MigrationsLive.ts"
import { refreshUsageRollup } from "../src/layers/rollup/UsageRollupLive.ts"
import { UsageReportsDatabase } from "../src/layers/reports/UsageReportsDatabase.ts"
import { makeSummary } from "../src/layers/rollup/UsageSummariesLive.ts"
import { UsageReports } from "../src/services/UsageReports.ts"
import type { SummaryGroupBy } from "../src/services/UsageSummaries.ts"
import type { BenchReport, BenchRow, Benchmark, TargetCheck } from "./run.ts"
import { ReaderSqlFromWriter } from "../src/layers/DatabaseLive.ts"

const DATABASE = "tb_bench_summary"
const ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
const DATABASE_URL = `postgres://postgres@127.0.0.1:5432/${DATABASE}`
const DAY_MS = 86_400_000
const DAYS = 93
const HEAVY_KEY = "00000000-0000-4000-8000-00000000beef"
const P99_TARGET_MS = 100
const GROUP = "report summary (93 days)"
const GROUPINGS: ReadonlyArray<SummaryGroupBy> = ["day", "asset", "status"]
const WARMUP_CALLS = 5
/** How long one subject's timed calls may take: a slow subject is measured with fewer calls, not for an hour. */
const MEASURE_BUDGET_MS = 30_000

const psqlAdmin = (sql: string) => execFileSync("psql", [ADMIN_URL, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], { encoding: "utf8" })

export interface SummaryBenchOptions {
  readonly rows: number
  readonly calls: number
  readonly keep: boolean
  readonly reuse: boolean
}

const iso = (ms: number) => new Date(ms).toISOString()

/**
 * One day's share of the rows, generated in SQL. Keys: even rows the heavy key, odd rows one of 999
 * others. Latency: log-normal around ~300 µs (Box-Muller), 1 in 500 an outlier up to ~0.5 s.
 */
const insertDay = (start: number, end: number, rows: number, firstId: number) => `
  INSERT INTO usage_logs (id, request_id, api_key_id, service, protocol, endpoint, asset, quote, source, price,
                          status_code, error_code, latency_us, client_ip, node, region, bytes_out, created_at)
  SELECT gen_random_uuid(), 'b' || g,
         CASE WHEN g % 2 = 0 THEN '${HEAVY_KEY}'::uuid
              ELSE ('00000000-0000-4000-8000-' || lpad(((g / 2) % 999)::text, 12, '0'))::uuid END,
         CASE WHEN r1 < 0.02 THEN 'LRS' ELSE 'LPO' END,
         CASE WHEN r2 < 0.2 THEN 'udp' ELSE 'http' END,
         CASE WHEN r2 < 0.2 THEN 'price' WHEN r2 < 0.4 THEN '/prices' ELSE '/price' END,
         (ARRAY['BTC','BTC','BTC','BTC','ETH','ETH','ETH','SOL','SOL','XRP','DOGE','ADA','AVAX','DOT','LINK','LTC',
                'BCH','UNI','ATOM','XLM','NEAR','APT','ARB','OP'])[1 + floor(r3 * 24)::int],
         'USD',
         CASE WHEN r4 < 0.9 THEN 'consensus' ELSE (ARRAY['coinbase','kraken','okx','gemini','gateio','cryptocom'])[1 + floor(r4 * 60)::int % 6] END,
         97000.5,
         CASE WHEN r5 < 0.97 THEN 200 WHEN r5 < 0.98 THEN 429 WHEN r5 < 0.99 THEN 404 WHEN r5 < 0.995 THEN 400 ELSE 503 END,
         NULL,
         CASE WHEN r6 < 0.002 THEN floor(random() * 500000)::int
              ELSE greatest(1, floor(exp(ln(300) + 0.8 * sqrt(-2 * ln(1 - r6)) * cos(2 * pi() * random())))::int) END,
         '10.0.0.1', 'bench', 'local', 150 + floor(r1 * 400)::int,
         '${iso(start)}'::timestamptz + (g - ${firstId}) * (${(end - start) / rows} * interval '1 millisecond')
  FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5, random() AS r6
        FROM generate_series(${firstId}, ${firstId + rows - 1}) g) s`

const quantileOf = (sorted: ReadonlyArray<number>, q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!

export const runSummaryBenchmark = async (options: SummaryBenchOptions): Promise<BenchReport> => {
  const now = Date.now()
  const today = Math.floor(now / DAY_MS) * DAY_MS
  const first = now - DAYS * DAY_MS
  const existing = psqlAdmin(`SELECT count(*) FROM pg_database WHERE datname = '${DATABASE}'`).trim() === "1"
  const reuse = options.reuse && existing
  if (!reuse) {
    psqlAdmin(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`)
    psqlAdmin(`CREATE DATABASE ${DATABASE}`)
  }
  const runtime = ManagedRuntime.make(UsageReportsDatabase.pipe(
    Layer.provideMerge(ReaderSqlFromWriter),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(DATABASE_URL), maxConnections: 4 })),
    Layer.orDie
  ))
  const rows: Array<BenchRow> = []
  const checks: Array<TargetCheck> = []
  try {
    const run = <A, E>(effect: Effect.Effect<A, E, SqlClient.SqlClient | UsageReports>): Promise<A> => runtime.runPromise(effect)
    const query = <A extends object>(text: string) =>
      run(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        return yield* sql.unsafe<A>(text)
      }))
    await run(migrateLocked)
    let stored = Number((await query<{ n: string }>("SELECT count(*)::text AS n FROM usage_logs"))[0]?.n ?? 0)
    if (!reuse || stored !== options.rows) {
      if (stored > 0) await query("TRUNCATE usage_logs, usage_daily_rollup, usage_daily_rollup_dim, usage_daily_rollup_days")
      // Day partitions for the whole window (the server keeps them only from yesterday on).
      for (let day = Math.floor(first / DAY_MS) * DAY_MS; day < today - DAY_MS; day += DAY_MS) {
        const name = `usage_logs_${iso(day).slice(0, 10).replaceAll("-", "")}`
        await query(`CREATE TABLE IF NOT EXISTS ${name} PARTITION OF usage_logs FOR VALUES FROM ('${iso(day)}') TO ('${iso(day + DAY_MS)}')`)
      }
      const loadStart = performance.now()
      const perDay = Math.ceil(options.rows / DAYS)
      for (let d = 0, done = 0; done < options.rows; d++) {
        const n = Math.min(perDay, options.rows - done)
        await query(insertDay(first + d * DAY_MS, Math.min(now, first + (d + 1) * DAY_MS), n, done + 1))
        done += n
        if (d % 10 === 9 || done === options.rows) console.log(`load: ${done.toLocaleString("en-US")} rows, ${((performance.now() - loadStart) / 1000).toFixed(0)} s`)
      }
      await query("VACUUM ANALYZE usage_logs")
      stored = options.rows
      rows.push({ group: GROUP, subject: "load (generate_series, 93 day statements)", rate: options.rows / ((performance.now() - loadStart) / 1000), unit: "rows/s" })
      const refreshStart = performance.now()
      const refreshed = await run(refreshUsageRollup({ now }))
      const refreshS = (performance.now() - refreshStart) / 1000
      await query("VACUUM ANALYZE usage_daily_rollup, usage_daily_rollup_dim, usage_daily_rollup_days, usage_weekly_rollup_dim, usage_weekly_rollup_weeks")
      console.log(`rollup refresh: ${refreshed.days.length} days, ${refreshed.weeks.length} weeks, ${refreshed.rows.toLocaleString("en-US")} rows in ${refreshS.toFixed(1)} s`)
      rows.push({ group: GROUP, subject: `first rollup refresh (${refreshed.days.length} days)`, rate: refreshed.rows / refreshS, unit: "rows/s", note: `${refreshS.toFixed(1)} s` })
    } else {
      await run(refreshUsageRollup({ now }))
    }
    const sizes = await query<{ t: string; rows: string; mb: string }>(`
      SELECT t, (SELECT reltuples::bigint FROM pg_class WHERE relname = t)::text AS rows,
             round(pg_total_relation_size(t::regclass) / 1048576.0)::text AS mb
      FROM unnest(ARRAY['usage_daily_rollup', 'usage_daily_rollup_dim', 'usage_weekly_rollup_dim']) AS t`)
    for (const s of sizes) console.log(`${s.t}: ~${s.rows} rows, ${s.mb} MB`)
    const heavy = await query<{ n: string }>(`SELECT count(*)::text AS n FROM usage_logs WHERE api_key_id = '${HEAVY_KEY}'`)
    console.log(`heavy key: ${heavy[0]?.n} rows in the window`)

    /**
     * `calls` timed calls of `call` after the warm-up ones, one at a time, or fewer when they take
     * longer than MEASURE_BUDGET_MS (at least 3): p50, p99, mean (ms), the calls made and the last answer.
     */
    const measure = async <A>(call: () => Promise<A>) => {
      const started = performance.now()
      let answer = await call()
      for (let i = 1; i < WARMUP_CALLS && performance.now() - started < MEASURE_BUDGET_MS / 10; i++) answer = await call()
      const times: Array<number> = []
      const timed = performance.now()
      for (let i = 0; i < options.calls && (i < 3 || performance.now() - timed < MEASURE_BUDGET_MS); i++) {
        const t0 = performance.now()
        answer = await call()
        times.push(performance.now() - t0)
      }
      times.sort((a, b) => a - b)
      const mean = times.reduce((a, b) => a + b, 0) / times.length
      return { p50: quantileOf(times, 0.5), p99: quantileOf(times, 0.99), mean, calls: times.length, answer }
    }

    // /reports/usage's first page (page_size 100, newest first) through the LRS's database implementation.
    for (const [name, from] of [["24 h", now - DAY_MS], ["93 days", first]] as const) {
      const page = () => run(Effect.flatMap(UsageReports, (reports) => reports.rows({
        apiKeyId: HEAVY_KEY, from, to: now, asset: undefined, service: undefined, pageSize: 100, offset: 0, after: undefined
      })))
      const m = await measure(page)
      rows.push({
        group: "report usage rows", subject: `first page of 100, window ${name}`, rate: 1000 / m.mean, unit: "calls/s",
        p50Ms: m.p50, p99Ms: m.p99, note: `${m.calls} calls, ${m.answer.rows.length} rows, more: ${m.answer.next !== undefined}`
      })
    }

    const summary = makeSummary(await runtime.runPromise(Effect.map(SqlClient.SqlClient, (sql) => sql)))
    const windows: ReadonlyArray<readonly [string, number, number]> = [
      ["whole days", today - DAYS * DAY_MS, today],
      ["to now", first, now]
    ]
    for (const [name, from, to] of windows) {
      for (const groupBy of GROUPINGS) {
        const m = await measure(() => runtime.runPromise(summary({ apiKeyId: HEAVY_KEY, from, to, groupBy })))
        const { p50, p99, answer } = m
        const requests = answer.groups.reduce((n, g) => n + g.requests, 0)
        rows.push({
          group: GROUP,
          subject: `${name}, group_by=${groupBy}`,
          rate: 1000 / m.mean,
          unit: "calls/s",
          p50Ms: p50,
          p99Ms: p99,
          note: `${m.calls} calls, ${answer.groups.length} groups, ${requests.toLocaleString("en-US")} rows`
        })
        if (name === "whole days") {
          checks.push({ name: `summary p99 < ${P99_TARGET_MS} ms from the rollup (group_by=${groupBy})`, pass: p99 < P99_TARGET_MS, detail: `p99 ${p99.toFixed(1)} ms` })
        }
      }
    }
    return { rows, checks }
  } finally {
    await runtime.dispose()
    if (!options.keep) psqlAdmin(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`)
  }
}

export const summaryBenchmark: Benchmark = {
  name: "report summary and usage first page: one key over 93 days of 10 million rows (rollup + usage_logs)",
  run: () => runSummaryBenchmark({ rows: 10_000_000, calls: 200, keep: false, reuse: false })
}

const main = async (argv: ReadonlyArray<string>): Promise<number> => {
  const option = (flag: string) => {
    const at = argv.indexOf(flag)
    return at >= 0 ? argv[at + 1] : undefined
  }
  const rowCount = Number(option("--rows") ?? "10000000")
  const calls = Number(option("--calls") ?? "200")
  if (!Number.isInteger(rowCount) || rowCount < DAYS || !Number.isInteger(calls) || calls < 1) {
    console.error("usage: node dist/bench/summary.js [--rows 10000000] [--calls 200] [--keep] [--reuse]")
    return 2
  }
  const report = await runSummaryBenchmark({ rows: rowCount, calls, keep: argv.includes("--keep"), reuse: argv.includes("--reuse") })
  const fmt = (v: number | undefined, digits: number) => (v === undefined ? "-" : v.toFixed(digits))
  for (const r of report.rows) {
    console.log(`${r.subject.padEnd(44)} ${fmt(r.rate, 0).padStart(10)} ${r.unit.padEnd(8)} p50 ${fmt(r.p50Ms, 2).padStart(7)} ms  p99 ${fmt(r.p99Ms, 2).padStart(7)} ms  ${r.note ?? ""}`)
  }
  for (const c of report.checks) console.log(`${c.pass ? "PASS" : "FAIL"}  ${c.name}  (${c.detail})`)
  return report.checks.every((c) => c.pass) ? 0 : 1
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main(process.argv.slice(2)).then((code) => process.exit(code))
}
