import { tcpRelay } from "./support/tcpRelay.ts"
import { execFileSync } from "node:child_process"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { worstCaseOvershoot } from "../src/domain/clusterLimits.ts"
import { admin, createKey, priceWith, type RunningServer, startServer, udpRequest } from "./support/server.ts"
import { dropDatabase, freshDatabase, freshRedis, REDIS_HOST, REDIS_PORT } from "./support/services.ts"

const psqlCount = (url: string, sql: string): number => Number(execFileSync("psql", [url, "-qAtc", sql], { encoding: "utf8" }).trim())

let a: RunningServer
let b: RunningServer
let dbUrl: string

beforeAll(async () => {
  dbUrl = freshDatabase("cluster")
  const shared = { DATABASE_URL: dbUrl, VALKEY_URL: freshRedis(2), ADMIN_TOKEN: "cluster-admin-token-0123456789" }
  a = await startServer({ ...shared, NODE_ID: "node-a" })
  b = await startServer({ ...shared, NODE_ID: "node-b" })
}, 120_000)

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()])
  dropDatabase(dbUrl)
})

/** Hammer a key on one server until `until`; count answers by status. */
const hammer = async (server: RunningServer, key: string, until: number) => {
  const counts = new Map<number, number>()
  while (Date.now() < until) {
    const r = await priceWith(server, key)
    counts.set(r.status, (counts.get(r.status) ?? 0) + 1)
  }
  return counts
}

describe("two LPO nodes sharing one Redis", () => {
  it("hold a key's rate limit across both nodes, within the documented overshoot", async () => {
    const { key } = await createKey(a, "demo") // 5 req/s, burst 10
    const started = Date.now()
    const durationMs = 3_000
    const [ca, cb] = await Promise.all([hammer(a, key, started + durationMs), hammer(b, key, started + durationMs)])
    const elapsedS = (Date.now() - started) / 1000
    const ok = (ca.get(200) ?? 0) + (cb.get(200) ?? 0)
    const limited = (ca.get(429) ?? 0) + (cb.get(429) ?? 0)
    const exactLimit = 10 + 5 * elapsedS
    const bound = exactLimit + worstCaseOvershoot(2, 10, 5, 100)
    expect(limited).toBeGreaterThan(0)
    expect(ok).toBeLessThanOrEqual(Math.ceil(bound))
    // Without sharing, each node would allow its own full limit: together about twice the exact one.
    expect(ok).toBeLessThan(2 * exactLimit - 5)
    expect(ok).toBeGreaterThanOrEqual(Math.floor(exactLimit * 0.6))
  })

  it("refuses a revoked key on the other node at once (pub/sub invalidation)", async () => {
    const { key, key_id } = await createKey(a, "associate")
    expect((await priceWith(b, key)).status).toBe(200)
    expect((await admin(a, "POST", "/admin/revoke-key", { key_id })).status).toBe(200)
    let code = ""
    for (let i = 0; i < 20 && code !== "KEY_REVOKED"; i++) {
      code = (await priceWith(b, key)).body.code
      if (code !== "KEY_REVOKED") await new Promise((r) => setTimeout(r, 50))
    }
    expect(code).toBe("KEY_REVOKED")
  })

  it("carries a parameter set on one node to the other", async () => {
    expect((await admin(a, "POST", "/admin/params", { stats_publish_ms: "1000" })).status).toBe(200)
    let seen = ""
    for (let i = 0; i < 40 && seen !== "1000"; i++) {
      const r = await admin(b, "GET", "/admin/params")
      seen = (r.body.data as { params: Array<{ name: string; value: string }> }).params.find((p) => p.name === "stats_publish_ms")?.value ?? ""
      if (seen !== "1000") await new Promise((r) => setTimeout(r, 50))
    }
    expect(seen).toBe("1000")
  })

  it("publishes both nodes' counters for /admin/cluster-stats", async () => {
    await new Promise((r) => setTimeout(r, 6_000)) // one publish at the old 5 s spacing, then at 1 s
    const r = await admin(a, "GET", "/admin/cluster-stats")
    const data = r.body.data as { nodes: number; per_node: Record<string, Record<string, number>>; totals: Record<string, number> }
    expect(data.nodes).toBe(2)
    expect(Object.keys(data.per_node).sort()).toEqual(["node-a", "node-b"])
    expect(data.totals["requests_total"]).toBe((data.per_node["node-a"]?.["requests_total"] ?? 0) + (data.per_node["node-b"]?.["requests_total"] ?? 0))
    expect(data.totals["requests_total"]).toBeGreaterThan(0)
  }, 15_000)

  it("sheds load with SYSTEM_BUSY above the governor's cluster-wide rate", async () => {
    const { key } = await createKey(a, "partner")
    expect((await admin(a, "POST", "/admin/params", { governor_max_rps: "20" })).status).toBe(200)
    const until = Date.now() + 2_000
    const [ca, cb] = await Promise.all([hammer(a, key, until), hammer(b, key, until)])
    expect((await admin(a, "POST", "/admin/params", { governor_max_rps: "1000000" })).status).toBe(200)
    const busy = (ca.get(503) ?? 0) + (cb.get(503) ?? 0)
    expect(busy).toBeGreaterThan(0)
    expect((ca.get(200) ?? 0) + (cb.get(200) ?? 0)).toBeGreaterThan(0)
  })
})

/**
 * A relay to the machine's Valkey that can be cut: reachable at start (start-up refuses a Valkey
 * it cannot reach), gone afterwards. Once cut it keeps its port and resets every connection, so
 * no other test's server can take the port meanwhile.
 */
const valkeyRelay = async (db: number) => {
  freshRedis(db)
  const relay = await tcpRelay(REDIS_HOST, REDIS_PORT)
  return { ...relay, url: `redis://127.0.0.1:${relay.port}/${db}` }
}

describe("per-node limits while Valkey is unreachable", () => {
  it("keeps serving and limits exactly on its own", async () => {
    const relay = await valkeyRelay(13)
    const lone = await startServer({ DATABASE_URL: dbUrl, VALKEY_URL: relay.url, NODE_ID: "node-lone" })
    relay.cut()
    try {
      const { key } = await createKey(lone, "demo")
      const statuses: Array<number> = []
      for (let i = 0; i < 13; i++) statuses.push((await priceWith(lone, key)).status)
      const ok = statuses.filter((s) => s === 200).length
      expect(ok).toBeGreaterThanOrEqual(10)
      expect(ok).toBeLessThanOrEqual(11)
      expect(statuses).toContain(429)
    } finally {
      expect(await lone.stop()).toBe(0)
      await relay.close()
    }
  }, 90_000)
})

describe("usage logging", () => {
  it("writes exactly one row per served request, HTTP and UDP, through a SIGTERM", async () => {
    const node = await startServer({ DATABASE_URL: dbUrl, NODE_ID: "node-usage" })
    const { key } = await createKey(node, "partner")
    // The wrong-key requests come faster than rows without a valid key are written (10 a second per address by default).
    expect((await admin(node, "POST", "/admin/params", { anonymous_rows_per_ip_per_s: "1000" })).status).toBe(200)
    const before = psqlCount(dbUrl, "SELECT count(*) FROM usage_logs WHERE node = 'node-usage' AND service = 'LPO'")
    let served = 0
    const requests: Array<Promise<unknown>> = []
    for (let i = 0; i < 300; i++) {
      const query = i % 10 === 0 ? "asset=NOTACOIN" : i % 7 === 0 ? "asset=" : "asset=BTC"
      requests.push(priceWith(node, i % 13 === 0 ? "tb_wrong_key_wrong_key_wrong_key_wrong_key_00" : key, query).then(() => served++))
    }
    for (let i = 0; i < 100; i++) requests.push(udpRequest(node.udpPort, `v1 price ${key} ETH u${i}`).then((r) => r !== undefined && served++))
    await Promise.all(requests)
    // SIGTERM right after the last answer: rows still in the buffer must be flushed, not lost.
    expect(await node.stop("SIGTERM")).toBe(0)
    const after = psqlCount(dbUrl, "SELECT count(*) FROM usage_logs WHERE node = 'node-usage' AND service = 'LPO'")
    expect(served).toBe(400)
    expect(after - before).toBe(served)
    const errors = psqlCount(dbUrl, "SELECT count(*) FROM usage_logs WHERE node = 'node-usage' AND error_code IS NOT NULL")
    expect(errors).toBeGreaterThan(0)
    const udp = psqlCount(dbUrl, "SELECT count(*) FROM usage_logs WHERE node = 'node-usage' AND protocol = 'udp'")
    expect(udp).toBe(100)
  }, 90_000)
})

describe("monthly quota", () => {
  it("counts the month's queries already in the database after a restart, then answers QUOTA_EXCEEDED", async () => {
    const quotaDb = freshDatabase("quota")
    try {
      const first = await startServer({ DATABASE_URL: quotaDb, NODE_ID: "node-quota" })
      const { key, key_id } = await createKey(first, "demo")
      const quota = psqlCount(quotaDb, "SELECT monthly_queries FROM rate_limit_template WHERE tier = 'demo'")
      expect(await first.stop()).toBe(0)
      // All but one of the month's queries were answered before the restart.
      execFileSync("psql", [quotaDb, "-qc", `
        INSERT INTO usage_logs (id, request_id, api_key_id, service, protocol, endpoint, asset, quote, price, status_code, latency_us, client_ip, node, region, bytes_out, created_at)
        SELECT gen_random_uuid(), 'earlier-' || g, '${key_id}', 'LPO', 'http', '/price', 'BTC', 'USD', 1, 200, 1, '127.0.0.1', 'node-quota', 'local', 1, now()
        FROM generate_series(1, ${quota - 1}) AS g`])
      const second = await startServer({ DATABASE_URL: quotaDb, NODE_ID: "node-quota" })
      try {
        const last = await priceWith(second, key)
        expect(last.status).toBe(200)
        const past = await priceWith(second, key)
        expect(past.status).toBe(429)
        expect(past.body.code).toBe("QUOTA_EXCEEDED")
        expect(Number(past.headers.get("retry-after"))).toBeGreaterThan(0)
      } finally {
        expect(await second.stop()).toBe(0)
      }
    } finally {
      dropDatabase(quotaDb)
    }
  }, 120_000)
})
