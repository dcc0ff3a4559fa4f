/**
 * The shared Valkey price tier between two `tb serve` nodes: node B cannot reach the USDT venues
 * (WebSocket and REST both point at a dead port, and the REST fallback is off), so the only way
 * it can price an asset only those venues carry is from the ticks node A shares through Valkey.
 * (Their port is held by this test and resets every connection, so no other server can take it.)
 */
import { execFileSync } from "node:child_process"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ASSET_MAP_SEED } from "../src/domain/seedData.ts"
import { admin, call, createKey, deadPort, priceWith, type RunningServer, startServer } from "./support/server.ts"
import { dropDatabase, freshDatabase, freshRedis, REDIS_HOST, REDIS_PORT } from "./support/services.ts"

const REDIS_DB = 12

let a: RunningServer
let b: RunningServer
let dbUrl: string
let dead: { readonly port: number; readonly close: () => Promise<void> } | undefined

const USDT_ONLY_ASSET = [...new Set(ASSET_MAP_SEED.map((m) => m.asset))].find((asset) =>
  ASSET_MAP_SEED.filter((m) => m.asset === asset).map((m) => m.exchange).sort().join() === "gateio,okx"
) ?? "NOT"

beforeAll(async () => {
  dbUrl = freshDatabase("feeds_shared_tier")
  const shared = { DATABASE_URL: dbUrl, VALKEY_URL: freshRedis(REDIS_DB) }
  a = await startServer({ ...shared, NODE_ID: "tier-a" })
  dead = await deadPort()
  const closed = dead.port
  b = await startServer({
    ...shared,
    NODE_ID: "tier-b",
    FEED_URL_GATEIO: `ws://127.0.0.1:${closed}/`,
    FEED_URL_OKX: `ws://127.0.0.1:${closed}/`,
    FEED_REST_URL_GATEIO: `http://127.0.0.1:${closed}`,
    FEED_REST_URL_OKX: `http://127.0.0.1:${closed}`
  })
}, 120_000)

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()])
  await dead?.close()
  if (dbUrl !== undefined) dropDatabase(dbUrl)
})

describe("shared price tier across two nodes", () => {
  it("prices an asset a node has no feed for from the ticks another node shared", { timeout: 60_000 }, async () => {
    // Parameters are cluster-wide: set on A, they reach B too.
    const set = await admin(a, "POST", "/admin/params", { cache_price_flush_ms: "200", rest_fallback_enabled: "false" })
    expect(set.status).toBe(200)
    const { key } = await createKey(b, "partner")

    // Generous: when the whole suite runs, several servers share the two cores.
    const deadline = Date.now() + 25_000
    const statuses: Array<number> = []
    let answer: { sources: Array<{ exchange: string }> } | undefined
    let last = ""
    while (answer === undefined && Date.now() < deadline) {
      const r = await priceWith(b, key, `asset=${USDT_ONLY_ASSET}`)
      statuses.push(r.status)
      last = JSON.stringify(r.body)
      if (r.status === 200) answer = r.body.data as { sources: Array<{ exchange: string }> }
      else await new Promise((resolve) => setTimeout(resolve, 100))
    }
    expect(statuses[0]).toBe(503) // the miss starts the refill; it does not wait for it
    if (answer === undefined) {
      const onA = JSON.stringify((await priceWith(a, (await createKey(a, "partner")).key, `asset=${USDT_ONLY_ASSET}`)).body.data)
      const inValkey = execFileSync("redis-cli", ["-h", REDIS_HOST, "-p", String(REDIS_PORT), "-n", String(REDIS_DB), "HGETALL", `price:${USDT_ONLY_ASSET}`], { encoding: "utf8" })
      const feedsB = JSON.stringify((await call(b, "/admin/feed-status", { headers: { "x-admin-token": b.adminToken } })).body.data).slice(0, 600)
      expect.fail(`no answer after ${statuses.length} tries; last: ${last}\nA answers: ${onA}\nValkey: ${inValkey}\nB feeds: ${feedsB}\nnow ${Date.now()}`)
    }
    expect(answer?.sources.map((s) => s.exchange).every((e) => e === "gateio" || e === "okx")).toBe(true)

    const fields = execFileSync("redis-cli", ["-h", REDIS_HOST, "-p", String(REDIS_PORT), "-n", String(REDIS_DB), "HKEYS", `price:${USDT_ONLY_ASSET}`], { encoding: "utf8" })
    expect(fields.split("\n").filter((f) => f !== "").sort()).toEqual(["gateio|USDT", "okx|USDT"])

    const status = await call(b, "/admin/feed-status?exchange=gateio", { headers: { "x-admin-token": b.adminToken } })
    const gate = (status.body.data as { exchanges: Array<{ connected: boolean; rest_requests: number; rest_ticks: number }> }).exchanges[0]
    expect(gate).toMatchObject({ connected: false, rest_requests: 0, rest_ticks: 0 })
  })
})
