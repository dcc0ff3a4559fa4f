import { execFileSync, spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { DAY_MS, indexKeysOf, usageRowFromHash, utcDay } from "../src/domain/usageMirrorKeys.ts"
import { deadPort, runCli } from "./support/server.ts"
import { dropDatabase, freshDatabase, freshRedis } from "./support/services.ts"

/** `tb sync` as operators run it: the built CLI (run `npm run build` first), Redis DB 10. */
const REDIS_DB = 10
const CLI = join(import.meta.dirname, "..", "dist", "src", "programs", "cli.js")

let dbUrl = ""
let redisUrl = ""
let redis: Redis
const dataDir = mkdtempSync(join(tmpdir(), "tb-sync-cli-"))
const env = () => ({ DATABASE_URL: dbUrl, VALKEY_URL: redisUrl, CACHE_URL: "", DATA_DIR: dataDir, LOG_LEVEL: "Warn", FORCE_FULL_SYNC: "" })

const psql = (sql: string) => execFileSync("psql", [dbUrl, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], { encoding: "utf8", maxBuffer: 1 << 30 })
const psqlRows = <A>(sql: string): ReadonlyArray<A> => JSON.parse(psql(`SELECT coalesce(json_agg(t), '[]'::json) FROM (${sql}) t`)) as ReadonlyArray<A>

/**
 * `n` generated rows spread over the last `days` days (keys, assets, NULLs varied), inserted by
 * PostgreSQL itself. Day partitions are made first, as production has them.
 */
const generateRows = (n: number, days: number, tag: string) => {
  psql(`INSERT INTO usage_logs
    SELECT gen_random_uuid(), '${tag}-' || i,
      CASE WHEN i % 10 = 0 THEN NULL ELSE ('00000000-0000-4000-8000-00000000000' || (i % 7))::uuid END,
      'LPO', 'http', '/price', CASE WHEN i % 9 = 0 THEN NULL ELSE (ARRAY['BTC','ETH','SOL'])[1 + i % 3] END, 'USD', 'consensus',
      CASE WHEN i % 4 = 0 THEN NULL ELSE 97000.25 + i / 7.0 END, CASE WHEN i % 13 = 0 THEN 429 ELSE 200 END,
      CASE WHEN i % 13 = 0 THEN 'RATE_LIMITED' END, i % 5000, '10.0.' || (i % 200) || '.1', 'node-a', 'local', 150 + i % 500,
      now() - 60 * interval '1 second' - (${days} * interval '1 day') * (i::float8 / ${n})
    FROM generate_series(1, ${n}) i`)
}

const makePartitions = (days: number) => {
  for (let d = 2; d <= days + 1; d++) {
    const day = utcDay(Date.now() - d * DAY_MS)
    const next = utcDay(Date.now() - (d - 1) * DAY_MS)
    psql(`CREATE TABLE IF NOT EXISTS usage_logs_${day.replaceAll("-", "")} PARTITION OF usage_logs FOR VALUES FROM ('${day}') TO ('${next}')`)
  }
}

/** Every key matching `pattern` (SCAN). */
const scanKeys = async (pattern: string) => {
  const out: Array<string> = []
  let cursor = "0"
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 5000)
    cursor = next
    out.push(...keys)
  } while (cursor !== "0")
  return out
}

/**
 * Valkey against SQL for the rows of the window [from, ∞): the same set of row hashes, and every
 * index key's member count equal to SQL's count for it (no entry lost, none twice); a sample of
 * hashes compared field by field.
 */
const compareWithSql = async (from: number) => {
  const sqlRows = psqlRows<{ id: string; api_key_id: string | null; asset: string | null; created_at: number }>(
    `SELECT id::text AS id, api_key_id::text AS api_key_id, asset, floor(extract(epoch FROM created_at) * 1000)::bigint AS created_at
     FROM usage_logs WHERE created_at >= to_timestamp(${from} / 1000.0)`)
  const hashIds = (await scanKeys("usage:*")).filter((k) => !k.startsWith("usage:idx:") && !k.startsWith("usage:sync")).map((k) => k.slice(6))
  expect(hashIds.length).toBe(sqlRows.length)
  expect(new Set(hashIds)).toEqual(new Set(sqlRows.map((r) => r.id)))
  const counts = new Map<string, number>()
  for (const r of sqlRows) for (const k of indexKeysOf(r, utcDay(r.created_at))) counts.set(k, (counts.get(k) ?? 0) + 1)
  const indexKeys = (await scanKeys("usage:idx:*")).filter((k) => /^usage:idx:(time|key|asset):/.test(k)).sort()
  expect(indexKeys).toEqual([...counts.keys()].sort())
  const pipeline = redis.pipeline()
  for (const k of indexKeys) pipeline.zcard(k)
  const cards = (await pipeline.exec()) ?? []
  expect(Object.fromEntries(indexKeys.map((k, i) => [k, Number(cards[i]?.[1])]))).toEqual(Object.fromEntries(counts))
  const sample = sqlRows.filter((_, i) => i % 997 === 0).map((r) => r.id)
  const full = psqlRows<Record<string, unknown>>(`SELECT id::text AS id, request_id, api_key_id::text AS api_key_id, service, protocol, endpoint, asset, quote, source,
     price, status_code, error_code, latency_us, client_ip, node, region, bytes_out, floor(extract(epoch FROM created_at) * 1000)::bigint AS created_at
     FROM usage_logs WHERE id IN (${sample.map((id) => `'${id}'`).join(",")})`)
  for (const r of full) expect(usageRowFromHash(await redis.hgetall(`usage:${String(r["id"])}`))).toEqual(r)
  return sqlRows.length
}

const startSync = (args: ReadonlyArray<string>) => {
  const child = spawn(process.execPath, [CLI, "sync", ...args], { env: { ...process.env, ...env() }, stdio: ["ignore", "pipe", "pipe"] })
  let output = ""
  child.stdout.on("data", (d: Buffer) => void (output += d.toString()))
  child.stderr.on("data", (d: Buffer) => void (output += d.toString()))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })))
  return { child, exited, output: () => output }
}

beforeAll(async () => {
  dbUrl = freshDatabase("sync_cli")
  redisUrl = freshRedis(REDIS_DB)
  redis = new Redis(redisUrl)
  const migrated = await runCli(["migrate"], { DATABASE_URL: dbUrl, DATA_DIR: dataDir, LOG_LEVEL: "Warn" })
  if (migrated.code !== 0) throw new Error(migrated.stderr)
}, 60_000)

afterAll(async () => {
  await redis.quit()
  dropDatabase(dbUrl)
})

describe("tb sync (the CLI)", () => {
  it("without VALKEY_URL: one line naming VALKEY_URL, exit 2; a bad --batch-size exit 2; Valkey out of reach: one line naming it, exit 1", async () => {
    const missing = await runCli(["sync"], { ...env(), VALKEY_URL: "", CACHE_URL: "" })
    expect(missing.code).toBe(2)
    expect(missing.stderr.trim().split("\n")).toHaveLength(1)
    expect(missing.stderr).toContain("VALKEY_URL")
    expect(missing.stdout).toBe("")
    const badBatch = await runCli(["sync", "--batch-size", "0"], env())
    expect(badBatch.code).toBe(2)
    expect(badBatch.stderr).toContain("--batch-size")
    const dead = await deadPort()
    try {
      const unreachable = await runCli(["sync"], { ...env(), VALKEY_URL: `redis://127.0.0.1:${dead.port}/${REDIS_DB}` })
      expect(unreachable.code).toBe(1)
      expect(unreachable.stderr.trim().split("\n")).toHaveLength(1)
      expect(unreachable.stderr).toMatch(/^VALKEY_URL: cannot connect to 127\.0\.0\.1:\d+/)
    } finally {
      await dead.close()
    }
  })

  it("a summary line on stdout, --json one JSON document, FORCE_FULL_SYNC=true as --full", async () => {
    await redis.flushdb()
    psql("TRUNCATE usage_logs")
    generateRows(3_000, 3, "summary")
    const first = await runCli(["sync"], env())
    expect(first.code).toBe(0)
    expect(first.stdout).toMatch(/^synced 3000 rows in \d+ batches in [\d.]+ s \(full: first run; .*\)\n$/)
    const json = await runCli(["sync", "--json"], env())
    expect(json.code).toBe(0)
    const doc = JSON.parse(json.stdout) as Record<string, unknown>
    expect(doc).toMatchObject({ mode: "incremental", full_reason: null, row_days: 93, lag_hours: 24 })
    expect(typeof doc["rows"]).toBe("number")
    const forced = await runCli(["sync", "--json"], { ...env(), FORCE_FULL_SYNC: "true" })
    expect(JSON.parse(forced.stdout)).toMatchObject({ mode: "full", full_reason: "requested", rows: 3_000 })
    await compareWithSql(Date.now() - 93 * DAY_MS + 60_000)
  })

  it("killed (SIGKILL) at any point and run again: Valkey holds every row of SQL once, late rows included; stopped by SIGTERM: exit 1, resumed", async () => {
    await redis.flushdb()
    psql("TRUNCATE usage_logs")
    makePartitions(95)
    generateRows(240_000, 92, "crash")
    // Kill the first run early, the second run (which resumes) later; then rows arrive late; then run to the end.
    const killAfterRows = [20_000, 90_000, 150_000]
    for (const threshold of killAfterRows) {
      const run = startSync(["--batch-size", "500"])
      let killed = false
      while (run.child.exitCode === null) {
        const size = await redis.dbsize()
        if (size >= threshold) {
          run.child.kill("SIGKILL")
          killed = true
          break
        }
        await new Promise((r) => setTimeout(r, 20))
      }
      const exit = await run.exited
      expect(killed, `the run ended before ${threshold} keys: ${run.output()}`).toBe(true)
      expect(exit.signal).toBe("SIGKILL")
    }
    const state = await redis.hgetall("usage:sync")
    expect(state["full_through"]).toBeDefined()
    // Late rows: committed now with created_at hours ago, before rows already synced.
    psql(`INSERT INTO usage_logs SELECT gen_random_uuid(), 'late-' || i, NULL, 'LPO', 'udp', 'price', 'BTC', 'USD', 'consensus', 1.5, 200, NULL, 10,
      '10.9.9.9', 'node-b', 'local', 100, now() - (i * interval '1 minute') FROM generate_series(1, 50) i`)
    const last = await runCli(["sync", "--json"], env())
    expect(last.code, last.stderr).toBe(0)
    expect(JSON.parse(last.stdout)).toMatchObject({ mode: "full", full_reason: "resuming an unfinished full run" })
    expect(await redis.hexists("usage:sync", "full_through")).toBe(0)
    const rows = await compareWithSql(Date.now() - 93 * DAY_MS + 60_000)
    expect(rows).toBe(240_050)

    // SIGTERM (the task stopped) part-way through a full run: one line, exit 1; the next run resumes.
    const stopped = startSync(["--full", "--batch-size", "500"])
    const startedAt = Date.now()
    let begunFrom: string | undefined
    while (stopped.child.exitCode === null && Date.now() - startedAt < 60_000) {
      const through = await redis.hget("usage:sync", "full_through")
      begunFrom ??= through ?? undefined
      if (through !== null && begunFrom !== undefined && through !== begunFrom) break
      await new Promise((r) => setTimeout(r, 10))
    }
    stopped.child.kill("SIGTERM")
    const exit = await stopped.exited
    expect(exit.code, stopped.output()).toBe(1)
    expect(stopped.output()).toContain("sync interrupted before the end")
    const resumed = await runCli(["sync", "--json"], env())
    expect(JSON.parse(resumed.stdout)).toMatchObject({ mode: "full", full_reason: "resuming an unfinished full run" })
    expect(await compareWithSql(Date.now() - 93 * DAY_MS + 60_000)).toBe(240_050)
  }, 300_000)
})
