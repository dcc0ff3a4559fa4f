import { Effect, Layer } from "effect"
import { AppConfig } from "../../config/AppConfig.ts"
import type { MarketSymbol } from "../../domain/exchanges/protocol.ts"
import { protocolFor } from "../../domain/exchanges/index.ts"
import { EXCHANGES, type Exchange, isExchange } from "../../domain/price.ts"
import { ReaderSql } from "../../services/Database.ts"
import { type ExchangeHealth, FeedStatus } from "../../services/FeedStatus.ts"
import { Params } from "../../services/Params.ts"
import { PriceCache } from "../../services/PriceCache.ts"
import { startSimulators } from "../../simulators/index.ts"
import { withModule } from "../Logging.ts"
import { type FeedHealthRecorder, makeFeedHealth, runFeed } from "./FeedEngine.ts"

interface FeedRow { readonly exchange: string; readonly ws_url: string; readonly rest_url: string; readonly enabled: boolean; readonly rest_budget_per_second: number }
interface MarketRow { readonly exchange: string; readonly asset: string; readonly quote: string; readonly symbol: string; readonly usd_equivalent: boolean }

export interface FeedPlan {
  readonly exchange: Exchange
  readonly wsUrl: string
  readonly restUrl: string
  readonly restBudgetPerSecond: number
  readonly markets: ReadonlyArray<MarketSymbol>
}

/** Which exchanges run and what each carries: data in exchange_feeds / exchange_asset_map. */
export const loadFeedPlan = Effect.gen(function*() {
  const reader = yield* ReaderSql
  const feeds = yield* reader<FeedRow>`SELECT exchange, ws_url, rest_url, enabled, rest_budget_per_second FROM exchange_feeds`
  const markets = yield* reader<MarketRow>`SELECT exchange, asset, quote, symbol, usd_equivalent FROM exchange_asset_map WHERE enabled ORDER BY exchange, asset, quote`
  const plans: Array<FeedPlan> = []
  for (const f of feeds) {
    if (!f.enabled || !isExchange(f.exchange)) continue
    const exchange = f.exchange
    const env = exchange.toUpperCase()
    plans.push({
      exchange,
      wsUrl: process.env[`FEED_URL_${env}`] ?? f.ws_url,
      restUrl: process.env[`FEED_REST_URL_${env}`] ?? f.rest_url,
      restBudgetPerSecond: f.rest_budget_per_second,
      markets: markets.filter((m) => m.exchange === exchange).map(({ asset, quote, symbol }) => ({ asset, quote, symbol }))
    })
  }
  return { plans, markets }
})

const SIMULATOR_SEED = 20_261_124

/**
 * The exchange feeds: one supervised fiber per enabled exchange, each running the shared engine
 * over that exchange's protocol module. FEEDS=simulated first starts loopback simulators that speak
 * each exchange's real protocol, and points the same feeds at them.
 */
export const FeedsLive = Layer.effect(FeedStatus, Effect.gen(function*() {
  const config = yield* AppConfig
  const prices = yield* PriceCache
  const params = yield* Params
  const loaded = yield* loadFeedPlan
  let plans = loaded.plans
  prices.setMarkets(loaded.markets.filter((m) => isExchange(m.exchange)).map((m) => ({
    exchange: m.exchange as Exchange, asset: m.asset, quote: m.quote, usdEquivalent: m.usd_equivalent
  })))

  if (config.feeds === "simulated") {
    const sims = yield* Effect.acquireRelease(
      Effect.promise(() => startSimulators({ seed: SIMULATOR_SEED, markets: plans.flatMap((p) => p.markets.map((m) => ({ ...m, exchange: p.exchange }))) })),
      (s) => Effect.promise(() => s.close())
    )
    plans = plans.map((p) => {
      const env = p.exchange.toUpperCase()
      return {
        ...p,
        wsUrl: process.env[`FEED_URL_${env}`] ?? sims.urls[p.exchange].ws,
        restUrl: process.env[`FEED_REST_URL_${env}`] ?? sims.urls[p.exchange].rest
      }
    })
    yield* Effect.logInfo("exchange simulators started on loopback", Object.fromEntries(plans.map((p) => [p.exchange, p.wsUrl])))
  }

  const recorders = new Map<Exchange, { readonly health: FeedHealthRecorder; readonly plan: FeedPlan; lastMessages: number; lastAt: number; rate: number }>()
  for (const plan of plans) {
    if (plan.markets.length === 0) continue
    const health = makeFeedHealth(plan.exchange)
    recorders.set(plan.exchange, { health, plan, lastMessages: 0, lastAt: Date.now(), rate: 0 })
    yield* runFeed({
      protocol: protocolFor(plan.exchange),
      wsUrl: plan.wsUrl,
      markets: plan.markets,
      onTick: prices.ingest,
      ...(plan.exchange === "cryptocom" ? { subscribeDelayMs: 1_000 } : {})
    }, health).pipe(Effect.forkScoped)
  }
  yield* Effect.logInfo("exchange feeds started", { mode: config.feeds, exchanges: [...recorders.keys()], markets: plans.reduce((n, p) => n + p.markets.length, 0) })

  const snapshot = (now: number): ReadonlyArray<ExchangeHealth> => {
    const staleMs = params.int("price_stale_ms")
    return EXCHANGES.flatMap((exchange) => {
      const r = recorders.get(exchange)
      if (r === undefined) return []
      const h = r.health.snapshot()
      // Message rate over the time since the previous snapshot (at least a second apart).
      if (now - r.lastAt >= 1_000) {
        r.rate = Math.round(((h.messages - r.lastMessages) * 1000) / (now - r.lastAt))
        r.lastMessages = h.messages
        r.lastAt = now
      }
      const tickTimes = Object.values(h.lastTickAt)
      return [{
        exchange,
        enabled: true,
        connected: h.connected,
        url: r.plan.wsUrl,
        connects: h.connects,
        reconnects: h.reconnects,
        messages: h.messages,
        ticks: h.ticks,
        errors: h.errors,
        lastError: h.lastError,
        lastMessageAgeMs: h.lastMessageAt === undefined ? undefined : now - h.lastMessageAt,
        messagesPerSec: r.rate,
        markets: r.plan.markets.length,
        staleMarkets: r.plan.markets.length - tickTimes.filter((t) => now - t <= staleMs).length,
        restRequests: 0,
        restDenied: 0
      }]
    })
  }
  return FeedStatus.of({ mode: config.feeds, snapshot })
}).pipe(withModule("feeds")))
