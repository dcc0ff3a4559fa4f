import { type Effect, Context, type Scope } from "effect"
import type { CompiledAnswer } from "../domain/priceAnswer.ts"
import type { Exchange, Tick } from "../domain/price.ts"

export type PriceLookup =
  | { readonly _tag: "Found"; readonly answer: CompiledAnswer }
  | { readonly _tag: "UnknownAsset" }
  | { readonly _tag: "NoFreshPrice" }

export interface MarketInfo {
  readonly exchange: Exchange
  readonly asset: string
  readonly quote: string
  /** USDT/USDC markets marked USD-equivalent in exchange_asset_map count toward USD answers. */
  readonly usdEquivalent: boolean
}

export interface PriceCacheSnapshot {
  readonly assets: number
  readonly markets: number
  readonly freshAssets: number
  /** At least half of the known assets have a fresh price. */
  readonly warm: boolean
  readonly ticks: number
  readonly newestTickAgeMs: number | undefined
  /** (asset, quote) keys some change subscriber watches. */
  readonly watched: number
}

/** One (asset, quote) a subscriber watches. */
export interface PriceKey {
  readonly asset: string
  readonly quote: string
}

/**
 * A change of one watched consensus price (`source` unset, as `/price` answers it):
 * - `Price`: a new consensus price (published only when `price` differs from the last one, or
 *   after a `Stale`); `ts` is the newest exchange time used, `sources` how many agreed.
 * - `Stale`: no fresh source is left (every one older than `price_stale_ms`), or the asset left the
 *   asset map; `ts` is the last price's time (undefined when there never was one).
 * `at` is the local time (ms) the change was seen, for latency measurements.
 */
export type PriceEvent =
  | {
    readonly _tag: "Price"
    readonly asset: string
    readonly quote: string
    readonly price: number
    readonly ts: number
    readonly sources: number
    readonly at: number
  }
  | { readonly _tag: "Stale"; readonly asset: string; readonly quote: string; readonly ts: number | undefined; readonly at: number }

/** What `watch` answers per key: its current state (the snapshot), or that no market trades it. */
export type WatchResult = PriceEvent | { readonly _tag: "UnknownAsset"; readonly asset: string; readonly quote: string }

/**
 * One reader of price changes. Memory is bounded by the keys it watches, never by how slowly it
 * reads: at most one event per key waits for it (a newer one replaces it).
 */
export interface PriceSubscription {
  /**
   * Start (or keep) watching `keys`; answers each key's current state, in order. A key already
   * pending is answered here and dropped from the pending set. Unknown keys are not watched.
   */
  readonly watch: (keys: ReadonlyArray<PriceKey>) => ReadonlyArray<WatchResult>
  readonly unwatch: (keys: ReadonlyArray<PriceKey>) => void
  /** How many keys this subscription watches. */
  readonly size: () => number
  /** Waits until at least one event is pending, then answers all of them (one per key, the newest). */
  readonly take: Effect.Effect<ReadonlyArray<PriceEvent>>
  /** The pending events now, without waiting (maybe none). */
  readonly poll: () => ReadonlyArray<PriceEvent>
}

/**
 * The in-process price tier: the hot path reads it synchronously, feeds write it synchronously.
 */
export class PriceCache extends Context.Service<PriceCache, {
  readonly ingest: (tick: Tick) => void
  /** The hot path's read. A NoFreshPrice for a known asset is also reported to the miss listener. */
  readonly lookup: (asset: string, quote: string, source: Exchange | undefined, now: number) => PriceLookup
  /**
   * Register the one listener told (synchronously) about every NoFreshPrice `lookup` answers, so
   * the slower tiers can refill in the background. It must only enqueue, never block.
   */
  readonly onMiss: (listener: (asset: string, quote: string, source: Exchange | undefined) => void) => void
  /** Latest tick of one market, if any. */
  readonly marketTick: (exchange: Exchange, asset: string, quote: string) => Tick | undefined
  readonly setMarkets: (markets: ReadonlyArray<MarketInfo>) => void
  /** Warm when at least half of the known assets have a fresh price. */
  readonly isWarm: (now: number) => boolean
  readonly snapshot: (now: number) => PriceCacheSnapshot
  /** Latest tick per market (for the shared Valkey tier and diagnostics). */
  readonly latestTicks: () => ReadonlyArray<Tick>
  /**
   * A reader of consensus changes and staleness of the keys it watches (webhooks, the partner
   * stream). Closing the scope unwatches everything. Ticks of watched assets are compiled once per
   * event-loop turn after they arrive (`ingest` only marks the asset); staleness is checked every
   * 250 ms while anything is watched.
   */
  readonly subscribe: Effect.Effect<PriceSubscription, never, Scope.Scope>
}>()("tb/PriceCache") {}
