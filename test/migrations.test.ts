import { PGlite } from "@electric-sql/pglite"
import { execFileSync } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { PARAM_NAMES, PARAM_PROFILES, PARAMS } from "../src/domain/params.ts"
import { runCli } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"

type Row = Record<string, unknown>
/** Runs one SELECT and answers its rows as JSON values (the same shape from PostgreSQL and PGlite). */
type Query = (sql: string) => Promise<ReadonlyArray<Row>>

const asJson = (sql: string) => `SELECT coalesce(json_agg(t), '[]'::json) AS j FROM (${sql}) t`

const postgresQuery = (url: string): Query => async (sql) =>
  JSON.parse(execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", asJson(sql)], { encoding: "utf8" })) as ReadonlyArray<Row>

const psqlExec = (url: string, sql: string) => execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })

const SPEC_TABLES = [
  "users", "api_keys", "rate_limit_template", "usage_logs", "application_parameters", "parameter_profiles",
  "exchange_feeds", "exchange_asset_map", "transactions", "webhooks"
]
const EXCHANGES = ["coinbase", "cryptocom", "gateio", "gemini", "kraken", "okx"]

/** The spec's tier table (api.md "Tiers"); null = unlimited. */
const SPEC_TIERS = [
  { tier: "associate", requests_per_second: 500, burst: 1000, monthly_queries: 50_000_000, lrs_reports_per_month: 1000, webhook_assets: 25, partner_ws: false },
  { tier: "demo", requests_per_second: 5, burst: 10, monthly_queries: 10_000, lrs_reports_per_month: 0, webhook_assets: 0, partner_ws: false },
  { tier: "listener", requests_per_second: 50, burst: 100, monthly_queries: 5_000_000, lrs_reports_per_month: 100, webhook_assets: 0, partner_ws: false },
  { tier: "partner", requests_per_second: 5000, burst: 10_000, monthly_queries: null, lrs_reports_per_month: null, webhook_assets: 150, partner_ws: true }
]

/** Venues with a USDC market for BTC and ETH in the seed, and whether it is enabled. */
const USDC_VENUES: ReadonlyArray<readonly [string, boolean]> = [
  ["coinbase", false], ["cryptocom", false], ["gateio", false], ["gemini", false], ["kraken", true], ["okx", true]
]
const MIGRATIONS = [{ name: "schema" }, { name: "seed" }, { name: "usage_indexes" }, { name: "loadtest_tier" }, { name: "usage_single_index" }, { name: "seed_additions" }, { name: "api_key_usage_monthly" }, { name: "usage_daily_rollup" }, { name: "seed_sync_row_days" }, { name: "webhooks" }, { name: "receipts" }]

const dayName = (ms: number) => new Date(ms).toISOString().slice(0, 10).replaceAll("-", "")

/** What `tb migrate` must leave behind, whatever the storage. */
const checkSchemaAndSeed = async (query: Query) => {
  const tables = (await query(`SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'`)).map((r) => r["name"])
  for (const t of SPEC_TABLES) expect(tables, `table ${t}`).toContain(t)
  expect(await query(`SELECT matviewname FROM pg_matviews WHERE matviewname = 'mv_usage_daily'`)).toHaveLength(1)

  // usage_logs: range-partitioned with day partitions around today.
  const strategy = await query(`SELECT p.partstrat AS s FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid WHERE c.relname = 'usage_logs'`)
  expect(strategy).toEqual([{ s: "r" }])
  const partitions = (await query(`
    SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
    WHERE p.relname = 'usage_logs'`)).map((r) => r["name"])
  const now = Date.now()
  for (const d of [-1, 0, 1]) expect(partitions).toContain(`usage_logs_${dayName(now + d * 86_400_000)}`)
  // One index per usage row: unique on (api_key_id, created_at, id), keyless rows included.
  for (const part of ["usage_logs_default", `usage_logs_${dayName(now)}`]) {
    const indexes = await query(`SELECT pg_get_indexdef(x.indexrelid) AS def FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid WHERE c.relname = '${part}'`)
    expect(indexes.map((r) => r["def"]), part).toEqual([expect.stringMatching(/^CREATE UNIQUE INDEX \S+ ON public\.\S+ USING btree \(api_key_id, created_at, id\) NULLS NOT DISTINCT$/)])
  }

  const tiers = await query(`
    SELECT tier, requests_per_second, burst, monthly_queries, lrs_reports_per_month, webhook_assets, partner_ws
    FROM rate_limit_template WHERE public ORDER BY tier`)
  expect(tiers).toEqual(SPEC_TIERS)
  const listener = await query(`SELECT lrs_requires_addon AS addon FROM rate_limit_template WHERE tier = 'listener'`)
  expect(listener).toEqual([{ addon: true }])
  // Internal tiers, never sold: load tests pay the rate limiter and quota like a sold tier; operations pay neither.
  const internal = await query(`SELECT tier, requests_per_second IS NOT NULL AS metered FROM rate_limit_template WHERE NOT public ORDER BY tier`)
  expect(internal).toEqual([{ tier: "loadtest", metered: true }, { tier: "unmetered", metered: false }])

  const feeds = (await query(`SELECT exchange FROM exchange_feeds ORDER BY exchange`)).map((r) => r["exchange"])
  expect(feeds).toEqual(EXCHANGES)
  const assets = await query(`SELECT count(DISTINCT asset)::int AS assets, array_agg(DISTINCT exchange ORDER BY exchange) AS exchanges FROM exchange_asset_map`)
  expect(Number(assets[0]?.["assets"])).toBeGreaterThanOrEqual(150)
  expect(assets[0]?.["exchanges"]).toEqual(EXCHANGES)
  const stable = await query(`
    SELECT count(*)::int AS total, count(*) FILTER (WHERE NOT usd_equivalent)::int AS not_equivalent
    FROM exchange_asset_map WHERE quote IN ('USDT', 'USDC')`)
  expect(Number(stable[0]?.["total"])).toBeGreaterThan(0)
  expect(Number(stable[0]?.["not_equivalent"])).toBe(0)
  const usd = await query(`SELECT count(*)::int AS n FROM exchange_asset_map WHERE quote = 'USD' AND usd_equivalent`)
  expect(usd).toEqual([{ n: 0 }])
  // USDC markets (spec /price `quote=USDC`): enabled on the venues the feed reference says list USDC,
  // seeded disabled where it marks them UNCONFIRMED (or does not name them).
  const usdc = await query(`SELECT asset, exchange, enabled FROM exchange_asset_map WHERE quote = 'USDC' AND asset IN ('BTC', 'ETH') ORDER BY asset, exchange`)
  expect(usdc).toEqual(["BTC", "ETH"].flatMap((asset) => USDC_VENUES.map(([exchange, enabled]) => ({ asset, exchange, enabled }))))

  const params = await query(`SELECT name, value, value_type FROM application_parameters ORDER BY name`)
  expect(params).toEqual([...PARAM_NAMES].sort().map((name) => ({ name, value: PARAMS[name].default, value_type: PARAMS[name].type })))
  const profiles = await query(`SELECT profile, name, value FROM parameter_profiles ORDER BY profile, name`)
  const expectedProfiles = Object.entries(PARAM_PROFILES)
    .flatMap(([profile, values]) => Object.entries(values).map(([name, value]) => ({ profile, name, value: String(value) })))
    .sort((a, b) => a.profile.localeCompare(b.profile) || a.name.localeCompare(b.name))
  expect(profiles).toEqual(expectedProfiles)
  expect(new Set(profiles.map((p) => p["profile"]))).toEqual(new Set(["default", "high_load", "low_latency_billing", "incident"]))
}

const migrateOk = async (env: Record<string, string>) => {
  const r = await runCli(["migrate"], { LOG_LEVEL: "Warn", ...env })
  expect(r.code, `tb migrate failed:\n${r.stderr}\n${r.stdout}`).toBe(0)
  return r
}

describe("tb migrate against PostgreSQL", () => {
  let url: string
  let query: Query
  beforeAll(() => {
    url = freshDatabase("migrations")
    query = postgresQuery(url)
  })
  afterAll(() => dropDatabase(url))

  it("creates every Storage table, day partitions and the spec's seed data", async () => {
    await migrateOk({ DATABASE_URL: url })
    await checkSchemaAndSeed(query)
    expect(await query(`SELECT name FROM tb_migrations ORDER BY migration_id`)).toEqual(MIGRATIONS)
  })

  it("enforces one transaction per payment session id and routes usage rows to today's partition", async () => {
    psqlExec(url, `INSERT INTO transactions (payment_session_id, tier, amount_cents, currency, status) VALUES ('cs_test_1', 'listener', 1900, 'usd', 'paid')`)
    expect(() => psqlExec(url, `INSERT INTO transactions (payment_session_id, tier, amount_cents, currency, status) VALUES ('cs_test_1', 'listener', 1900, 'usd', 'paid')`))
      .toThrow(/duplicate key|unique/i)
    psqlExec(url, `INSERT INTO usage_logs (id, request_id, service, protocol, endpoint, status_code, latency_us, client_ip, node, region, bytes_out, created_at)
      VALUES (gen_random_uuid(), 'r1', 'LPO', 'http', '/price', 200, 1, '127.0.0.1', 'n', 'local', 10, now())`)
    const where = await query(`SELECT tableoid::regclass::text AS part FROM usage_logs WHERE request_id = 'r1'`)
    expect(where).toEqual([{ part: `usage_logs_${dayName(Date.now())}` }])
    // A keyless row written twice (a batch sent again) is refused the second time, as a keyed one is.
    const keyless = `INSERT INTO usage_logs (id, request_id, service, protocol, endpoint, status_code, latency_us, client_ip, node, region, bytes_out, created_at)
      VALUES ('0192f0c4-0000-7000-8000-000000000001', 'r2', 'LPO', 'udp', 'price', 401, 1, '127.0.0.1', 'n', 'local', 10, '${new Date().toISOString()}')`
    psqlExec(url, keyless)
    expect(() => psqlExec(url, keyless)).toThrow(/duplicate key/i)
  })

  it("is idempotent: a second run applies nothing and keeps what operators edited", async () => {
    psqlExec(url, `UPDATE application_parameters SET value = '777' WHERE name = 'usage_batch_size'`)
    psqlExec(url, `UPDATE parameter_profiles SET value = '4321' WHERE profile = 'high_load' AND name = 'usage_batch_size'`)
    psqlExec(url, `UPDATE rate_limit_template SET requests_per_second = 7 WHERE tier = 'demo'`)
    psqlExec(url, `UPDATE exchange_asset_map SET enabled = false WHERE exchange = 'kraken' AND asset = 'BTC'`)
    const counts = `SELECT (SELECT count(*) FROM rate_limit_template)::int AS tiers, (SELECT count(*) FROM exchange_asset_map)::int AS assets,
      (SELECT count(*) FROM application_parameters)::int AS params, (SELECT count(*) FROM parameter_profiles)::int AS profiles,
      (SELECT count(*) FROM tb_migrations)::int AS migrations,
      (SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'usage_logs')::int AS partitions`
    const before = await query(counts)
    await migrateOk({ DATABASE_URL: url })
    expect(await query(counts)).toEqual(before)
    expect(await query(`SELECT value FROM application_parameters WHERE name = 'usage_batch_size'`)).toEqual([{ value: "777" }])
    expect(await query(`SELECT value FROM parameter_profiles WHERE profile = 'high_load' AND name = 'usage_batch_size'`)).toEqual([{ value: "4321" }])
    expect(await query(`SELECT requests_per_second FROM rate_limit_template WHERE tier = 'demo'`)).toEqual([{ requests_per_second: 7 }])
    expect(await query(`SELECT enabled FROM exchange_asset_map WHERE exchange = 'kraken' AND asset = 'BTC' AND quote = 'USD'`)).toEqual([{ enabled: false }])
  })
})

describe("tb migrate on a database migrated before the stablecoin markets were seeded", () => {
  let url: string
  beforeAll(() => {
    url = freshDatabase("migrations_stablecoins")
  })
  afterAll(() => dropDatabase(url))

  it("adds them through 0006 (the seed run again), keeping what operators changed", async () => {
    const query = postgresQuery(url)
    await migrateOk({ DATABASE_URL: url })
    // Such a database: 0006 never ran (nor any migration after it), and the seed held USD and main-quote markets only.
    psqlExec(url, `DELETE FROM tb_migrations WHERE name IN ('seed_additions', 'api_key_usage_monthly', 'usage_daily_rollup', 'seed_sync_row_days', 'webhooks', 'receipts');
      DELETE FROM exchange_asset_map WHERE quote = 'USDC' OR (quote = 'USDT' AND exchange NOT IN ('gateio', 'okx'));`)
    psqlExec(url, `UPDATE exchange_asset_map SET enabled = false WHERE exchange = 'okx' AND asset = 'BTC' AND quote = 'USDT'`)
    expect(await query(`SELECT count(*)::int AS n FROM exchange_asset_map WHERE quote = 'USDC'`)).toEqual([{ n: 0 }])
    await migrateOk({ DATABASE_URL: url })
    await checkSchemaAndSeed(query)
    expect(await query(`SELECT name FROM tb_migrations ORDER BY migration_id`)).toEqual(MIGRATIONS)
    expect(await query(`SELECT enabled FROM exchange_asset_map WHERE exchange = 'okx' AND asset = 'BTC' AND quote = 'USDT'`)).toEqual([{ enabled: false }])
  }, 40_000)

  it("adds sync_row_days through 0009 to a database migrated before it existed", async () => {
    const query = postgresQuery(url)
    await migrateOk({ DATABASE_URL: url })
    psqlExec(url, `DELETE FROM tb_migrations WHERE name IN ('seed_sync_row_days', 'webhooks', 'receipts');
      DELETE FROM parameter_profiles WHERE name = 'sync_row_days'; DELETE FROM application_parameters WHERE name = 'sync_row_days'`)
    await migrateOk({ DATABASE_URL: url })
    expect(await query(`SELECT value FROM application_parameters WHERE name = 'sync_row_days'`)).toEqual([{ value: "93" }])
  }, 40_000)
})

describe("tb migrate on the embedded default (PGlite in DATA_DIR)", () => {
  beforeAll(() => {
    delete process.env["DATABASE_URL"]
  })

  it("works with DATABASE_URL unset, and a second run changes nothing", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "tb-migrate-embedded-"))
    await migrateOk({ DATA_DIR: dataDir })
    await migrateOk({ DATA_DIR: dataDir })
    // The CLI has exited, so this process may open the data directory itself.
    const db = await PGlite.create(join(dataDir, "pgdata"))
    try {
      const query: Query = async (sql) => {
        const r = await db.query<{ j: ReadonlyArray<Row> }>(asJson(sql))
        return r.rows[0]?.j ?? []
      }
      await checkSchemaAndSeed(query)
      expect(await query(`SELECT name FROM tb_migrations ORDER BY migration_id`)).toEqual(MIGRATIONS)
    } finally {
      await db.close()
    }
  }, 40_000)
})
