/**
 * The feeds through `tb serve`, against exchange simulators this test starts and controls
 * (FEED_URL_* / FEED_REST_URL_* point the server at them): reconnects, the silence watchdog,
 * staleness and the REST fallback with its budgets, outlier rejection, and a table-driven reload.
 */
import { execFileSync } from "node:child_process"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { EXCHANGES, type Exchange } from "../src/domain/price.ts"
import { ASSET_MAP_SEED } from "../src/domain/seedData.ts"
import { type SimulatedMarket, type Simulators, startSimulators } from "../src/simulators/index.ts"
import { admin, createKey, priceWith, type RunningServer, startServer } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"

/** A market the simulators carry but the seed data does not: the reload test adds it to the table. */
const EXTRA_MARKET: SimulatedMarket = { exchange: "coinbase", asset: "TBX", quote: "USD", symbol: "TBX-USD" }
const STALE_MS = 1_500

interface MarketHealthView { asset: string; quote: string; stale: boolean; last_tick_age_ms?: number; last_rest_age_ms?: number }
interface ExchangeView {
  exchange: Exchange
  connected: boolean
  connects: number
  reconnects: number
  watchdog_timeouts: number
  rest_requests: number
  rest_denied: number
  rest_failures: number
  rest_ticks: number
  markets: number
  market_health: Array<MarketHealthView>
}
interface PriceView { price: number; method: string; ts: number; sources: Array<{ exchange: string; price: number; ts: number }> }

let sims: Simulators
let server: RunningServer
let dbUrl: string
let key: string

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const waitFor = async <A>(probe: () => Promise<A | undefined>, timeoutMs: number, what: string): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const found = await probe()
    if (found !== undefined) return found
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

const feedStatus = async (query = ""): Promise<Array<ExchangeView>> => {
  const r = await admin(server, "GET", `/admin/feed-status${query}`)
  expect(r.status).toBe(200)
  return (r.body.data as { exchanges: Array<ExchangeView> }).exchanges
}

const exchangeStatus = async (exchange: Exchange): Promise<ExchangeView> => {
  const [view] = await feedStatus(`?exchange=${exchange}`)
  if (view === undefined) throw new Error(`${exchange} not in feed-status`)
  return view
}

const price = async (query: string) => {
  const r = await priceWith(server, key, query)
  return { status: r.status, code: r.body.code, data: r.body.data as PriceView | null }
}

const psql = (sql: string) => execFileSync("psql", [dbUrl, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], { encoding: "utf8" })

/** Assets only the two USDT venues carry: silencing those two makes every source of them stale. */
const USDT_ONLY_ASSETS = [...new Set(ASSET_MAP_SEED.map((m) => m.asset))].filter((asset) => {
  const carriers = ASSET_MAP_SEED.filter((m) => m.asset === asset).map((m) => m.exchange).sort()
  return carriers.join() === "gateio,okx"
})
const STALE_ASSET = USDT_ONLY_ASSETS[0] ?? "NOT"

beforeAll(async () => {
  sims = await startSimulators({ seed: 99, tickIntervalMs: 100, markets: [...ASSET_MAP_SEED, EXTRA_MARKET] })
  dbUrl = freshDatabase("feeds_integration")
  const urls = Object.fromEntries(EXCHANGES.flatMap((e) => [
    [`FEED_URL_${e.toUpperCase()}`, sims.urls[e].ws],
    [`FEED_REST_URL_${e.toUpperCase()}`, sims.urls[e].rest]
  ]))
  server = await startServer({ DATABASE_URL: dbUrl, ...urls })
  key = (await createKey(server, "partner")).key
  // Staleness in seconds, not the default ten, so the tests need not wait long.
  const set = await admin(server, "POST", "/admin/params", { price_stale_ms: String(STALE_MS) })
  expect(set.status).toBe(200)
}, 90_000)

afterEach(() => {
  for (const e of EXCHANGES) sims.control[e].setSilent(false)
  for (const e of EXCHANGES) sims.rest.setFailure(e, undefined)
})

afterAll(async () => {
  expect(await server?.stop()).toBe(0)
  await sims?.close()
  if (dbUrl !== undefined) dropDatabase(dbUrl)
})

describe("exchange feeds through tb serve", () => {
  it("precondition: some assets are carried by the USDT venues alone", () => {
    expect(USDT_ONLY_ASSETS.length).toBeGreaterThan(20)
  })

  it("reports per-market health, filtered by exchange, and summarises in /health", async () => {
    const all = await feedStatus()
    expect(all.map((e) => e.exchange)).toEqual([...EXCHANGES])
    const okx = await exchangeStatus("okx")
    expect(okx.market_health).toHaveLength(okx.markets)
    const btc = okx.market_health.find((m) => m.asset === "BTC" && m.quote === "USDT")
    expect(btc).toMatchObject({ quote: "USDT", stale: false })
    expect(btc?.last_tick_age_ms).toBeLessThan(STALE_MS)
    const bad = await admin(server, "GET", "/admin/feed-status?exchange=binance")
    expect(bad.status).toBe(400)
  })

  it("reconnects and resubscribes after a dropped connection; prices resume", async () => {
    const before = await exchangeStatus("coinbase")
    const subscribes = sims.control.coinbase.stats.subscribeFrames
    sims.control.coinbase.dropAll()
    const droppedAt = Date.now()
    const after = await waitFor(async () => {
      const s = await exchangeStatus("coinbase")
      return s.connected && s.connects > before.connects ? s : undefined
    }, 8_000, "coinbase reconnect")
    expect(after.reconnects).toBe(before.reconnects + 1)
    expect(sims.control.coinbase.stats.subscribeFrames).toBeGreaterThan(subscribes)
    const resumed = await waitFor(async () => {
      const p = await price("asset=BTC&source=coinbase")
      return p.status === 200 && (p.data?.ts ?? 0) > droppedAt ? p : undefined
    }, 5_000, "fresh coinbase price")
    expect(resumed.data?.sources.map((s) => s.exchange)).toEqual(["coinbase"])
  })

  it("a silent connection trips the watchdog and is replaced", async () => {
    const before = await exchangeStatus("coinbase")
    sims.control.coinbase.setSilent(true)
    // Coinbase's silence timeout is 10 s (a heartbeat a second is expected).
    const tripped = await waitFor(async () => {
      const s = await exchangeStatus("coinbase")
      return s.watchdog_timeouts > before.watchdog_timeouts ? s : undefined
    }, 14_000, "watchdog timeout")
    expect(tripped.watchdog_timeouts).toBe(before.watchdog_timeouts + 1)
    sims.control.coinbase.setSilent(false)
    const resumedAt = Date.now()
    await waitFor(async () => {
      const s = await exchangeStatus("coinbase")
      return s.connected && s.connects > before.connects ? s : undefined
    }, 8_000, "coinbase reconnect after the watchdog")
    await waitFor(async () => {
      const p = await price("asset=BTC&source=coinbase")
      return p.status === 200 && (p.data?.ts ?? 0) >= resumedAt ? p : undefined
    }, 5_000, "fresh coinbase price after the watchdog")
  }, 30_000)

  it("answers an asset whose WebSocket sources are all stale from REST, and NO_FRESH_PRICE when REST fails too", async () => {
    const fresh = await price(`asset=${STALE_ASSET}`)
    expect(fresh.status).toBe(200)
    sims.control.gateio.setSilent(true)
    sims.control.okx.setSilent(true)
    await sleep(STALE_MS + 300)
    const restBefore = sims.rest.stats("gateio").requests + sims.rest.stats("okx").requests
    // The query that finds no fresh price starts the refill; it does not wait for it.
    const first = await price(`asset=${STALE_ASSET}`)
    expect(first.status).toBe(503)
    expect(first.code).toBe("NO_FRESH_PRICE")
    const refilled = await waitFor(async () => {
      const p = await price(`asset=${STALE_ASSET}`)
      return p.status === 200 ? p : undefined
    }, 3_000, "REST-refilled price")
    expect(refilled.data?.sources.length).toBeGreaterThan(0)
    expect(sims.rest.stats("gateio").requests + sims.rest.stats("okx").requests).toBeGreaterThan(restBefore)
    const gate = await exchangeStatus("gateio")
    expect(gate.rest_ticks).toBeGreaterThan(0)
    const market = gate.market_health.find((m) => m.asset === STALE_ASSET)
    expect(market?.stale).toBe(true)
    expect(market?.last_rest_age_ms).toBeLessThan(3_000)

    sims.rest.setFailure("gateio", 500)
    sims.rest.setFailure("okx", 500)
    const failuresBefore = (await exchangeStatus("gateio")).rest_failures
    await sleep(STALE_MS + 300)
    const outcomes: Array<number> = []
    for (let i = 0; i < 6; i++) {
      outcomes.push((await price(`asset=${STALE_ASSET}`)).status)
      await sleep(300)
    }
    expect(outcomes).toEqual([503, 503, 503, 503, 503, 503])
    expect((await exchangeStatus("gateio")).rest_failures).toBeGreaterThan(failuresBefore)
  })

  it("a storm of queries for stale assets stays within each exchange's REST budget", async () => {
    sims.control.gateio.setSilent(true)
    sims.control.okx.setSilent(true)
    await sleep(STALE_MS + 300)
    const budgets = { gateio: 5, okx: 5 } // exchange_feeds seed values
    const before = { gateio: sims.rest.stats("gateio").requests, okx: sims.rest.stats("okx").requests }
    const deniedBefore = (await exchangeStatus("gateio")).rest_denied
    const startedAt = Date.now()
    const statuses = await Promise.all(Array.from({ length: 200 }, (_, i) => price(`asset=${USDT_ONLY_ASSETS[i % USDT_ONLY_ASSETS.length]}`).then((p) => p.status)))
    await sleep(500) // let the refills the storm started finish
    const seconds = (Date.now() - startedAt) / 1000
    expect(statuses.filter((s) => s !== 200 && s !== 503)).toEqual([])
    for (const exchange of ["gateio", "okx"] as const) {
      const sent = sims.rest.stats(exchange).requests - before[exchange]
      expect(sent).toBeGreaterThan(0)
      // A full bucket (one second's worth) plus the refill rate over the storm.
      expect(sent).toBeLessThanOrEqual(Math.ceil(budgets[exchange] * (1 + seconds)))
    }
    expect((await exchangeStatus("gateio")).rest_denied).toBeGreaterThan(deniedBefore)
  })

  it("rejects an exchange whose price is far from the others", async () => {
    const truth = sims.priceBook.truePrice("BTC", "USD")
    sims.control.kraken.setPrice("BTC", "USD", truth * 1.2)
    try {
      await waitFor(async () => {
        const p = await price("asset=BTC&source=kraken")
        return p.status === 200 && Math.abs((p.data?.price ?? 0) / truth - 1.2) < 0.01 ? p : undefined
      }, 3_000, "the pinned kraken price")
      const consensus = await price("asset=BTC")
      expect(consensus.status).toBe(200)
      const sources = consensus.data?.sources.map((s) => s.exchange) ?? []
      expect(sources).not.toContain("kraken")
      expect(sources.length).toBeGreaterThanOrEqual(3)
      expect(Math.abs((consensus.data?.price ?? 0) / truth - 1)).toBeLessThan(0.01)
    } finally {
      sims.control.kraken.clearPrice("BTC", "USD")
    }
  })

  it("reload applies table changes: a disabled exchange stops, a new market is subscribed", async () => {
    psql("UPDATE exchange_feeds SET enabled = false WHERE exchange = 'gemini'")
    psql(`INSERT INTO exchange_asset_map (exchange, asset, quote, symbol) VALUES ('${EXTRA_MARKET.exchange}', '${EXTRA_MARKET.asset}', '${EXTRA_MARKET.quote}', '${EXTRA_MARKET.symbol}')`)
    const unknown = await price(`asset=${EXTRA_MARKET.asset}`)
    expect(unknown.code).toBe("UNKNOWN_ASSET")
    const reload = await admin(server, "POST", "/admin/feed-reload")
    expect(reload.status).toBe(200)
    expect(reload.body.data).toMatchObject({ stopped: ["gemini"], restarted: ["coinbase"], started: [] })
    const listed = (await feedStatus()).map((e) => e.exchange)
    expect(listed).not.toContain("gemini")
    expect(listed).toHaveLength(EXCHANGES.length - 1)
    const added = await waitFor(async () => {
      const p = await price(`asset=${EXTRA_MARKET.asset}`)
      return p.status === 200 ? p : undefined
    }, 6_000, "a price for the new market")
    expect(added.data?.sources.map((s) => s.exchange)).toEqual(["coinbase"])

    psql("UPDATE exchange_feeds SET enabled = true WHERE exchange = 'gemini'")
    const again = await admin(server, "POST", "/admin/feed-reload")
    expect(again.body.data).toMatchObject({ started: ["gemini"], stopped: [], restarted: [] })
    await waitFor(async () => ((await exchangeStatus("gemini")).connected ? true : undefined), 5_000, "gemini back")
  })
})
