import { Effect, Fiber, References } from "effect"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { PROTOCOLS } from "../src/domain/exchanges/index.ts"
import type { ExchangeProtocol } from "../src/domain/exchanges/protocol.ts"
import { EXCHANGES, type Exchange, type Tick } from "../src/domain/price.ts"
import { type FeedEngineOptions, type FeedHealthRecorder, makeFeedHealth, runFeed } from "../src/layers/feeds/FeedEngine.ts"
import { makeRestFallback } from "../src/layers/feeds/RestFallback.ts"
import { type SimulatedMarket, type Simulators, startSimulators } from "../src/simulators/index.ts"

/** Each exchange's own symbol for its BTC market, as `exchange_asset_map` would hold it. */
const MARKETS: ReadonlyArray<SimulatedMarket> = [
  { exchange: "coinbase", asset: "BTC", quote: "USD", symbol: "BTC-USD" },
  { exchange: "gemini", asset: "BTC", quote: "USD", symbol: "btcusd" },
  { exchange: "kraken", asset: "BTC", quote: "USD", symbol: "BTC/USD" },
  { exchange: "gateio", asset: "BTC", quote: "USDT", symbol: "BTC_USDT" },
  { exchange: "cryptocom", asset: "BTC", quote: "USD", symbol: "BTC_USD" },
  { exchange: "okx", asset: "BTC", quote: "USDT", symbol: "BTC-USDT" }
]
const marketsOf = (exchange: Exchange) => MARKETS.filter((m) => m.exchange === exchange)
const keyOf = (exchange: Exchange) => {
  const m = marketsOf(exchange)[0]
  return `${m?.asset}/${m?.quote}`
}

const CRYPTOCOM_HEARTBEAT_MS = 100
const CRYPTOCOM_HEARTBEAT_TIMEOUT_MS = 150
const SILENCE_MS = 300

let sims: Simulators

interface RunningFeed {
  readonly health: FeedHealthRecorder
  readonly ticks: Array<Tick>
  readonly stop: () => Promise<void>
}
const running: Array<RunningFeed> = []

const startFeed = (
  exchange: Exchange,
  overrides: Partial<FeedEngineOptions> & { readonly protocol?: ExchangeProtocol } = {}
): RunningFeed => {
  const health = makeFeedHealth(exchange)
  const ticks: Array<Tick> = []
  const fiber = Effect.runFork(
    runFeed(
      {
        protocol: PROTOCOLS[exchange],
        wsUrl: sims.urls[exchange].ws,
        markets: marketsOf(exchange),
        onTick: (tick) => ticks.push(tick),
        backoff: { initialMs: 50, maxMs: 400 },
        silenceTimeoutMs: SILENCE_MS,
        ...overrides
      },
      health
    ).pipe(Effect.provideService(References.MinimumLogLevel, "None"))
  )
  const feed = { health, ticks, stop: () => Effect.runPromise(Fiber.interrupt(fiber)).then(() => undefined) }
  running.push(feed)
  return feed
}

const waitFor = async (probe: () => boolean, timeoutMs = 3_000, what = "condition"): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

beforeAll(async () => {
  sims = await startSimulators({
    seed: 42,
    tickIntervalMs: 25,
    markets: MARKETS,
    heartbeatIntervalMs: { cryptocom: CRYPTOCOM_HEARTBEAT_MS, coinbase: 50, kraken: 50 },
    heartbeatTimeoutMs: { cryptocom: CRYPTOCOM_HEARTBEAT_TIMEOUT_MS }
  })
})

afterEach(async () => {
  await Promise.all(running.splice(0).map((f) => f.stop()))
  for (const e of EXCHANGES) {
    sims.control[e].setSilent(false)
    sims.control[e].setHeartbeats(true)
  }
})

afterAll(async () => {
  await sims.close()
})

describe("feed engine against the simulators", () => {
  it("every exchange's real protocol produces sane ticks", async () => {
    const feeds = EXCHANGES.map((e) => [e, startFeed(e)] as const)
    await waitFor(() => feeds.every(([, f]) => f.ticks.length >= 3), 3_000, "ticks from all exchanges")
    for (const [exchange, feed] of feeds) {
      const snapshot = feed.health.snapshot()
      expect(snapshot).toMatchObject({ exchange, connected: true, connects: 1, errors: 0 })
      expect(sims.control[exchange].stats.moduleErrors).toBe(0)
      expect(snapshot.ticks).toBe(feed.ticks.length)
      expect(snapshot.lastTickAt[keyOf(exchange)]).toBeGreaterThan(0)
      for (const tick of feed.ticks) {
        expect(tick.exchange).toBe(exchange)
        expect(tick.asset).toBe("BTC")
        expect(tick.bid).toBeGreaterThan(0)
        expect(tick.ask).toBeGreaterThan(tick.bid ?? Infinity)
        expect(Math.abs((tick.exchangeTs ?? tick.receivedAt) - tick.receivedAt)).toBeLessThan(2_000)
      }
    }
  })

  it("reconnects and resubscribes on every exchange after the simulator drops all sockets", async () => {
    const feeds = EXCHANGES.map((e) => [e, startFeed(e)] as const)
    await waitFor(() => feeds.every(([, f]) => f.ticks.length >= 1), 3_000, "first ticks")
    const subscribesBefore = new Map(EXCHANGES.map((e) => [e, sims.control[e].stats.subscribeFrames]))
    for (const e of EXCHANGES) sims.control[e].dropAll()
    const droppedAt = Date.now()
    await waitFor(
      () => feeds.every(([, f]) => f.health.snapshot().reconnects >= 1 && f.ticks.some((t) => t.receivedAt > droppedAt + 5)),
      3_000,
      "reconnect and fresh ticks"
    )
    for (const [exchange, feed] of feeds) {
      expect(sims.control[exchange].stats.subscribeFrames).toBeGreaterThan(subscribesBefore.get(exchange) ?? Infinity)
      expect(feed.health.snapshot().disconnects).toBeGreaterThanOrEqual(1)
      expect(feed.health.snapshot().connected).toBe(true)
    }
  })

  it("a silent connection trips the watchdog, which reconnects; ticks resume when the server speaks", async () => {
    const feed = startFeed("okx")
    await waitFor(() => feed.ticks.length >= 1, 2_000, "first tick")
    const acceptedBefore = sims.control.okx.stats.connectionsAccepted
    sims.control.okx.setSilent(true)
    const silencedAt = Date.now()
    await waitFor(() => feed.health.snapshot().watchdogTimeouts >= 1, 2_000, "watchdog")
    // The socket was still open: only the watchdog can have ended it, after the silence timeout.
    expect(Date.now() - silencedAt).toBeGreaterThanOrEqual(SILENCE_MS - 30)
    await waitFor(() => sims.control.okx.stats.connectionsAccepted > acceptedBefore, 2_000, "reconnect")
    sims.control.okx.setSilent(false)
    const resumedAt = Date.now()
    await waitFor(() => feed.ticks.some((t) => t.receivedAt > resumedAt), 3_000, "ticks after silence")
    expect(feed.health.snapshot().lastError).toMatch(/no frame/)
  })

  it("Crypto.com: answered heartbeats keep one connection alive well past the heartbeat deadline", async () => {
    const before = sims.control.cryptocom.stats
    const feed = startFeed("cryptocom", { silenceTimeoutMs: 5_000 })
    await waitFor(() => feed.ticks.length >= 1, 2_000, "first tick")
    await sleep(CRYPTOCOM_HEARTBEAT_MS * 6)
    const after = sims.control.cryptocom.stats
    expect(after.heartbeatAnswers - before.heartbeatAnswers).toBeGreaterThanOrEqual(3)
    expect(after.serverCloses).toBe(before.serverCloses)
    expect(feed.health.snapshot()).toMatchObject({ connected: true, connects: 1, disconnects: 0 })
  })

  it("Crypto.com: a client whose heartbeat replies are lost is disconnected, and the engine reconnects", async () => {
    const deaf: ExchangeProtocol = {
      ...PROTOCOLS.cryptocom,
      parseFrame: (raw, markets, at) => ({ ...PROTOCOLS.cryptocom.parseFrame(raw, markets, at), replies: [] })
    }
    const before = sims.control.cryptocom.stats.serverCloses
    const feed = startFeed("cryptocom", { protocol: deaf, silenceTimeoutMs: 5_000 })
    await waitFor(() => feed.health.snapshot().reconnects >= 1, 3_000, "server close and reconnect")
    expect(sims.control.cryptocom.stats.serverCloses).toBeGreaterThan(before)
    expect(feed.health.snapshot().lastError).toMatch(/1000/)
  })

  it("sends the protocol's client ping on schedule and reads the pong (OKX text ping)", async () => {
    const before = sims.control.okx.stats.pingsAnswered
    const feed = startFeed("okx", { protocol: { ...PROTOCOLS.okx, clientPing: { frame: "ping", everyMs: 40 } } })
    await waitFor(() => sims.control.okx.stats.pingsAnswered - before >= 3, 2_000, "pings answered")
    expect(feed.health.snapshot().errors).toBe(0)
  })

  it("a healthy connection resets the backoff: the next drop reconnects at the initial delay", async () => {
    sims.control.gemini.setSilent(true)
    const feed = startFeed("gemini", { silenceTimeoutMs: 100, backoff: { initialMs: 40, maxMs: 5_000 } })
    // Four silent connections in a row: the next delay has grown to 640 ms (±20 %).
    await waitFor(() => feed.health.snapshot().watchdogTimeouts >= 4, 3_000, "repeated watchdog timeouts")
    sims.control.gemini.setSilent(false)
    await waitFor(() => feed.ticks.length >= 1, 3_000, "ticks once the server speaks")
    const connects = feed.health.snapshot().connects
    sims.control.gemini.dropAll()
    const droppedAt = Date.now()
    await waitFor(() => feed.health.snapshot().connects > connects, 3_000, "reconnect after drop")
    expect(Date.now() - droppedAt).toBeLessThan(300)
  })

  it("backs off exponentially while the exchange is unreachable and never fails", async () => {
    const feed = startFeed("coinbase", { wsUrl: "ws://127.0.0.1:1", backoff: { initialMs: 40, maxMs: 2_000 } })
    await sleep(700)
    const snapshot = feed.health.snapshot()
    // Delays 40, 80, 160, 320 (±20 %): about five attempts in 700 ms; without backoff, hundreds.
    expect(snapshot.connectAttempts).toBeGreaterThanOrEqual(3)
    expect(snapshot.connectAttempts).toBeLessThanOrEqual(7)
    expect(snapshot).toMatchObject({ connected: false, connects: 0 })
    expect(snapshot.errors).toBeGreaterThanOrEqual(snapshot.connectAttempts)
  })
})

describe("REST fallback against the REST simulator", () => {
  it("returns a tick from every exchange's REST ticker", async () => {
    for (const exchange of EXCHANGES) {
      const market = marketsOf(exchange)[0]
      if (market === undefined) throw new Error("no market")
      const rest = makeRestFallback(PROTOCOLS[exchange], sims.urls[exchange].rest, 10)
      const tick = await Effect.runPromise(rest.fetchTicker(market))
      expect(tick, exchange).toMatchObject({ exchange, asset: market.asset, quote: market.quote })
      expect(tick?.bid).toBeGreaterThan(0)
      expect(tick?.ask).toBeGreaterThan(tick?.bid ?? Infinity)
      expect(rest.stats()).toMatchObject({ requests: 1, successes: 1, failures: 0, denials: 0 })
    }
  })

  it("stays within its budget: requests over it are denied without touching the network", async () => {
    const market = marketsOf("okx")[0]
    if (market === undefined) throw new Error("no market")
    const rest = makeRestFallback(PROTOCOLS.okx, sims.urls.okx.rest, 2)
    const served = sims.rest.stats("okx").requests
    const results = await Effect.runPromise(Effect.all(Array.from({ length: 6 }, () => rest.fetchTicker(market))))
    expect(results.filter((t) => t !== undefined)).toHaveLength(2)
    expect(rest.stats()).toMatchObject({ requests: 2, denials: 4 })
    expect(sims.rest.stats("okx").requests - served).toBe(2)
  })

  it("answers undefined on HTTP errors and timeouts, counting failures", async () => {
    const market = marketsOf("kraken")[0]
    if (market === undefined) throw new Error("no market")
    const rest = makeRestFallback(PROTOCOLS.kraken, sims.urls.kraken.rest, 100, { timeoutMs: 50 })
    sims.rest.setFailure("kraken", 500)
    expect(await Effect.runPromise(rest.fetchTicker(market))).toBeUndefined()
    sims.rest.setFailure("kraken", undefined)
    sims.rest.setDelay("kraken", 300)
    const startedAt = Date.now()
    expect(await Effect.runPromise(rest.fetchTicker(market))).toBeUndefined()
    expect(Date.now() - startedAt).toBeLessThan(250)
    sims.rest.setDelay("kraken", 0)
    expect(await Effect.runPromise(rest.fetchTicker(market))).toBeDefined()
    expect(rest.stats()).toMatchObject({ requests: 3, failures: 2, successes: 1 })
  })
})
