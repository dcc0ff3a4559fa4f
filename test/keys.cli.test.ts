import { createHash } from "node:crypto"
import { execFileSync } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { priceWith, type RunningServer, runCli, startServer } from "./support/server.ts"
import { dropDatabase, freshDatabase, freshRedis } from "./support/services.ts"

interface CreatedKey { readonly key: string; readonly key_id: string; readonly tier: string }

const psqlJson = (url: string, sql: string): ReadonlyArray<Record<string, unknown>> =>
  JSON.parse(execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", `SELECT coalesce(json_agg(t), '[]'::json) FROM (${sql}) t`], { encoding: "utf8" })) as ReadonlyArray<Record<string, unknown>>

/** What a `--json` command printed: stdout holds the result alone (logs go to stderr). */
const jsonLine = (stdout: string): unknown => JSON.parse(stdout)

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

  it("create --json writes only the JSON object to stdout, its log lines to stderr (| jq -r .key works)", async () => {
    const r = await cli(["keys", "create", "--tier", "demo", "--json"], { LOG_LEVEL: "Info" })
    expect(r.code, r.stderr).toBe(0)
    const parsed = JSON.parse(r.stdout) as Record<string, unknown>
    expect(typeof parsed["key"]).toBe("string")
    expect(r.stdout.trim().split("\n")).toHaveLength(1)
    expect(r.stderr).toContain("API key created")
  })

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
    const list = jsonLine(r.stdout) as ReadonlyArray<{ key_id: string; tier: string; status: string; prefix: string }>
    const mine = list.find((k) => k.key_id === created.key_id)
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

  it.each([
    ["an e-mail that is not an address", ["--tier", "listener", "--email", "bad"], /email/],
    ["--lrs on a demo key (the demo tier has no LRS)", ["--tier", "demo", "--lrs"], /LRS/]
  ])("refuses %s: exit 2, one line on stderr, nothing stored", async (_, args, reason) => {
    const before = psqlJson(dbUrl, `SELECT count(*)::int AS n FROM api_keys`)
    const r = await cli(["keys", "create", ...args, "--json"])
    expect(r.code).toBe(2)
    expect(r.stdout).toBe("")
    const lines = r.stderr.trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(reason)
    expect(psqlJson(dbUrl, `SELECT count(*)::int AS n FROM api_keys`)).toEqual(before)
  })

  it("list: a header row; an expired key shows expired, a revoked one revoked; --json in snake_case", async () => {
    const expired = await createKey("listener")
    const revokedAndExpired = await createKey("listener")
    const revoke = await cli(["keys", "revoke", revokedAndExpired.key_id])
    expect(revoke.code, revoke.stderr).toBe(0)
    execFileSync("psql", [dbUrl, "-qAt", "-c", `UPDATE api_keys SET expires_at = now() - interval '1 day' WHERE id IN ('${expired.key_id}', '${revokedAndExpired.key_id}')`])

    const text = await cli(["keys", "list"])
    expect(text.code, text.stderr).toBe(0)
    const [header, ...rows] = text.stdout.trim().split("\n")
    expect(header).toMatch(/^KEY_ID\s+PREFIX\s+TIER\s+STATUS\b/)
    const statusOf = (id: string) => rows.find((row) => row.startsWith(id))?.split(/\s+/)[3]
    expect(statusOf(expired.key_id)).toBe("expired")
    expect(statusOf(revokedAndExpired.key_id)).toBe("revoked")
    expect(statusOf(created.key_id)).toBe("active")

    const json = await cli(["keys", "list", "--json"])
    const list = JSON.parse(json.stdout) as ReadonlyArray<Record<string, unknown>>
    const mine = list.find((k) => k["key_id"] === expired.key_id)
    expect(Object.keys(mine ?? {}).sort()).toEqual(["created_at", "email", "expires_at", "key_id", "lrs_enabled", "prefix", "status", "tier"])
    expect(mine).toMatchObject({ status: "expired", tier: "listener", email: null })
    expect(Date.parse(String(mine?.["expires_at"]))).toBeLessThan(Date.now())
    expect(list.find((k) => k["key_id"] === revokedAndExpired.key_id)?.["status"]).toBe("revoked")
  }, 60_000)

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

  it("with the embedded default (no DATABASE_URL, no Valkey), a running server refuses a revoked key at once", async () => {
    const server = await startServer({})
    try {
      // The CLI run with the server's own settings: its DATA_DIR (the embedded database), its port and token.
      const sameSetup = { DATA_DIR: server.dataDir, LPO_HTTP_PORT: server.env["LPO_HTTP_PORT"]!, ADMIN_TOKEN: server.adminToken, BIND_HOST: "127.0.0.1", LOG_LEVEL: "Warn" }
      const created = await runCli(["keys", "create", "--tier", "associate", "--json"], sameSetup)
      expect(created.code, created.stderr).toBe(0)
      const key = JSON.parse(created.stdout) as CreatedKey
      expect((await priceWith(server, key.key)).status).toBe(200)
      const revoke = await runCli(["keys", "revoke", key.key_id], sameSetup)
      expect(revoke.code, revoke.stderr).toBe(0)
      const r = await priceWith(server, key.key)
      expect(r.status).toBe(403)
      expect(r.body.code).toBe("KEY_REVOKED")
    } finally {
      expect(await server.stop()).toBe(0)
    }
  }, 90_000)

  it("never sends the admin token to another program on LPO_HTTP_PORT (no live server of this DATA_DIR)", async () => {
    const heard: Array<string | undefined> = []
    const impostor = createServer((req, res) => {
      heard.push(req.headers["x-admin-token"] as string | undefined)
      res.end("{}")
    })
    await new Promise<void>((resolve) => impostor.listen(0, "127.0.0.1", () => resolve()))
    const port = (impostor.address() as AddressInfo).port
    try {
      const setup = { DATA_DIR: mkdtempSync(join(tmpdir(), "tb-keys-")), LPO_HTTP_PORT: String(port), BIND_HOST: "127.0.0.1", ADMIN_TOKEN: "a-token-the-impostor-must-not-see" }
      const key = await createKey("associate", setup)
      const revoke = await cli(["keys", "revoke", key.key_id], setup)
      expect(revoke.code, revoke.stderr).toBe(0)
      expect(heard).toEqual([])
    } finally {
      impostor.close()
    }
  }, 30_000)

  it("revoking an unknown key id exits non-zero", async () => {
    const r = await cli(["keys", "revoke", "00000000-0000-4000-8000-000000000000"])
    expect(r.code).not.toBe(0)
    expect(`${r.stderr}${r.stdout}`).toMatch(/no key 00000000-0000-4000-8000-000000000000/)
  })
})
