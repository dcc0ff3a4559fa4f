import { Context, Layer } from "effect"
import type { Exchange } from "../domain/price.ts"

/** Health of one exchange feed (served by /admin/feed-status, summarised in /health). */
export interface ExchangeHealth {
  readonly exchange: Exchange
  readonly enabled: boolean
  readonly connected: boolean
  readonly url: string
  readonly connects: number
  readonly reconnects: number
  readonly messages: number
  readonly ticks: number
  readonly errors: number
  readonly lastError: string | undefined
  readonly lastMessageAgeMs: number | undefined
  readonly messagesPerSec: number
  readonly markets: number
  readonly staleMarkets: number
  readonly restRequests: number
  readonly restDenied: number
}

export class FeedStatus extends Context.Service<FeedStatus, {
  readonly mode: "live" | "simulated" | "none"
  readonly snapshot: (now: number) => ReadonlyArray<ExchangeHealth>
}>()("tb/FeedStatus") {
  /** For processes that run no feeds (report server, CLI). */
  static readonly none = Layer.succeed(FeedStatus, FeedStatus.of({ mode: "none", snapshot: () => [] }))
}
