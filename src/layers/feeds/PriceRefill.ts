/**
 * The fall-through below the in-process tier. The hot path never waits: when a lookup finds no
 * fresh price, the PriceCache tells `onMiss`, which starts (at most one per asset query) a
 * background refill and returns at once; that query answers NO_FRESH_PRICE, the next one finds
 * whatever the refill brought. The refill asks the shared Valkey tier first, and only if the
 * asset is still without a fresh price, each exchange's REST ticker within its budget.
 */
import { Effect } from "effect"
import type { MarketSymbol } from "../../domain/exchanges/protocol.ts"
import type { Exchange, Tick } from "../../domain/price.ts"
import type { Params } from "../../services/Params.ts"
import type { PriceCache } from "../../services/PriceCache.ts"
import type { RestFallback } from "./RestFallback.ts"
import { type SharedPriceTier, tickTime } from "./SharedPriceTier.ts"

/** One market that carries an asset, as exchange_asset_map says. */
export interface CarrierMarket {
  readonly exchange: Exchange
  readonly market: MarketSymbol
  readonly usdEquivalent: boolean
}

export interface PriceRefillDeps {
  readonly prices: PriceCache["Service"]
  readonly params: Params["Service"]
  readonly shared: SharedPriceTier["Service"]
  /** The REST fallback of an exchange that runs now (a reload may replace or remove it). */
  readonly restFor: (exchange: Exchange) => RestFallback | undefined
  /** Markets of running exchanges that carry this asset (a reload may change them). */
  readonly carriersOf: (asset: string) => ReadonlyArray<CarrierMarket>
  /** Starts a refill in the background (a scoped fork). */
  readonly fork: (refill: Effect.Effect<void>) => void
  readonly now?: () => number
}

export interface PriceRefillStats {
  readonly refills: number
  /** Refills the shared tier answered. */
  readonly sharedHits: number
  /** Refills that went on to the REST fallbacks. */
  readonly restRefills: number
}

export interface PriceRefill {
  /** The PriceCache miss listener. Synchronous and cheap: a set lookup, at most a fork. */
  readonly onMiss: (asset: string, quote: string, source: Exchange | undefined) => void
  /** Ticks the REST fallback delivered and the cache took, for one exchange. */
  readonly restTicks: (exchange: Exchange) => number
  /** When the REST fallback last delivered this market, if ever. */
  readonly lastRestAt: (exchange: Exchange, asset: string, quote: string) => number | undefined
  readonly stats: () => PriceRefillStats
  /** Refills running now. */
  readonly inFlight: () => number
}

/** After a refill that left the asset without a price, wait this long before the next attempt. */
export const REFILL_COOLDOWN_MS = 250
/** Forget cool-downs past this many keys (clients choose quotes and sources, so keys are theirs). */
const MAX_COOLDOWN_KEYS = 10_000
const USD = "USD"

/** The markets whose tickers can answer (asset, quote, source): one per exchange, USD before USD-equivalents. */
export const marketsForQuery = (
  carriers: ReadonlyArray<CarrierMarket>,
  quote: string,
  source: Exchange | undefined
): ReadonlyArray<CarrierMarket> => {
  const byExchange = new Map<Exchange, CarrierMarket>()
  for (const c of carriers) {
    if (source !== undefined && c.exchange !== source) continue
    if (c.market.quote === quote) byExchange.set(c.exchange, c)
    else if (quote === USD && c.usdEquivalent && !byExchange.has(c.exchange)) byExchange.set(c.exchange, c)
  }
  return [...byExchange.values()]
}

export const makePriceRefill = (deps: PriceRefillDeps): PriceRefill => {
  const { prices, params, shared } = deps
  const now = deps.now ?? Date.now
  const running = new Set<string>()
  const cooledAt = new Map<string, number>()
  const restTicks = new Map<Exchange, number>()
  const lastRest = new Map<string, number>()
  const counts = { refills: 0, sharedHits: 0, restRefills: 0 }

  /** Take a tick unless the cache already holds a newer one for that market. */
  const offer = (tick: Tick): boolean => {
    const held = prices.marketTick(tick.exchange, tick.asset, tick.quote)
    if (held !== undefined && tickTime(held) >= tickTime(tick)) return false
    prices.ingest(tick)
    return true
  }

  const answered = (asset: string, quote: string, source: Exchange | undefined): boolean =>
    prices.lookup(asset, quote, source, now())._tag === "Found"

  const refill = (asset: string, quote: string, source: Exchange | undefined, targets: ReadonlyArray<CarrierMarket>) =>
    Effect.gen(function*() {
      counts.refills++
      if (shared.enabled) {
        const staleMs = params.int("price_stale_ms")
        const t = now()
        let taken = 0
        for (const tick of yield* shared.read(asset)) if (t - tickTime(tick) <= staleMs && offer(tick)) taken++
        if (taken > 0 && answered(asset, quote, source)) {
          counts.sharedHits++
          return
        }
      }
      if (!params.bool("rest_fallback_enabled")) return
      counts.restRefills++
      yield* Effect.forEach(targets, ({ exchange, market }) => {
        const rest = deps.restFor(exchange)
        if (rest === undefined) return Effect.void
        return rest.fetchTicker(market).pipe(Effect.map((tick) => {
          if (tick === undefined || !offer(tick)) return
          restTicks.set(exchange, (restTicks.get(exchange) ?? 0) + 1)
          lastRest.set(`${exchange}|${tick.asset}|${tick.quote}`, tick.receivedAt)
        }))
      }, { concurrency: "unbounded", discard: true })
    })

  const onMiss = (asset: string, quote: string, source: Exchange | undefined): void => {
    const key = source === undefined ? `${asset}/${quote}` : `${asset}/${quote}/${source}`
    if (running.has(key)) return
    const t = now()
    const cooled = cooledAt.get(key)
    if (cooled !== undefined && t - cooled < REFILL_COOLDOWN_MS) return
    const targets = marketsForQuery(deps.carriersOf(asset), quote, source)
    // Nothing carries this query (a quote or source the asset is not traded in): nothing to refill.
    if (targets.length === 0) return
    running.add(key)
    deps.fork(refill(asset, quote, source, targets).pipe(
      Effect.ensuring(Effect.sync(() => {
        running.delete(key)
        if (cooledAt.size >= MAX_COOLDOWN_KEYS) cooledAt.clear()
        cooledAt.set(key, now())
      }))
    ))
  }

  return {
    onMiss,
    restTicks: (exchange) => restTicks.get(exchange) ?? 0,
    lastRestAt: (exchange, asset, quote) => lastRest.get(`${exchange}|${asset}|${quote}`),
    stats: () => ({ ...counts }),
    inFlight: () => running.size
  }
}
