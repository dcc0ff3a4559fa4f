/**
 * One loopback HTTP server answering every exchange's single-ticker REST request in that
 * exchange's response shape (shapes in ./exchanges/*.ts), from the same price book as the
 * WebSocket simulators. Each exchange lives under its own path prefix (`/coinbase/...`), so one
 * server can count and fail requests per exchange.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { MarketSymbol } from "../domain/exchanges/protocol.ts"
import type { Exchange } from "../domain/price.ts"
import type { MarketQuote, PriceBook } from "./randomWalk.ts"

export interface RestRequest {
  /** Path below the exchange prefix, e.g. "/products/BTC-USD/ticker". */
  readonly path: string
  readonly query: URLSearchParams
}

export interface RestContext {
  readonly markets: ReadonlyArray<MarketSymbol>
  readonly quote: (market: MarketSymbol) => MarketQuote
  readonly now: () => number
}

export interface RestAnswer {
  readonly status: number
  readonly body: string
}

/** One exchange's REST ticker endpoint: undefined when the request is not its ticker path. */
export interface RestTickerRoute {
  readonly exchange: Exchange
  readonly answer: (request: RestRequest, context: RestContext) => RestAnswer | undefined
}

export interface RestSimulatorStats {
  readonly requests: number
  readonly failed: number
}

export interface RestSimulator {
  /** Base URL for one exchange, e.g. http://127.0.0.1:PORT/coinbase */
  readonly baseUrl: (exchange: Exchange) => string
  /** Answer every request for this exchange with this HTTP status (undefined = answer normally). */
  readonly setFailure: (exchange: Exchange, status: number | undefined) => void
  /** Delay every answer for this exchange (to exercise client timeouts). */
  readonly setDelay: (exchange: Exchange, ms: number) => void
  readonly stats: (exchange: Exchange) => RestSimulatorStats
  readonly close: () => Promise<void>
}

export interface RestSimulatorOptions {
  readonly routes: ReadonlyArray<RestTickerRoute>
  readonly markets: ReadonlyArray<MarketSymbol & { readonly exchange: Exchange }>
  readonly priceBook: PriceBook
  readonly port?: number
}

/** A JSON answer (exchange routes use it too). */
export const jsonAnswer = (status: number, body: unknown): RestAnswer => ({ status, body: JSON.stringify(body) })

export const startRestSimulator = async (options: RestSimulatorOptions): Promise<RestSimulator> => {
  const routes = new Map(options.routes.map((r) => [r.exchange, r] as const))
  const counters = new Map<Exchange, { requests: number; failed: number }>()
  const failures = new Map<Exchange, number>()
  const delays = new Map<Exchange, number>()
  const counterOf = (exchange: Exchange) => {
    let c = counters.get(exchange)
    if (c === undefined) {
      c = { requests: 0, failed: 0 }
      counters.set(exchange, c)
    }
    return c
  }
  const contexts = new Map<Exchange, RestContext>(
    options.routes.map((route) => [
      route.exchange,
      {
        markets: options.markets.filter((m) => m.exchange === route.exchange),
        quote: (market: MarketSymbol) => options.priceBook.quote(route.exchange, market.asset, market.quote),
        now: Date.now
      }
    ])
  )

  const answer = (exchange: Exchange, request: RestRequest): RestAnswer => {
    const route = routes.get(exchange)
    const context = contexts.get(exchange)
    const counter = counterOf(exchange)
    counter.requests++
    const failure = failures.get(exchange)
    if (failure !== undefined) {
      counter.failed++
      return jsonAnswer(failure, { message: "simulated failure" })
    }
    const result = route === undefined || context === undefined ? undefined : route.answer(request, context)
    return result ?? jsonAnswer(404, { message: "Not Found" })
  }

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1")
    const [, prefix = "", ...rest] = url.pathname.split("/")
    const exchange = options.routes.find((r) => r.exchange === prefix)?.exchange
    const result =
      exchange === undefined || req.method !== "GET"
        ? jsonAnswer(404, { message: "Not Found" })
        : answer(exchange, { path: `/${rest.join("/")}`, query: url.searchParams })
    const send = () => {
      res.writeHead(result.status, { "content-type": "application/json" })
      res.end(result.body)
    }
    const delay = exchange === undefined ? 0 : (delays.get(exchange) ?? 0)
    if (delay > 0) setTimeout(send, delay)
    else send()
  }

  const server = createServer(handle)
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port ?? 0, "127.0.0.1", () => resolve())
  })
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0

  return {
    baseUrl: (exchange) => `http://127.0.0.1:${port}/${exchange}`,
    setFailure: (exchange, status) => {
      if (status === undefined) failures.delete(exchange)
      else failures.set(exchange, status)
    },
    setDelay: (exchange, ms) => {
      delays.set(exchange, ms)
    },
    stats: (exchange) => ({ ...counterOf(exchange) }),
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

