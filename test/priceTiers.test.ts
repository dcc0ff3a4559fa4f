/**
 * The tiers below the in-process prices: the shared (Valkey) tier's codec and batched writes,
 * against the in-process and the real Valkey cache, and the background refill's fall-through
 * order, de-duplication, cool-down and REST target choice.
 */
import { Effect, Exit, Redacted, Scope } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { DEFAULT_PARAMS, type ParamName, type ParamValues } from "../src/domain/params.ts"
import { EXCHANGES, type Exchange, type Tick } from "../src/domain/price.ts"
import { makeMemoryCache } from "../src/layers/CacheMemory.ts"
import { makeValkeyCache } from "../src/layers/CacheValkey.ts"
import { type CarrierMarket, makePriceRefill, marketsForQuery, REFILL_COOLDOWN_MS } from "../src/layers/feeds/PriceRefill.ts"
import type { RestFallback } from "../src/layers/feeds/RestFallback.ts"
import { decodeTick, encodeTick, makeSharedPriceTier, priceField, priceKey, SharedPriceTier } from "../src/layers/feeds/SharedPriceTier.ts"
import { makePriceCacheMemory } from "../src/layers/PriceCacheMemory.ts"
import type { Cache, HashWrite } from "../src/services/Cache.ts"
import { Params } from "../src/services/Params.ts"
import { freshRedis } from "./support/services.ts"

const makeParams = (overrides: Partial<ParamValues> = {}) => {
  let values: ParamValues = { ...DEFAULT_PARAMS, price_stale_ms: "2000", ...overrides }
  const service = Params.of({
    current: () => values,
    int: (name: ParamName) => Number(values[name]),
    bool: (name: ParamName) => values[name] === "true",
    list: Effect.succeed([]),
    profiles: Effect.succeed({}),
    set: () => Effect.die("not used"),
    applyProfile: () => Effect.die("not used"),
    refresh: Effect.void
  })
  return { service, update: (changes: Partial<ParamValues>) => void (values = { ...values, ...changes }) }
}

const tick = (exchange: Exchange, asset: string, quote: string, mid: number, at: number): Tick => ({
  exchange, asset, quote, last: mid, bid: mid * 0.9999, ask: mid * 1.0001, exchangeTs: at, receivedAt: at
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe("shared tier codec", () => {
  const positive = fc.option(fc.double({ min: 1e-9, max: 1e12, noNaN: true }), { nil: undefined })
  it("decodes what it encodes", () => {
    fc.assert(fc.property(
      fc.constantFrom(...EXCHANGES), fc.stringMatching(/^[A-Z0-9]{1,10}$/), fc.stringMatching(/^[A-Z]{3,5}$/),
      positive, positive, positive, fc.option(fc.integer({ min: 0, max: 2 ** 45 }), { nil: undefined }), fc.integer({ min: 0, max: 2 ** 45 }),
      (exchange, asset, quote, last, bid, ask, exchangeTs, receivedAt) => {
        const t: Tick = { exchange, asset, quote, last, bid, ask, exchangeTs, receivedAt }
        expect(decodeTick(asset, priceField(exchange, quote), encodeTick(t))).toEqual(t)
      }
    ))
  })
  it("ignores fields and values that are not ticks", () => {
    const good = encodeTick(tick("okx", "BTC", "USDT", 100, 1))
    expect(decodeTick("BTC", "binance|USDT", good)).toBeUndefined()
    expect(decodeTick("BTC", "okx", good)).toBeUndefined()
    expect(decodeTick("BTC", "okx|", good)).toBeUndefined()
    for (const junk of ["", "{", "[1,2,3]", "[1,2,3,4,null]", "[\"1\",2,3,4,5]", "{\"a\":1}"]) expect(decodeTick("BTC", "okx|USDT", junk)).toBeUndefined()
    expect(decodeTick("BTC", "okx|USDT", good)).toBeDefined()
  })
})

/** Counts hsetMany calls, so "one batched call" is checked, not assumed. */
const counting = (cache: Cache["Service"]) => {
  const calls: Array<ReadonlyArray<HashWrite>> = []
  return { calls, cache: { ...cache, hsetMany: (writes: ReadonlyArray<HashWrite>) => (calls.push(writes), cache.hsetMany(writes)) } }
}

const sharedTierSuite = (name: string, makeCache: () => Promise<{ cache: Cache["Service"]; close: () => Promise<void> }>) =>
  describe(`shared price tier over the ${name} cache`, () => {
    it("writes this node's fresh ticks in one batched call and another node reads them back", async () => {
      const { cache, close } = await makeCache()
      try {
        const params = makeParams().service
        const now = Date.now()
        const asset = `T${Math.random().toString(36).slice(2, 8).toUpperCase()}`
        const markets = [
          { exchange: "coinbase" as const, asset, quote: "USD", usdEquivalent: false },
          { exchange: "gemini" as const, asset, quote: "USD", usdEquivalent: false },
          { exchange: "okx" as const, asset, quote: "USDT", usdEquivalent: true },
          { exchange: "kraken" as const, asset: "ETH", quote: "USD", usdEquivalent: false }
        ]
        const nodeA = makePriceCacheMemory(params)
        nodeA.setMarkets(markets)
        const fresh = [tick("coinbase", asset, "USD", 10, now - 100), tick("okx", asset, "USDT", 10.01, now - 50), tick("kraken", "ETH", "USD", 3000, now - 10)]
        for (const t of fresh) nodeA.ingest(t)
        nodeA.ingest(tick("gemini", asset, "USD", 9, now - 60_000)) // stale: must not overwrite what others share
        const spy = counting(cache)
        const tierA = makeSharedPriceTier(spy.cache, nodeA, params)
        expect(await Effect.runPromise(tierA.flush)).toBe(3)
        expect(spy.calls).toHaveLength(1)
        expect(spy.calls[0]?.map((w) => w.key).sort()).toEqual([priceKey("ETH"), priceKey(asset)].sort())
        expect(spy.calls[0]?.every((w) => (w.ttlMs ?? 0) >= 3 * 2000)).toBe(true)

        const nodeB = makePriceCacheMemory(params)
        nodeB.setMarkets(markets)
        const tierB = makeSharedPriceTier(cache, nodeB, params)
        const read = await Effect.runPromise(tierB.read(asset))
        const sort = (ts: ReadonlyArray<Tick>) => [...ts].sort((x, y) => x.exchange.localeCompare(y.exchange))
        expect(sort(read)).toEqual(sort(fresh.filter((t) => t.asset === asset)))
        expect(await Effect.runPromise(tierB.read("NOSUCHASSET"))).toEqual([])
        // What B took from the tier is A's news, not B's: B does not write it back.
        for (const t of read) nodeB.ingest(t)
        expect(await Effect.runPromise(tierB.flush)).toBe(0)
      } finally {
        await close()
      }
    })
  })

sharedTierSuite("in-process", async () => ({ cache: makeMemoryCache(), close: async () => {} }))

const redisUrl = freshRedis(11)
sharedTierSuite("Valkey", async () => {
  const scope = await Effect.runPromise(Scope.make())
  const cache = await Effect.runPromise(makeValkeyCache(Redacted.make(redisUrl)).pipe(Scope.provide(scope)))
  return { cache, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
})

/** A fake REST fallback: answers a tick (or nothing) and records what was asked. */
const fakeRest = (exchange: Exchange, answer: (market: { asset: string; quote: string }) => Tick | undefined) => {
  const asked: Array<string> = []
  const rest: RestFallback = {
    exchange,
    fetchTicker: (market) => Effect.sync(() => {
      asked.push(`${market.asset}/${market.quote}`)
      return answer(market)
    }),
    stats: () => ({ requests: asked.length, denials: 0, successes: 0, failures: 0 })
  }
  return { rest, asked }
}

const CARRIERS: ReadonlyArray<CarrierMarket> = [
  { exchange: "coinbase", market: { asset: "SOL", quote: "USD", symbol: "SOL-USD" }, usdEquivalent: false },
  { exchange: "coinbase", market: { asset: "SOL", quote: "USDT", symbol: "SOL-USDT" }, usdEquivalent: true },
  { exchange: "okx", market: { asset: "SOL", quote: "USDT", symbol: "SOL-USDT" }, usdEquivalent: true },
  { exchange: "gateio", market: { asset: "SOL", quote: "USDT", symbol: "SOL_USDT" }, usdEquivalent: false }
]

describe("REST targets for a query", () => {
  it("picks one market per exchange: the quote asked for, for USD also USD-equivalent ones", () => {
    const show = (cs: ReadonlyArray<CarrierMarket>) => cs.map((c) => `${c.exchange}:${c.market.quote}`).sort()
    expect(show(marketsForQuery(CARRIERS, "USD", undefined))).toEqual(["coinbase:USD", "okx:USDT"])
    expect(show(marketsForQuery(CARRIERS, "USDT", undefined))).toEqual(["coinbase:USDT", "gateio:USDT", "okx:USDT"])
    expect(show(marketsForQuery(CARRIERS, "USD", "okx"))).toEqual(["okx:USDT"])
    expect(show(marketsForQuery(CARRIERS, "EUR", undefined))).toEqual([])
  })
})

describe("background refill", () => {
  const setup = (options: { shared?: ReadonlyArray<Tick>; rest?: boolean; restAnswers?: boolean } = {}) => {
    const params = makeParams({ rest_fallback_enabled: options.rest === false ? "false" : "true" })
    const prices = makePriceCacheMemory(params.service)
    prices.setMarkets(CARRIERS.map((c) => ({ exchange: c.exchange, asset: c.market.asset, quote: c.market.quote, usdEquivalent: c.usdEquivalent })))
    const sharedReads: Array<string> = []
    const shared = SharedPriceTier.of({
      enabled: true,
      // A real read is a network round trip: the refill is still running when the next query comes.
      read: (asset) => Effect.sleep("5 millis").pipe(Effect.as(options.shared ?? []), Effect.tap(() => Effect.sync(() => sharedReads.push(asset)))),
      flush: Effect.succeed(0)
    })
    const rests = new Map(EXCHANGES.map((e) => [e, fakeRest(e, (m) => (options.restAnswers === false ? undefined : tick(e, m.asset, m.quote, 150, Date.now())))] as const))
    const pending: Array<Promise<void>> = []
    const refill = makePriceRefill({
      prices,
      params: params.service,
      shared,
      restFor: (e) => rests.get(e)?.rest,
      carriersOf: (asset) => CARRIERS.filter((c) => c.market.asset === asset),
      fork: (effect) => void pending.push(Effect.runPromise(effect))
    })
    prices.onMiss(refill.onMiss)
    const settle = () => Promise.all(pending.splice(0))
    const restAsked = () => [...rests.values()].flatMap((r) => r.asked)
    return { prices, refill, sharedReads, rests, settle, restAsked }
  }

  it("answers the next query, not the one that missed, from the shared tier before REST", async () => {
    const now = Date.now()
    const t = setup({ shared: [tick("coinbase", "SOL", "USD", 150, now - 100), tick("okx", "SOL", "USDT", 150.1, now - 90)] })
    expect(t.prices.lookup("SOL", "USD", undefined, now)._tag).toBe("NoFreshPrice")
    await t.settle()
    expect(t.prices.lookup("SOL", "USD", undefined, Date.now())._tag).toBe("Found")
    expect(t.sharedReads).toEqual(["SOL"])
    expect(t.restAsked()).toEqual([])
    expect(t.refill.stats()).toMatchObject({ refills: 1, sharedHits: 1, restRefills: 0 })
  })

  it("falls through to REST when the shared tier has only stale ticks, one request per exchange", async () => {
    const t = setup({ shared: [tick("coinbase", "SOL", "USD", 150, Date.now() - 60_000)] })
    expect(t.prices.lookup("SOL", "USD", undefined, Date.now())._tag).toBe("NoFreshPrice")
    await t.settle()
    expect(t.restAsked().sort()).toEqual(["SOL/USD", "SOL/USDT"])
    const found = t.prices.lookup("SOL", "USD", undefined, Date.now())
    expect(found._tag === "Found" ? found.answer.sourceCount : 0).toBe(2)
    expect(t.refill.restTicks("coinbase")).toBe(1)
    expect(t.refill.lastRestAt("okx", "SOL", "USDT")).toBeGreaterThan(Date.now() - 5_000)
  })

  it("starts one refill for a storm of misses on the same query", async () => {
    const t = setup()
    for (let i = 0; i < 100; i++) t.prices.lookup("SOL", "USD", undefined, Date.now())
    expect(t.refill.inFlight()).toBe(1)
    await t.settle()
    expect(t.sharedReads).toHaveLength(1)
    expect(t.restAsked()).toHaveLength(2)
  })

  it("cools down after a refill that found nothing, then tries again", async () => {
    const t = setup({ restAnswers: false })
    t.prices.lookup("SOL", "USD", undefined, Date.now())
    await t.settle()
    t.prices.lookup("SOL", "USD", undefined, Date.now())
    await t.settle()
    expect(t.refill.stats().refills).toBe(1)
    await sleep(REFILL_COOLDOWN_MS + 50)
    t.prices.lookup("SOL", "USD", undefined, Date.now())
    await t.settle()
    expect(t.refill.stats().refills).toBe(2)
    expect(t.restAsked()).toHaveLength(4)
  })

  it("never asks REST when the fallback is disabled, nor for queries nothing carries", async () => {
    const off = setup({ rest: false })
    off.prices.lookup("SOL", "USD", undefined, Date.now())
    await off.settle()
    expect(off.sharedReads).toEqual(["SOL"])
    expect(off.restAsked()).toEqual([])
    const on = setup()
    on.prices.lookup("SOL", "EUR", undefined, Date.now())
    on.prices.lookup("SOL", "USD", "kraken", Date.now())
    expect(on.refill.inFlight()).toBe(0)
    await on.settle()
    expect(on.refill.stats().refills).toBe(0)
  })

  it("health and warmth checks do not trigger refills", async () => {
    const t = setup()
    t.prices.isWarm(Date.now())
    t.prices.snapshot(Date.now())
    expect(t.refill.inFlight()).toBe(0)
    await t.settle()
    expect(t.sharedReads).toEqual([])
  })
})
