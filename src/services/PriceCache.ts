import { Context } from "effect"
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
}>()("tb/PriceCache") {}
