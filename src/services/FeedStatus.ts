import { Context, Data, type Effect } from "effect"
import type { Exchange } from "../domain/price.ts"

/** Health of one market of one exchange (one source of one asset). */
export interface MarketHealth {
  readonly asset: string
  readonly quote: string
  readonly symbol: string
  /** Age of the newest WebSocket tick; undefined before the first. */
  readonly lastTickAgeMs: number | undefined
  /** No WebSocket tick within price_stale_ms. */
  readonly stale: boolean
  /** Age of the newest tick the REST fallback delivered; undefined if it never did. */
  readonly lastRestAgeMs: number | undefined
}

/** Health of one exchange feed (served by /admin/feed-status, summarised in /health). */
export interface ExchangeHealth {
  readonly exchange: Exchange
  readonly enabled: boolean
  readonly connected: boolean
  readonly url: string
  readonly connects: number
  readonly reconnects: number
  /** Connections closed because nothing arrived within the protocol's silence timeout. */
  readonly watchdogTimeouts: number
  readonly messages: number
  readonly ticks: number
  readonly errors: number
  readonly lastError: string | undefined
  readonly lastMessageAgeMs: number | undefined
  readonly messagesPerSec: number
  readonly markets: number
  readonly staleMarkets: number
  /** REST fallback: requests sent, refused locally over budget, failed, and ticks ingested. */
  readonly restRequests: number
  readonly restDenied: number
  readonly restFailures: number
  readonly restTicks: number
  readonly restBudgetPerSecond: number
  /** Per market; only when asked for (the admin view), never in /health's summary. */
  readonly marketHealth?: ReadonlyArray<MarketHealth>
}

/** What a reload changed, by exchange. */
export interface FeedReloadResult {
  readonly started: ReadonlyArray<Exchange>
  readonly stopped: ReadonlyArray<Exchange>
  /** Running exchanges whose URL or markets changed: reconnected with the new plan. */
  readonly restarted: ReadonlyArray<Exchange>
  readonly unchanged: ReadonlyArray<Exchange>
  /** Markets carried now, over all running exchanges. */
  readonly markets: number
}

export class FeedReloadError extends Data.TaggedError("FeedReloadError")<{ readonly message: string }> {}

export class FeedStatus extends Context.Service<FeedStatus, {
  readonly mode: "live" | "simulated" | "none"
  readonly snapshot: (now: number, options?: { readonly markets?: boolean }) => ReadonlyArray<ExchangeHealth>
  /** Re-read exchange_feeds / exchange_asset_map and restart only what changed. */
  readonly reload: Effect.Effect<FeedReloadResult, FeedReloadError>
}>()("tb/FeedStatus") {}
