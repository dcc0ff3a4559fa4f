import { Effect, Layer } from "effect"
import { type CompiledAnswer, compileAnswer } from "../domain/priceAnswer.ts"
import type { Exchange, Tick } from "../domain/price.ts"
import { Params } from "../services/Params.ts"
import {
  type MarketInfo,
  PriceCache,
  type PriceEvent,
  type PriceKey,
  type PriceLookup,
  type PriceSubscription,
  type WatchResult
} from "../services/PriceCache.ts"

interface AssetEntry {
  readonly asset: string
  /** Latest tick per "exchange|quote". */
  readonly ticks: Map<string, Tick>
  version: number
  readonly answers: Map<string, { readonly version: number; readonly answer: CompiledAnswer | undefined; readonly validUntil: number }>
  /** Quotes some market of this asset is traded in, plus USD when a market counts toward it. */
  readonly quotes: Set<string>
  /** Watched quotes of this asset (shared with `watchedByAsset`), undefined when none: ingest's only extra check. */
  watched: Map<string, Watched> | undefined
  /** Queued for the next change flush. */
  dirty: boolean
}

/** One watched (asset, quote): the last state published, and who reads it. */
interface Watched {
  readonly asset: string
  readonly quote: string
  readonly key: string
  readonly readers: Set<Reader>
  last: PriceEvent
  /** The published price turns stale (or loses a source) at this time. */
  validUntil: number
}

interface Reader {
  /** Newest unread event per key: bounded by the keys watched, whatever the reading speed. */
  readonly pending: Map<string, PriceEvent>
  readonly keys: Map<string, Watched>
  wake: (() => void) | undefined
}

const USD = "USD"
/** How often watched prices are checked for staleness (a price goes stale without any tick). */
const STALE_SWEEP_MS = 250
const keyOf = (asset: string, quote: string): string => `${asset}/${quote}`

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
  const watchedByAsset = new Map<string, Map<string, Watched>>()
  let watchedCount = 0
  let dirty: Array<AssetEntry> = []
  let flushScheduled = false
  let sweepTimer: ReturnType<typeof setInterval> | undefined
  let toWake: Array<Reader> = []

  const entry = (asset: string): AssetEntry => {
    let e = assets.get(asset)
    if (e === undefined) {
      e = { asset, ticks: new Map(), version: 0, answers: new Map(), quotes: new Set(), watched: watchedByAsset.get(asset), dirty: false }
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

  const publish = (w: Watched, event: PriceEvent) => {
    w.last = event
    for (const r of w.readers) {
      r.pending.delete(w.key) // re-inserted last: pending events stay in the order they happened
      r.pending.set(w.key, event)
      if (r.wake !== undefined) toWake.push(r)
    }
  }

  /**
   * Wakes waiting readers once a pass is over: a resumed fiber runs on this stack at once, and it
   * must see the whole pass, and may watch or unwatch, without disturbing the loop that published.
   */
  const wakeReaders = () => {
    if (toWake.length === 0) return
    const readers = toWake
    toWake = []
    for (const r of readers) {
      const wake = r.wake
      r.wake = undefined
      wake?.()
    }
  }

  /** Recompile one watched price (reusing the hot path's cached answer) and publish it if it changed. */
  const evaluate = (w: Watched, now: number) => {
    const found = lookupQuiet(w.asset, w.quote, undefined, now)
    if (found._tag === "Found") {
      const a = found.answer
      w.validUntil = a.oldestTs + params.int("price_stale_ms")
      if (w.last._tag === "Stale" || w.last.price !== a.price) {
        publish(w, { _tag: "Price", asset: w.asset, quote: w.quote, price: a.price, ts: a.ts, sources: a.sourceCount, at: now })
      }
    } else if (w.last._tag === "Price") {
      w.validUntil = Number.POSITIVE_INFINITY
      publish(w, { _tag: "Stale", asset: w.asset, quote: w.quote, ts: w.last.ts, at: now })
    }
  }

  /** One pass over the assets ticked since the last one: at most one compile per asset per turn. */
  const flush = () => {
    flushScheduled = false
    const batch = dirty
    dirty = []
    const now = Date.now()
    for (const e of batch) {
      e.dirty = false
      if (e.watched !== undefined) for (const w of e.watched.values()) evaluate(w, now)
    }
    wakeReaders()
  }

  const markDirty = (e: AssetEntry) => {
    if (e.dirty) return
    e.dirty = true
    dirty.push(e)
    if (!flushScheduled) {
      flushScheduled = true
      setImmediate(flush)
    }
  }

  const sweep = () => {
    const now = Date.now()
    for (const byQuote of watchedByAsset.values()) {
      for (const w of byQuote.values()) if (now >= w.validUntil) evaluate(w, now)
    }
    wakeReaders()
  }

  const addWatch = (asset: string, quote: string, now: number): Watched | undefined => {
    const e = assets.get(asset)
    if (e === undefined || !e.quotes.has(quote)) return undefined
    let byQuote = watchedByAsset.get(asset)
    if (byQuote === undefined) {
      byQuote = new Map()
      watchedByAsset.set(asset, byQuote)
      e.watched = byQuote
    }
    let w = byQuote.get(quote)
    if (w === undefined) {
      w = {
        asset, quote, key: keyOf(asset, quote), readers: new Set(), validUntil: Number.POSITIVE_INFINITY,
        last: { _tag: "Stale", asset, quote, ts: undefined, at: now }
      }
      byQuote.set(quote, w)
      if (watchedCount++ === 0) sweepTimer = setInterval(sweep, STALE_SWEEP_MS).unref()
    }
    // Brought up to date now, so the snapshot is what later changes are measured against.
    evaluate(w, now)
    return w
  }

  const dropWatch = (w: Watched) => {
    if (w.readers.size > 0) return
    const byQuote = watchedByAsset.get(w.asset)
    if (byQuote?.get(w.quote) !== w) return
    byQuote.delete(w.quote)
    if (byQuote.size === 0) {
      watchedByAsset.delete(w.asset)
      const e = assets.get(w.asset)
      if (e !== undefined) e.watched = undefined
    }
    if (--watchedCount === 0 && sweepTimer !== undefined) {
      clearInterval(sweepTimer)
      sweepTimer = undefined
    }
  }

  const drain = (r: Reader): ReadonlyArray<PriceEvent> => {
    if (r.pending.size === 0) return []
    const events = [...r.pending.values()]
    r.pending.clear()
    return events
  }

  const makeSubscription = (): { readonly subscription: PriceSubscription; readonly close: () => void } => {
    const reader: Reader = { pending: new Map(), keys: new Map(), wake: undefined }
    const unwatch = (keys: ReadonlyArray<PriceKey>) => {
      for (const k of keys) {
        const key = keyOf(k.asset, k.quote)
        const w = reader.keys.get(key)
        if (w === undefined) continue
        reader.keys.delete(key)
        reader.pending.delete(key)
        w.readers.delete(reader)
        dropWatch(w)
      }
    }
    const subscription: PriceSubscription = {
      watch: (keys) => {
        const now = Date.now()
        const answers = keys.map((k): WatchResult => {
          const key = keyOf(k.asset, k.quote)
          const w = reader.keys.get(key) ?? addWatch(k.asset, k.quote, now)
          if (w === undefined) return { _tag: "UnknownAsset", asset: k.asset, quote: k.quote }
          reader.keys.set(key, w)
          w.readers.add(reader)
          reader.pending.delete(key)
          return w.last
        })
        wakeReaders() // bringing a key up to date may have published to its other readers
        return answers
      },
      unwatch,
      size: () => reader.keys.size,
      take: Effect.callback<ReadonlyArray<PriceEvent>>((resume) => {
        if (reader.pending.size > 0) return resume(Effect.succeed(drain(reader)))
        reader.wake = () => resume(Effect.sync(() => drain(reader)))
        return Effect.sync(() => {
          reader.wake = undefined
        })
      }),
      poll: () => drain(reader)
    }
    return {
      subscription,
      close: () => {
        reader.wake = undefined
        unwatch([...reader.keys.values()])
      }
    }
  }

  const snapshot = (now: number) => {
    let fresh = 0
    let markets = 0
    for (const [asset, e] of assets) {
      markets += e.ticks.size
      if (lookupQuiet(asset, USD, undefined, now)._tag === "Found") fresh++
    }
    return {
      assets: assets.size, markets, freshAssets: fresh, ticks, watched: watchedCount,
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
      if (e.watched !== undefined) markDirty(e)
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
      // Watched prices follow the new map at once: a dropped asset or quote turns stale.
      const now = Date.now()
      for (const byQuote of watchedByAsset.values()) for (const w of byQuote.values()) evaluate(w, now)
      wakeReaders()
    },
    isWarm: (now) => snapshot(now).warm,
    snapshot: (now) => snapshot(now),
    latestTicks: () => [...assets.values()].flatMap((e) => [...e.ticks.values()]),
    subscribe: Effect.acquireRelease(Effect.sync(makeSubscription), (s) => Effect.sync(s.close)).pipe(
      Effect.map((s) => s.subscription)
    )
  })
}

export const PriceCacheMemory = Layer.effect(PriceCache, Effect.gen(function*() {
  return makePriceCacheMemory(yield* Params)
}))
