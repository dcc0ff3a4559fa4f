/**
 * The shared price tier: this node's fresh ticks, written to Valkey in one batched call every
 * `cache_price_flush_ms`, and read back for an asset this node has no fresh price for (a node that
 * just started, or whose own feeds for that asset are down). Reads happen off the hot path, in the
 * background refill (PriceRefill.ts). With the in-process cache there is nobody to share with,
 * so the tier is off.
 */
import { Context, Duration, Effect, Layer } from "effect"
import { type Exchange, isExchange, type Tick } from "../../domain/price.ts"
import { Cache, type CacheError, type HashWrite } from "../../services/Cache.ts"
import { Params } from "../../services/Params.ts"
import { PriceCache } from "../../services/PriceCache.ts"
import { withModule } from "../Logging.ts"

export class SharedPriceTier extends Context.Service<SharedPriceTier, {
  readonly enabled: boolean
  /** Ticks other nodes shared for this asset, fresh or not; empty when off or unreachable. Never fails. */
  readonly read: (asset: string) => Effect.Effect<ReadonlyArray<Tick>>
  /** Write this node's fresh ticks in one batched call; answers how many. */
  readonly flush: Effect.Effect<number, CacheError>
}>()("tb/SharedPriceTier") {
  static readonly off = Layer.succeed(SharedPriceTier, SharedPriceTier.of({
    enabled: false,
    read: () => Effect.succeed([]),
    flush: Effect.succeed(0)
  }))
}

/** One hash per asset; one field per market. */
export const priceKey = (asset: string): string => `price:${asset}`
export const priceField = (exchange: Exchange, quote: string): string => `${exchange}|${quote}`

const orNull = (x: number | undefined): number | null => (x === undefined ? null : x)

/** Compact JSON: `[last, bid, ask, exchangeTs, receivedAt]`, null for an absent value. */
export const encodeTick = (tick: Tick): string =>
  JSON.stringify([orNull(tick.last), orNull(tick.bid), orNull(tick.ask), orNull(tick.exchangeTs), tick.receivedAt])

const optionalNumber = (u: unknown): number | undefined | false =>
  u === null ? undefined : typeof u === "number" && Number.isFinite(u) ? u : false

/** The tick a field holds, or undefined when it is not one of ours (never throws). */
export const decodeTick = (asset: string, field: string, value: string): Tick | undefined => {
  const bar = field.indexOf("|")
  const exchange = field.slice(0, bar)
  const quote = field.slice(bar + 1)
  if (bar <= 0 || quote === "" || !isExchange(exchange)) return undefined
  let parsed: unknown
  try {
    parsed = JSON.parse(value)
  } catch {
    return undefined
  }
  if (!Array.isArray(parsed) || parsed.length !== 5) return undefined
  const [last, bid, ask, exchangeTs, receivedAt] = parsed.map(optionalNumber)
  if (last === false || bid === false || ask === false || exchangeTs === false || receivedAt === false || receivedAt === undefined) return undefined
  return { exchange, asset, quote, last, bid, ask, exchangeTs, receivedAt }
}

export const tickTime = (tick: Tick): number => tick.exchangeTs ?? tick.receivedAt

export const makeSharedPriceTier = (
  cache: Cache["Service"],
  prices: PriceCache["Service"],
  params: Params["Service"],
  now: () => number = Date.now
): SharedPriceTier["Service"] => {
  /** Ticks this node read from the tier: never written back, so a node cannot echo old news. */
  const fromShared = new WeakSet<Tick>()

  const read = (asset: string): Effect.Effect<ReadonlyArray<Tick>> =>
    cache.hgetall(priceKey(asset)).pipe(
      Effect.map((fields) => {
        const ticks: Array<Tick> = []
        for (const [field, value] of Object.entries(fields)) {
          const tick = decodeTick(asset, field, value)
          if (tick === undefined) continue
          fromShared.add(tick)
          ticks.push(tick)
        }
        return ticks
      }),
      Effect.catch((error) => Effect.logDebug("shared price tier unreadable", { error: error.message }).pipe(Effect.as([])))
    )

  const flush = Effect.suspend(() => {
    const t = now()
    const staleMs = params.int("price_stale_ms")
    // Long enough to survive a missed flush; short enough that a dead cluster's prices vanish.
    const ttlMs = 3 * Math.max(staleMs, params.int("cache_price_flush_ms"))
    const byAsset = new Map<string, Record<string, string>>()
    let count = 0
    for (const tick of prices.latestTicks()) {
      // A stale tick would overwrite a fresher one another node wrote.
      if (fromShared.has(tick) || t - tickTime(tick) > staleMs) continue
      let fields = byAsset.get(tick.asset)
      if (fields === undefined) {
        fields = {}
        byAsset.set(tick.asset, fields)
      }
      fields[priceField(tick.exchange, tick.quote)] = encodeTick(tick)
      count++
    }
    const writes: Array<HashWrite> = [...byAsset].map(([asset, values]) => ({ key: priceKey(asset), values, ttlMs }))
    return cache.hsetMany(writes).pipe(Effect.as(count))
  })

  return SharedPriceTier.of({ enabled: true, read, flush })
}

/** Valkey configured: share on a schedule (`cache_price_flush_ms`, retunable live). Otherwise off. */
export const SharedPriceTierLive = Layer.unwrap(Effect.gen(function*() {
  const cache = yield* Cache
  if (cache.kind === "memory") return SharedPriceTier.off
  const params = yield* Params
  const tier = makeSharedPriceTier(cache, yield* PriceCache, params)
  let lastFlush = Date.now()
  const flushIfDue = Effect.suspend(() => {
    if (Date.now() - lastFlush < params.int("cache_price_flush_ms")) return Effect.void
    lastFlush = Date.now()
    return tier.flush.pipe(
      Effect.tap((written) => Effect.logDebug("prices shared", { ticks: written })),
      Effect.catch((error) => Effect.logWarning("sharing prices failed", { error: error.message }))
    )
  })
  // Wake at least every second, so a retuned cache_price_flush_ms applies within a second.
  const flushLoop = Effect.suspend(() => Effect.sleep(Duration.millis(Math.min(1_000, params.int("cache_price_flush_ms"))))).pipe(
    Effect.andThen(flushIfDue),
    Effect.forever,
    withModule("price-tier")
  )
  return Layer.effect(SharedPriceTier, Effect.forkScoped(flushLoop).pipe(Effect.as(tier)))
}))
