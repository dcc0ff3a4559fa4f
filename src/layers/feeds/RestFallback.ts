/**
 * REST single-ticker fallback for one exchange, used while its WebSocket has no fresh price.
 * A token bucket keeps us inside our own per-exchange budget: a request over budget answers
 * `undefined` at once, without touching the network, so a dead feed cannot get us banned.
 */
import { Duration, Effect } from "effect"
import { fullBucket, tryTake } from "../../domain/tokenBucket.ts"
import type { ExchangeProtocol, MarketSymbol } from "../../domain/exchanges/protocol.ts"
import type { Exchange, Tick } from "../../domain/price.ts"
import { messageOf } from "../../domain/errorMessage.ts"

export interface RestFallbackStats {
  /** Requests sent to the exchange. */
  readonly requests: number
  /** Requests refused locally because the budget was spent. */
  readonly denials: number
  readonly successes: number
  /** Network errors, timeouts, non-2xx answers and unusable bodies. */
  readonly failures: number
  readonly lastError?: string
}

export interface RestFallback {
  readonly exchange: Exchange
  /** A tick from the exchange's REST ticker, or undefined (over budget, failed, unusable). Never fails. */
  readonly fetchTicker: (market: MarketSymbol) => Effect.Effect<Tick | undefined>
  readonly stats: () => RestFallbackStats
}

export interface RestFallbackOptions {
  /** Per-request timeout (default 5 s). */
  readonly timeoutMs?: number
  readonly now?: () => number
}

const DEFAULT_TIMEOUT_MS = 5_000

/**
 * The request budget: the domain token bucket with `perSecond` tokens a second, holding at most
 * max(1, perSecond) so a fractional budget (0.5/s) still allows a request now and then.
 */
const makeBudget = (perSecond: number, now: () => number) => {
  const limits = { ratePerSec: perSecond, burst: Math.max(1, perSecond) }
  let state = fullBucket(limits, now())
  return (): boolean => {
    const taken = tryTake(state, limits, now())
    state = taken.state
    return taken.allowed
  }
}

class RestRequestFailed extends Error {}

export const makeRestFallback = (
  protocol: ExchangeProtocol,
  restBaseUrl: string,
  budgetPerSecond: number = protocol.restBudgetPerSecond,
  options: RestFallbackOptions = {}
): RestFallback => {
  const now = options.now ?? Date.now
  const timeout = Duration.millis(options.timeoutMs ?? DEFAULT_TIMEOUT_MS)
  const takeToken = makeBudget(budgetPerSecond, now)
  const counts = { requests: 0, denials: 0, successes: 0, failures: 0 }
  let lastError: string | undefined

  const fail = (message: string): undefined => {
    counts.failures++
    lastError = message
    return undefined
  }

  const request = (market: MarketSymbol): Effect.Effect<Tick | undefined> => {
    const url = protocol.restTickerUrl(restBaseUrl, market)
    return Effect.tryPromise({
      try: async (signal) => {
        const response = await fetch(url, { signal, headers: { accept: "application/json" } })
        const body = await response.text()
        if (!response.ok) throw new RestRequestFailed(`HTTP ${response.status}`)
        return body
      },
      catch: (error) => messageOf(error)
    }).pipe(
      Effect.timeout(timeout),
      Effect.map((body) => {
        const tick = protocol.parseRestTicker(body, market, now())
        if (tick === undefined) return fail("unusable ticker body")
        counts.successes++
        return tick
      }),
      Effect.catch((error) => Effect.succeed(fail(typeof error === "string" ? error : `timed out after ${Duration.toMillis(timeout)} ms`)))
    )
  }

  return {
    exchange: protocol.exchange,
    fetchTicker: (market) =>
      Effect.suspend(() => {
        if (!takeToken()) {
          counts.denials++
          return Effect.succeed(undefined)
        }
        counts.requests++
        return request(market)
      }),
    stats: () => ({ ...counts, ...(lastError === undefined ? {} : { lastError }) })
  }
}
