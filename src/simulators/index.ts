/**
 * Starts one loopback WebSocket simulator per exchange and the shared REST simulator, all fed
 * by one seeded price book. For `FEEDS=simulated` and for tests.
 */
import type { MarketSymbol } from "../domain/exchanges/protocol.ts"
import { EXCHANGES, type Exchange } from "../domain/price.ts"
import { coinbaseRestRoute, coinbaseSimulator } from "./exchanges/coinbase.ts"
import { cryptocomRestRoute, cryptocomSimulator } from "./exchanges/cryptocom.ts"
import { gateioRestRoute, gateioSimulator } from "./exchanges/gateio.ts"
import { geminiRestRoute, geminiSimulator } from "./exchanges/gemini.ts"
import { krakenRestRoute, krakenSimulator } from "./exchanges/kraken.ts"
import { okxRestRoute, okxSimulator } from "./exchanges/okx.ts"
import { makePriceBook, type PriceBook } from "./randomWalk.ts"
import { type RestSimulator, type RestTickerRoute, startRestSimulator } from "./restSimulator.ts"
import { type ExchangeSimulator, type SimulatorControl, type SimulatorServer, startSimulatorServer } from "./simulatorServer.ts"

export type { SimulatorControl, SimulatorStats } from "./simulatorServer.ts"
export type { RestSimulator, RestSimulatorStats } from "./restSimulator.ts"

export const SIMULATORS: Readonly<Record<Exchange, ExchangeSimulator>> = {
  coinbase: coinbaseSimulator,
  gemini: geminiSimulator,
  kraken: krakenSimulator,
  gateio: gateioSimulator,
  cryptocom: cryptocomSimulator,
  okx: okxSimulator
}

export const REST_ROUTES: ReadonlyArray<RestTickerRoute> = [
  coinbaseRestRoute,
  geminiRestRoute,
  krakenRestRoute,
  gateioRestRoute,
  cryptocomRestRoute,
  okxRestRoute
]

export interface SimulatedMarket extends MarketSymbol {
  readonly exchange: Exchange
}

export interface SimulatorsOptions {
  readonly seed: number
  /** Period of ticker pushes (default 250 ms). */
  readonly tickIntervalMs?: number
  readonly markets: ReadonlyArray<SimulatedMarket>
  /** Server heartbeat period per exchange (defaults: each exchange's real one). */
  readonly heartbeatIntervalMs?: Partial<Record<Exchange, number>>
  /** Unanswered-heartbeat deadline per exchange (Crypto.com's real one is 5 s). */
  readonly heartbeatTimeoutMs?: Partial<Record<Exchange, number>>
  /** σ of one true-price step (default 5 bps). */
  readonly volatilityPerStep?: number
}

export interface Simulators {
  readonly urls: Readonly<Record<Exchange, { readonly ws: string; readonly rest: string }>>
  readonly control: Readonly<Record<Exchange, SimulatorControl>>
  readonly rest: RestSimulator
  readonly priceBook: PriceBook
  readonly close: () => Promise<void>
}

export const startSimulators = async (options: SimulatorsOptions): Promise<Simulators> => {
  const priceBook = makePriceBook({
    seed: options.seed,
    ...(options.tickIntervalMs === undefined ? {} : { stepMs: options.tickIntervalMs }),
    ...(options.volatilityPerStep === undefined ? {} : { volatilityPerStep: options.volatilityPerStep })
  })
  const started = new Map<Exchange, SimulatorServer>()
  let rest: RestSimulator | undefined
  try {
    for (const exchange of EXCHANGES) {
      const heartbeatIntervalMs = options.heartbeatIntervalMs?.[exchange]
      const heartbeatTimeoutMs = options.heartbeatTimeoutMs?.[exchange]
      started.set(
        exchange,
        await startSimulatorServer({
          simulator: SIMULATORS[exchange],
          markets: options.markets.filter((m) => m.exchange === exchange),
          priceBook,
          ...(options.tickIntervalMs === undefined ? {} : { tickIntervalMs: options.tickIntervalMs }),
          ...(heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs }),
          ...(heartbeatTimeoutMs === undefined ? {} : { heartbeatTimeoutMs })
        })
      )
    }
    rest = await startRestSimulator({ routes: REST_ROUTES, markets: options.markets, priceBook })
  } catch (error) {
    await Promise.all([...started.values()].map((s) => s.close()))
    throw error
  }
  const restSimulator = rest
  // Every exchange was started above, so the record is complete.
  const byExchange = <A>(f: (server: SimulatorServer, exchange: Exchange) => A): Record<Exchange, A> =>
    Object.fromEntries([...started].map(([exchange, server]) => [exchange, f(server, exchange)])) as Record<Exchange, A>
  return {
    urls: byExchange((server, exchange) => ({ ws: server.url, rest: restSimulator.baseUrl(exchange) })),
    control: byExchange((server) => server.control),
    rest: restSimulator,
    priceBook,
    close: async () => {
      await Promise.all([...[...started.values()].map((s) => s.close()), restSimulator.close()])
    }
  }
}
