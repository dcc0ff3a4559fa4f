/**
 * PriceCache's change stream: snapshots on watch, one event per consensus change (not per tick),
 * staleness, a slow reader holding one event per key whatever it misses, unwatch and scope close.
 */
import { Effect, Fiber, Layer } from "effect"
import { describe, expect, it } from "vitest"
import type { Exchange, Tick } from "../src/domain/price.ts"
import { PriceCacheMemory } from "../src/layers/PriceCacheMemory.ts"
import { PriceCache, type PriceEvent } from "../src/services/PriceCache.ts"
import { testParams } from "./support/params.ts"

const tick = (exchange: Exchange, asset: string, mid: number, at = Date.now(), quote = "USD"): Tick => ({
  exchange, asset, quote, last: mid, bid: mid, ask: mid, exchangeTs: at, receivedAt: at
})

const MARKETS = (["BTC", "ETH", "SOL"] as const).flatMap((asset) =>
  (["coinbase", "kraken", "okx"] as const).map((exchange) => ({ exchange, asset, quote: "USD", usdEquivalent: false }))
)

const run = <A>(staleMs: number, body: (prices: PriceCache["Service"]) => Effect.Effect<A, unknown, import("effect").Scope.Scope>) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const prices = yield* PriceCache
    prices.setMarkets(MARKETS)
    return yield* body(prices)
  })).pipe(Effect.provide(PriceCacheMemory.pipe(Layer.provide(testParams({ price_stale_ms: String(staleMs) }))))))

/** Lets the change flush (setImmediate) run. */
const turn = Effect.promise(() => new Promise<void>((r) => setImmediate(r)))

const prices = (events: ReadonlyArray<PriceEvent>) => events.map((e) => (e._tag === "Price" ? `${e.asset}/${e.quote}=${e.price}` : `${e.asset}/${e.quote} stale`))

describe("PriceCache change stream", () => {
  it("answers watch with the current state of each key: price, stale, unknown", () =>
    run(10_000, (cache) => Effect.gen(function*() {
      cache.ingest(tick("coinbase", "BTC", 100))
      cache.ingest(tick("kraken", "BTC", 102))
      const sub = yield* cache.subscribe
      const snap = sub.watch([{ asset: "BTC", quote: "USD" }, { asset: "ETH", quote: "USD" }, { asset: "DOGE", quote: "USD" }, { asset: "BTC", quote: "EUR" }])
      expect(snap.map((s) => s._tag)).toEqual(["Price", "Stale", "UnknownAsset", "UnknownAsset"])
      expect(snap[0]).toMatchObject({ _tag: "Price", asset: "BTC", quote: "USD", price: 101, sources: 2 })
      expect(snap[1]).toMatchObject({ _tag: "Stale", asset: "ETH", ts: undefined })
      expect(sub.size()).toBe(2)
      expect(cache.snapshot(Date.now()).watched).toBe(2)
      yield* turn
      expect(sub.poll()).toEqual([])
    })))

  it("publishes once per consensus change, not per tick, and only for watched keys", () =>
    run(10_000, (cache) => Effect.gen(function*() {
      cache.ingest(tick("coinbase", "BTC", 1000))
      const sub = yield* cache.subscribe
      sub.watch([{ asset: "BTC", quote: "USD" }])
      // A newer tick at the same price is not a change.
      cache.ingest(tick("coinbase", "BTC", 1000, Date.now() + 1))
      cache.ingest(tick("coinbase", "ETH", 5))
      yield* turn
      expect(sub.poll()).toEqual([])
      // Three ticks in one turn: one compile, one event with the newest consensus.
      const before = Date.now()
      cache.ingest(tick("kraken", "BTC", 1004))
      cache.ingest(tick("okx", "BTC", 1006))
      cache.ingest(tick("coinbase", "BTC", 1002))
      const events = yield* sub.take
      expect(prices(events)).toEqual(["BTC/USD=1004"])
      expect(events[0]).toMatchObject({ sources: 3 })
      expect(events[0]?.at).toBeGreaterThanOrEqual(before)
      // A source moving without moving the median is no change.
      cache.ingest(tick("okx", "BTC", 1010))
      yield* turn
      expect(sub.poll()).toEqual([])
      cache.ingest(tick("okx", "BTC", 990))
      expect(prices(yield* sub.take)).toEqual(["BTC/USD=1002"])
    })))

  it("wakes a waiting reader and keeps every reader's events separate", () =>
    run(10_000, (cache) => Effect.gen(function*() {
      cache.ingest(tick("coinbase", "BTC", 100))
      cache.ingest(tick("coinbase", "ETH", 10))
      const a = yield* cache.subscribe
      const b = yield* cache.subscribe
      a.watch([{ asset: "BTC", quote: "USD" }, { asset: "ETH", quote: "USD" }])
      b.watch([{ asset: "ETH", quote: "USD" }])
      const waiting = yield* Effect.forkChild(a.take, { startImmediately: true })
      cache.ingest(tick("coinbase", "BTC", 101))
      cache.ingest(tick("coinbase", "ETH", 11))
      expect(prices(yield* Fiber.join(waiting))).toEqual(["BTC/USD=101", "ETH/USD=11"])
      expect(prices(b.poll())).toEqual(["ETH/USD=11"])
    })))

  it("holds one event per key for a reader that does not read, the newest", () =>
    run(10_000, (cache) => Effect.gen(function*() {
      cache.ingest(tick("coinbase", "BTC", 100))
      cache.ingest(tick("coinbase", "SOL", 100))
      const slow = yield* cache.subscribe
      slow.watch([{ asset: "BTC", quote: "USD" }, { asset: "SOL", quote: "USD" }])
      for (let i = 1; i <= 2000; i++) {
        cache.ingest(tick("coinbase", "BTC", 100 + i))
        if (i % 2 === 0) cache.ingest(tick("coinbase", "SOL", 100 + i))
        if (i % 100 === 0) yield* turn
      }
      yield* turn
      expect(prices(slow.poll())).toEqual(["BTC/USD=2100", "SOL/USD=2100"])
      // Pending events keep the order of the changes, the newest change last.
      cache.ingest(tick("coinbase", "BTC", 5000))
      yield* turn
      cache.ingest(tick("coinbase", "SOL", 5000))
      yield* turn
      cache.ingest(tick("coinbase", "BTC", 5001))
      yield* turn
      expect(prices(yield* slow.take)).toEqual(["SOL/USD=5000", "BTC/USD=5001"])
    })))

  it("tells a watched price went stale, and fresh again", () =>
    run(150, (cache) => Effect.gen(function*() {
      const at = Date.now()
      cache.ingest(tick("coinbase", "BTC", 100, at))
      const sub = yield* cache.subscribe
      expect(sub.watch([{ asset: "BTC", quote: "USD" }])[0]?._tag).toBe("Price")
      const events = yield* sub.take.pipe(Effect.timeout("2 seconds"))
      expect(events).toEqual([expect.objectContaining({ _tag: "Stale", asset: "BTC", quote: "USD", ts: at })])
      const staleAt = events[0]?.at ?? 0
      expect(staleAt - at).toBeGreaterThanOrEqual(150)
      expect(staleAt - at).toBeLessThan(150 + 250 + 1000) // the sweep period, and room for a loaded machine
      cache.ingest(tick("kraken", "BTC", 100))
      expect(prices(yield* sub.take)).toEqual(["BTC/USD=100"])
    })))

  it("turns a price stale when its asset leaves the asset map", () =>
    run(10_000, (cache) => Effect.gen(function*() {
      cache.ingest(tick("coinbase", "SOL", 100))
      const sub = yield* cache.subscribe
      sub.watch([{ asset: "SOL", quote: "USD" }])
      cache.setMarkets(MARKETS.filter((m) => m.asset !== "SOL"))
      expect(prices(sub.poll())).toEqual(["SOL/USD stale"])
    })))

  it("stops after unwatch and when its scope closes", () =>
    run(10_000, (cache) => Effect.gen(function*() {
      cache.ingest(tick("coinbase", "BTC", 100))
      const sub = yield* cache.subscribe
      sub.watch([{ asset: "BTC", quote: "USD" }])
      cache.ingest(tick("coinbase", "BTC", 101))
      yield* turn
      sub.unwatch([{ asset: "BTC", quote: "USD" }])
      expect(sub.size()).toBe(0)
      expect(sub.poll()).toEqual([]) // the pending event went with the key
      cache.ingest(tick("coinbase", "BTC", 102))
      yield* turn
      expect(sub.poll()).toEqual([])

      const other = yield* Effect.scoped(Effect.gen(function*() {
        const s = yield* cache.subscribe
        s.watch([{ asset: "BTC", quote: "USD" }])
        return s
      }))
      cache.ingest(tick("coinbase", "BTC", 103))
      yield* turn
      expect(other.size()).toBe(0)
      expect(other.poll()).toEqual([])
      // Nothing is left watched: ticks cost nothing extra and no stale sweep runs.
      expect(cache.snapshot(Date.now()).watched).toBe(0)
    })))
})
