import { createHash } from "node:crypto"
import { execFileSync } from "node:child_process"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { priceWith, type RunningServer, runCli, startServer } from "./support/server.ts"
import { dropDatabase, freshDatabase, freshRedis } from "./support/services.ts"

interface CreatedKey { readonly key: string; readonly key_id: string; readonly tier: string }

const psqlJson = (url: string, sql: string): ReadonlyArray<Record<string, unknown>> =>
  JSON.parse(execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", `SELECT coalesce(json_agg(t), '[]'::json) FROM (${sql}) t`], { encoding: "utf8" })) as ReadonlyArray<Record<string, unknown>>

/** The JSON line a `--json` command printed (log lines may surround it). */
const jsonLine = (stdout: string): unknown => {
  const line = stdout.trim().split("\n").reverse().find((l) => l.startsWith("{") || l.startsWith("["))
  if (line === undefined) throw new Error(`no JSON in output:\n${stdout}`)
  return JSON.parse(line)
}

let dbUrl: string
let redisUrl: string
const cli = (args: ReadonlyArray<string>, extra: Record<string, string> = {}) => runCli(args, { DATABASE_URL: dbUrl, LOG_LEVEL: "Warn", ...extra })

const createKey = async (tier: string, extra: Record<string, string> = {}): Promise<CreatedKey> => {
  const r = await cli(["keys", "create", "--tier", tier, "--json"], extra)
  expect(r.code, r.stderr).toBe(0)
  return jsonLine(r.stdout) as CreatedKey
}

/** Poll the server until the key is refused with `code`; resolves the time it took (ms), or -1. */
const refusedWithin = async (server: RunningServer, key: string, code: string, timeoutMs: number) => {
  const started = Date.now()
  while (Date.now() - started < timeoutMs) {
    const r = await priceWith(server, key)
    if (r.body.code === code) return Date.now() - started
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return -1
}

beforeAll(() => {
  dbUrl = freshDatabase("keys_cli")
  redisUrl = freshRedis(6)
})
afterAll(() => dropDatabase(dbUrl))

describe("tb keys (CLI) against PostgreSQL", () => {
  let created: CreatedKey

  it("creates a key and prints {key, key_id, tier} as JSON", async () => {
    created = await createKey("demo")
    expect(created.tier).toBe("demo")
    expect(created.key_id).toMatch(/^[0-9a-f-]{36}$/)
    expect(created.key.length).toBeGreaterThanOrEqual(40)
  })

  it("stores only a SHA-256 hash and a short prefix, never the key", () => {
    const rows = psqlJson(dbUrl, `SELECT * FROM api_keys WHERE id = '${created.key_id}'`)
    expect(rows).toHaveLength(1)
    const row = rows[0]!
    expect(row["key_hash"]).toBe(createHash("sha256").update(created.key, "utf8").digest("hex"))
    const prefix = String(row["key_prefix"])
    expect(created.key.startsWith(prefix)).toBe(true)
    expect(prefix.length).toBeLessThanOrEqual(12)
    // No column holds the key, or any long piece of it.
    const secretPart = created.key.slice(prefix.length, prefix.length + 16)
    for (const [column, value] of Object.entries(row)) {
      expect(JSON.stringify(value), column).not.toContain(created.key)
      expect(JSON.stringify(value), column).not.toContain(secretPart)
    }
  })

  it("lists the key without the key itself", async () => {
    const r = await cli(["keys", "list", "--json"])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).not.toContain(created.key)
    const list = jsonLine(r.stdout) as ReadonlyArray<{ id: string; tier: string; status: string; prefix: string }>
    const mine = list.find((k) => k.id === created.key_id)
    expect(mine).toMatchObject({ tier: "demo", status: "active" })
    expect(created.key.startsWith(mine?.prefix ?? "-")).toBe(true)
  })

  it("refuses an unknown tier with a non-zero exit and a message naming it", async () => {
    const before = psqlJson(dbUrl, `SELECT count(*)::int AS n FROM api_keys`)
    const r = await cli(["keys", "create", "--tier", "platinum-plus", "--json"])
    expect(r.code).not.toBe(0)
    expect(`${r.stderr}${r.stdout}`).toMatch(/unknown tier platinum-plus/)
    expect(r.stdout).not.toMatch(/"key"/)
    expect(psqlJson(dbUrl, `SELECT count(*)::int AS n FROM api_keys`)).toEqual(before)
  })

  it("a server sharing Valkey refuses a revoked key with KEY_REVOKED at once (pub/sub invalidation)", async () => {
    const key = await createKey("associate")
    const server = await startServer({ DATABASE_URL: dbUrl, VALKEY_URL: redisUrl })
    try {
      expect((await priceWith(server, key.key)).status).toBe(200)
      // Created after the server started: found on first use.
      const late = await createKey("associate", { VALKEY_URL: redisUrl })
      expect((await priceWith(server, late.key)).status).toBe(200)
      const revoke = await cli(["keys", "revoke", key.key_id], { VALKEY_URL: redisUrl })
      expect(revoke.code, revoke.stderr).toBe(0)
      // key_cache_refresh_ms is 30 s by default: only the invalidation can make this fast.
      const took = await refusedWithin(server, key.key, "KEY_REVOKED", 3_000)
      expect(took).toBeGreaterThanOrEqual(0)
      const r = await priceWith(server, key.key)
      expect(r.status).toBe(403)
      expect(r.body.code).toBe("KEY_REVOKED")
      // Other keys are unaffected.
      expect((await priceWith(server, late.key)).status).toBe(200)
    } finally {
      expect(await server.stop()).toBe(0)
    }
  }, 60_000)

  it("a server without Valkey refuses a revoked key within key_cache_refresh_ms", async () => {
    const refreshMs = 1000
    execFileSync("psql", [dbUrl, "-qAt", "-c", `UPDATE application_parameters SET value = '${refreshMs}' WHERE name = 'key_cache_refresh_ms'`])
    const key = await createKey("listener")
    const server = await startServer({ DATABASE_URL: dbUrl })
    try {
      expect((await priceWith(server, key.key)).status).toBe(200)
      const revoke = await cli(["keys", "revoke", key.key_id])
      expect(revoke.code, revoke.stderr).toBe(0)
      const took = await refusedWithin(server, key.key, "KEY_REVOKED", refreshMs * 3)
      expect(took).toBeGreaterThanOrEqual(0)
      expect((await priceWith(server, key.key)).status).toBe(403)
    } finally {
      expect(await server.stop()).toBe(0)
    }
  }, 60_000)

  it("revoking an unknown key id exits non-zero", async () => {
    const r = await cli(["keys", "revoke", "00000000-0000-4000-8000-000000000000"])
    expect(r.code).not.toBe(0)
    expect(`${r.stderr}${r.stdout}`).toMatch(/no key 00000000-0000-4000-8000-000000000000/)
  })
})
