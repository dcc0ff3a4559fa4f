import { Effect, Layer } from "effect"
import { type CompiledAnswer, compileAnswer } from "../domain/priceAnswer.ts"
import type { Exchange, Tick } from "../domain/price.ts"
import { Params } from "../services/Params.ts"
import { type MarketInfo, PriceCache, type PriceLookup } from "../services/PriceCache.ts"

interface AssetEntry {
  /** Latest tick per "exchange|quote". */
  readonly ticks: Map<string, Tick>
  version: number
  readonly answers: Map<string, { readonly version: number; readonly answer: CompiledAnswer | undefined; readonly validUntil: number }>
  /** Quotes some market of this asset is traded in, plus USD when a market counts toward it. */
  readonly quotes: Set<string>
}

const USD = "USD"

/**
 * Latest tick per (exchange, market) and answers compiled from them, reused until a new tick
 * arrives for the asset or a used source turns stale.
 */
export const makePriceCacheMemory = (params: Params["Service"]) => {
  const assets = new Map<string, AssetEntry>()
  const usdEquivalent = new Set<string>()
  let ticks = 0
  let newestTick: number | undefined
  let missListener: ((asset: string, quote: string, source: Exchange | undefined) => void) | undefined

  const entry = (asset: string): AssetEntry => {
    let e = assets.get(asset)
    if (e === undefined) {
      e = { ticks: new Map(), version: 0, answers: new Map(), quotes: new Set() }
      assets.set(asset, e)
    }
    return e
  }

  /** Ticks usable for `quote`: for USD, one market per exchange, the USD one first, else a USD-equivalent one. */
  const ticksFor = (e: AssetEntry, asset: string, quote: string): Array<Tick> => {
    if (quote !== USD) return [...e.ticks.values()].filter((t) => t.quote === quote)
    const byExchange = new Map<Exchange, Tick>()
    for (const t of e.ticks.values()) {
      if (t.quote === USD) byExchange.set(t.exchange, t)
      else if (usdEquivalent.has(`${t.exchange}|${asset}|${t.quote}`) && !byExchange.has(t.exchange)) byExchange.set(t.exchange, t)
    }
    return [...byExchange.values()]
  }

  /** Without telling the miss listener: for health and warmth checks, which must not trigger refills. */
  const lookupQuiet = (asset: string, quote: string, source: Exchange | undefined, now: number): PriceLookup => {
    const e = assets.get(asset)
    // A quote no market of the asset is traded in is unknown: nothing to compile, cache or refill.
    if (e === undefined || !e.quotes.has(quote)) return { _tag: "UnknownAsset" }
    const cacheKey = source === undefined ? quote : `${quote}|${source}`
    const cached = e.answers.get(cacheKey)
    let answer: CompiledAnswer | undefined
    if (cached !== undefined && cached.version === e.version && now < cached.validUntil) {
      answer = cached.answer
    } else {
      const staleMs = params.int("price_stale_ms")
      answer = compileAnswer(asset, quote, ticksFor(e, asset, quote), source, now, staleMs, Number(params.current().consensus_max_deviation_bps))
      // No answer now may be an answer after the next tick, which bumps the version anyway.
      e.answers.set(cacheKey, { version: e.version, answer, validUntil: answer === undefined ? now + 250 : answer.oldestTs + staleMs })
    }
    return answer === undefined ? { _tag: "NoFreshPrice" } : { _tag: "Found", answer }
  }

  const snapshot = (now: number) => {
    let fresh = 0
    let markets = 0
    for (const [asset, e] of assets) {
      markets += e.ticks.size
      if (lookupQuiet(asset, USD, undefined, now)._tag === "Found") fresh++
    }
    return {
      assets: assets.size, markets, freshAssets: fresh, ticks,
      newestTickAgeMs: newestTick === undefined ? undefined : now - newestTick,
      // Warm when at least half of the known assets have a fresh price.
      warm: assets.size > 0 && fresh * 2 >= assets.size
    }
  }

  const lookup = (asset: string, quote: string, source: Exchange | undefined, now: number): PriceLookup => {
    const found = lookupQuiet(asset, quote, source, now)
    if (found._tag === "NoFreshPrice" && missListener !== undefined) missListener(asset, quote, source)
    return found
  }

  return PriceCache.of({
    ingest: (tick) => {
      const e = assets.get(tick.asset)
      if (e === undefined) return // a market the asset map does not (or no longer) list
      e.ticks.set(`${tick.exchange}|${tick.quote}`, tick)
      e.version++
      ticks++
      newestTick = tick.receivedAt
    },
    lookup,
    onMiss: (listener) => {
      missListener = listener
    },
    marketTick: (exchange, asset, quote) => assets.get(asset)?.ticks.get(`${exchange}|${quote}`),
    setMarkets: (markets: ReadonlyArray<MarketInfo>) => {
      // Rebuilt, not merged: a market dropped by a reload (or no longer USD-equivalent) must stop counting.
      const known = new Set(markets.map((m) => m.asset))
      for (const asset of assets.keys()) if (!known.has(asset)) assets.delete(asset)
      usdEquivalent.clear()
      for (const e of assets.values()) e.quotes.clear()
      for (const m of markets) {
        const e = entry(m.asset)
        e.quotes.add(m.quote)
        if (m.quote === USD || m.usdEquivalent) e.quotes.add(USD)
        if (m.usdEquivalent) usdEquivalent.add(`${m.exchange}|${m.asset}|${m.quote}`)
        e.version++
      }
    },
    isWarm: (now) => snapshot(now).warm,
    snapshot: (now) => snapshot(now),
    latestTicks: () => [...assets.values()].flatMap((e) => [...e.ticks.values()])
  })
}

export const PriceCacheMemory = Layer.effect(PriceCache, Effect.gen(function*() {
  return makePriceCacheMemory(yield* Params)
}))
