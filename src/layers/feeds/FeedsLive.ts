import { Effect, FiberMap, FiberSet, Layer, Semaphore } from "effect"
import { AppConfig } from "../../config/AppConfig.ts"
import type { MarketSymbol } from "../../domain/exchanges/protocol.ts"
import { protocolFor } from "../../domain/exchanges/index.ts"
import { EXCHANGES, type Exchange, isExchange } from "../../domain/price.ts"
import { ReaderSql } from "../../services/Database.ts"
import { type ExchangeHealth, FeedReloadError, type FeedReloadResult, FeedStatus, type MarketHealth } from "../../services/FeedStatus.ts"
import { Params } from "../../services/Params.ts"
import { PriceCache } from "../../services/PriceCache.ts"
import { forkChildService } from "../childService.ts"
import { withModule } from "../Logging.ts"
import { type FeedHealthRecorder, makeFeedHealth, runFeed } from "./FeedEngine.ts"
import { type CarrierMarket, makePriceRefill } from "./PriceRefill.ts"
import { makeRestFallback, type RestFallback } from "./RestFallback.ts"
import { SharedPriceTier, SharedPriceTierLive } from "./SharedPriceTier.ts"

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
      restBudgetPerSecond: Number(f.rest_budget_per_second),
      markets: markets.filter((m) => m.exchange === exchange).map(({ asset, quote, symbol }) => ({ asset, quote, symbol }))
    })
  }
  return { plans, markets }
})

const SIMULATOR_SEED = 20_261_124
/** Crypto.com asks for a pause between connecting and subscribing (reference §5.1). */
const SUBSCRIBE_DELAY_MS: Partial<Record<Exchange, number>> = { cryptocom: 1_000 }
/** Crypto.com refuses more subscriptions than this on one connection (§5.4); one connection is all we open. */
const SUBSCRIPTIONS_PER_CONNECTION: Partial<Record<Exchange, number>> = { cryptocom: 400 }

/** One running exchange: its plan, its feed's health, its REST fallback and message-rate state. */
interface Running {
  readonly plan: FeedPlan
  readonly health: FeedHealthRecorder
  readonly rest: RestFallback
  rate: { lastMessages: number; lastAt: number; perSec: number }
}

const sameMarkets = (a: ReadonlyArray<MarketSymbol>, b: ReadonlyArray<MarketSymbol>): boolean =>
  a.length === b.length && a.every((m, i) => m.asset === b[i]?.asset && m.quote === b[i]?.quote && m.symbol === b[i]?.symbol)

/**
 * The exchange feeds: one supervised fiber per enabled exchange, each running the shared engine
 * over that exchange's protocol module, plus the fall-through tiers below the in-process prices
 * (shared Valkey tier, then REST within each exchange's budget). FEEDS=simulated first starts
 * loopback simulators that speak each exchange's real protocol, and points the same feeds at them.
 * A reload re-reads the tables and restarts only the exchanges whose plan changed.
 */
const FeedsCore = Layer.effect(FeedStatus, Effect.gen(function*() {
  const config = yield* AppConfig
  const prices = yield* PriceCache
  const params = yield* Params
  const shared = yield* SharedPriceTier
  const reader = yield* ReaderSql
  const initial = yield* loadFeedPlan

  let simulatorUrls: Readonly<Record<Exchange, { readonly ws: string; readonly rest: string }>> | undefined
  if (config.feeds === "simulated") {
    const sims = yield* forkChildService("simulatorProcess", [], {
      seed: SIMULATOR_SEED,
      markets: initial.plans.flatMap((p) => p.markets.map((m) => ({ ...m, exchange: p.exchange })))
    }, (m) => (typeof m === "object" && m !== null && "urls" in m ? (m as { urls: NonNullable<typeof simulatorUrls> }) : undefined))
    simulatorUrls = sims.urls
    yield* Effect.logInfo("exchange simulators started on loopback", Object.fromEntries(EXCHANGES.map((e) => [e, sims.urls[e].ws])))
  }
  /** FEED_URL_* overrides win, then the simulators, then the table. */
  const resolveUrls = (plan: FeedPlan): FeedPlan => {
    if (simulatorUrls === undefined) return plan
    const env = plan.exchange.toUpperCase()
    return {
      ...plan,
      wsUrl: process.env[`FEED_URL_${env}`] ?? simulatorUrls[plan.exchange].ws,
      restUrl: process.env[`FEED_REST_URL_${env}`] ?? simulatorUrls[plan.exchange].rest
    }
  }

  const feeds = yield* FiberMap.make<Exchange>()
  const running = new Map<Exchange, Running>()
  let carriers = new Map<string, ReadonlyArray<CarrierMarket>>()

  const refill = makePriceRefill({
    prices,
    params,
    shared,
    restFor: (exchange) => running.get(exchange)?.rest,
    carriersOf: (asset) => carriers.get(asset) ?? [],
    fork: yield* FiberSet.makeRuntime<never, void, never>()
  })
  prices.onMiss(refill.onMiss)
  yield* Effect.addFinalizer(() => Effect.sync(() => prices.onMiss(() => {})))

  const startFeed = (plan: FeedPlan, previous: Running | undefined) =>
    Effect.gen(function*() {
      const health = previous?.health ?? makeFeedHealth(plan.exchange)
      // Forget markets the exchange no longer carries, so they do not show as stale forever.
      const keep = new Set(plan.markets.map((m) => `${m.asset}/${m.quote}`))
      for (const key of health.lastTickAt.keys()) if (!keep.has(key)) health.lastTickAt.delete(key)
      const sameRest = previous !== undefined && previous.plan.restUrl === plan.restUrl && previous.plan.restBudgetPerSecond === plan.restBudgetPerSecond
      const rest = sameRest ? previous.rest : makeRestFallback(protocolFor(plan.exchange), plan.restUrl, plan.restBudgetPerSecond)
      running.set(plan.exchange, { plan, health, rest, rate: previous?.rate ?? { lastMessages: 0, lastAt: Date.now(), perSec: 0 } })
      const subscribeDelayMs = SUBSCRIBE_DELAY_MS[plan.exchange]
      const cap = SUBSCRIPTIONS_PER_CONNECTION[plan.exchange]
      if (cap !== undefined && plan.markets.length > cap) {
        yield* Effect.logWarning(`${plan.exchange} carries ${plan.markets.length} markets but allows ${cap} per connection; markets past the cap will be refused`)
      }
      yield* FiberMap.run(feeds, plan.exchange, runFeed({
        protocol: protocolFor(plan.exchange),
        wsUrl: plan.wsUrl,
        markets: plan.markets,
        onTick: prices.ingest,
        ...(subscribeDelayMs === undefined ? {} : { subscribeDelayMs })
      }, health))
    })

  const stopFeed = (exchange: Exchange) =>
    FiberMap.remove(feeds, exchange).pipe(Effect.andThen(Effect.sync(() => running.delete(exchange))))

  /** Make the running feeds match the plan; each exchange is started, stopped, restarted or left alone. */
  const apply = (loaded: Effect.Success<typeof loadFeedPlan>) =>
    Effect.gen(function*() {
      const plans = new Map(loaded.plans.filter((p) => p.markets.length > 0).map((p) => [p.exchange, resolveUrls(p)]))
      const result = { started: [] as Array<Exchange>, stopped: [] as Array<Exchange>, restarted: [] as Array<Exchange>, unchanged: [] as Array<Exchange> }
      for (const exchange of EXCHANGES) {
        const plan = plans.get(exchange)
        const current = running.get(exchange)
        if (plan === undefined) {
          if (current === undefined) continue
          yield* stopFeed(exchange)
          result.stopped.push(exchange)
        } else if (current === undefined) {
          yield* startFeed(plan, undefined)
          result.started.push(exchange)
        } else if (current.plan.wsUrl !== plan.wsUrl || !sameMarkets(current.plan.markets, plan.markets)) {
          yield* FiberMap.remove(feeds, exchange)
          yield* startFeed(plan, current)
          result.restarted.push(exchange)
        } else {
          // Same connection; the REST fallback still follows a changed URL or budget.
          if (current.plan.restUrl !== plan.restUrl || current.plan.restBudgetPerSecond !== plan.restBudgetPerSecond) {
            running.set(exchange, { ...current, plan, rest: makeRestFallback(protocolFor(exchange), plan.restUrl, plan.restBudgetPerSecond) })
          }
          result.unchanged.push(exchange)
        }
      }
      const live = loaded.markets.filter((m): m is typeof m & { exchange: Exchange } => isExchange(m.exchange) && plans.has(m.exchange))
      prices.setMarkets(live.map((m) => ({ exchange: m.exchange, asset: m.asset, quote: m.quote, usdEquivalent: m.usd_equivalent })))
      const byAsset = new Map<string, Array<CarrierMarket>>()
      for (const m of live) {
        const list = byAsset.get(m.asset) ?? []
        list.push({ exchange: m.exchange, market: { asset: m.asset, quote: m.quote, symbol: m.symbol }, usdEquivalent: m.usd_equivalent })
        byAsset.set(m.asset, list)
      }
      carriers = byAsset
      return { ...result, markets: live.length } satisfies FeedReloadResult
    })

  const initialResult = yield* apply(initial)
  yield* Effect.logInfo("exchange feeds started", { mode: config.feeds, exchanges: initialResult.started, markets: initialResult.markets, sharedTier: shared.enabled })

  const lock = yield* Semaphore.make(1)
  const reload = lock.withPermits(1)(
    loadFeedPlan.pipe(
      Effect.mapError((error) => new FeedReloadError({ message: `reading exchange_feeds failed: ${error.message}` })),
      Effect.flatMap(apply),
      Effect.tap((r) => Effect.logInfo("exchange feeds reloaded", r)),
      Effect.provideService(ReaderSql, reader),
      withModule("feeds")
    )
  )

  const marketHealth = (r: Running, now: number, staleMs: number): ReadonlyArray<MarketHealth> =>
    r.plan.markets.map((m) => {
      const at = r.health.lastTickAt.get(`${m.asset}/${m.quote}`)
      const restAt = refill.lastRestAt(r.plan.exchange, m.asset, m.quote)
      return {
        asset: m.asset,
        quote: m.quote,
        symbol: m.symbol,
        lastTickAgeMs: at === undefined ? undefined : now - at,
        stale: at === undefined || now - at > staleMs,
        lastRestAgeMs: restAt === undefined ? undefined : now - restAt
      }
    })

  const snapshot = (now: number, options?: { readonly markets?: boolean }): ReadonlyArray<ExchangeHealth> => {
    const staleMs = params.int("price_stale_ms")
    return EXCHANGES.flatMap((exchange) => {
      const r = running.get(exchange)
      if (r === undefined) return []
      const h = r.health
      // Message rate over the time since the previous snapshot (at least a second apart).
      if (now - r.rate.lastAt >= 1_000) {
        r.rate = { lastMessages: h.messages, lastAt: now, perSec: Math.round(((h.messages - r.rate.lastMessages) * 1000) / (now - r.rate.lastAt)) }
      }
      let fresh = 0
      for (const m of r.plan.markets) {
        const at = h.lastTickAt.get(`${m.asset}/${m.quote}`)
        if (at !== undefined && now - at <= staleMs) fresh++
      }
      const rest = r.rest.stats()
      return [{
        exchange,
        enabled: true,
        connected: h.connected,
        url: r.plan.wsUrl,
        connects: h.connects,
        reconnects: h.reconnects,
        watchdogTimeouts: h.watchdogTimeouts,
        messages: h.messages,
        ticks: h.ticks,
        errors: h.errors,
        lastError: h.lastError,
        lastMessageAgeMs: h.lastMessageAt === undefined ? undefined : now - h.lastMessageAt,
        messagesPerSec: r.rate.perSec,
        markets: r.plan.markets.length,
        staleMarkets: r.plan.markets.length - fresh,
        restRequests: rest.requests,
        restDenied: rest.denials,
        restFailures: rest.failures,
        restTicks: refill.restTicks(exchange),
        restBudgetPerSecond: r.plan.restBudgetPerSecond,
        ...(options?.markets === true ? { marketHealth: marketHealth(r, now, staleMs) } : {})
      }]
    })
  }
  return FeedStatus.of({ mode: config.feeds, snapshot, reload })
}).pipe(withModule("feeds")))

/** The feeds with the shared price tier they fall through to. */
export const FeedsLive = FeedsCore.pipe(Layer.provide(SharedPriceTierLive))
