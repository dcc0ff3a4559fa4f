/**
 * The shared WebSocket machinery of every exchange simulator: a loopback `ws` server that
 * accepts clients, hands their frames to the exchange's module, pushes periodic ticks and
 * heartbeats, and exposes control hooks for tests. Wire formats live in ./exchanges/*.ts.
 */
import type { IncomingMessage } from "node:http"
import { WebSocket, WebSocketServer } from "ws"
import type { MarketSymbol } from "../domain/exchanges/protocol.ts"
import type { Exchange } from "../domain/price.ts"
import type { MarketQuote, PriceBook } from "./randomWalk.ts"
import { wsText } from "../domain/wsText.ts"

/** What an exchange module may do on one client connection. */
export interface SessionIO {
  /** Distinct per connection on this server (OKX connId, Kraken connection_id…). */
  readonly connectionId: number
  /** Path and query of the upgrade request (for URL-addressed feeds). */
  readonly requestPath: string
  readonly now: () => number
  /** Send a text frame (dropped while the server is silent or the socket is not open). */
  readonly send: (frame: string) => void
  /** Close the connection the way the exchange does (a proper close frame). */
  readonly close: (code: number, reason: string) => void
  /** Run `fn` after `ms` unless the connection has closed by then; returns a cancel function. */
  readonly after: (ms: number, fn: () => void) => () => void
  /** The configured market with exactly this exchange symbol. */
  readonly market: (symbol: string) => MarketSymbol | undefined
  readonly markets: ReadonlyArray<MarketSymbol>
  /** This exchange's current view of a market (the same for every client within one tick). */
  readonly quote: (market: MarketSymbol) => MarketQuote
  /** How long a heartbeat may go unanswered before the exchange disconnects (where it does). */
  readonly heartbeatTimeoutMs: number
  readonly record: {
    readonly subscribe: () => void
    readonly heartbeat: () => void
    readonly heartbeatAnswer: () => void
    readonly pingAnswered: () => void
  }
}

/** One connection's protocol state, owned by the exchange module. */
export interface SessionHandler {
  readonly onFrame: (raw: string) => void
  /** Periodic market data: send this connection's ticker frames. */
  readonly onTick: () => void
  /** Periodic keep-alive from the server, for exchanges that send one. */
  readonly onHeartbeat?: () => void
}

/** Only one exchange's wire facts: endpoint path, keep-alive timing, session behaviour. */
export interface ExchangeSimulator {
  readonly exchange: Exchange
  /** The real endpoint's path, e.g. "/v2" for Kraken, so URLs look like the real ones. */
  readonly path: string
  /** Server heartbeat period, undefined when the exchange sends none. */
  readonly heartbeatEveryMs: number | undefined
  /** Unanswered-heartbeat deadline, for exchanges that enforce one. */
  readonly heartbeatTimeoutMs: number | undefined
  readonly openSession: (io: SessionIO) => SessionHandler
}

export interface SimulatorStats {
  readonly connectionsAccepted: number
  readonly openConnections: number
  readonly clientFrames: number
  readonly subscribeFrames: number
  readonly heartbeatsSent: number
  readonly heartbeatAnswers: number
  readonly pingsAnswered: number
  readonly framesSent: number
  /** Connections the server closed itself (e.g. missed heartbeats). */
  readonly serverCloses: number
  /** Exceptions thrown by the exchange module (a simulator bug, never a client's fault). */
  readonly moduleErrors: number
}

export interface SimulatorControl {
  readonly exchange: Exchange
  /** Terminate every client socket abruptly (no close frame). */
  readonly dropAll: () => void
  /** Keep sockets open but send nothing at all (not even heartbeats or ping answers). */
  readonly setSilent: (silent: boolean) => void
  readonly setHeartbeats: (enabled: boolean) => void
  /** Pin this exchange's price for a market (e.g. to make it an outlier). */
  readonly setPrice: (asset: string, quote: string, price: number) => void
  readonly clearPrice: (asset: string, quote: string) => void
  readonly stats: SimulatorStats
}

export interface SimulatorServer {
  readonly url: string
  readonly control: SimulatorControl
  readonly close: () => Promise<void>
}

export interface SimulatorServerOptions {
  readonly simulator: ExchangeSimulator
  readonly markets: ReadonlyArray<MarketSymbol>
  readonly priceBook: PriceBook
  /** Default 250 ms. */
  readonly tickIntervalMs?: number
  /** Overrides the exchange's heartbeat period (tests use short ones). */
  readonly heartbeatIntervalMs?: number
  /** Overrides the exchange's unanswered-heartbeat deadline. */
  readonly heartbeatTimeoutMs?: number
  /** Default 0 = ephemeral. */
  readonly port?: number
}

interface Connection {
  readonly socket: WebSocket
  readonly handler: SessionHandler
  readonly timers: Set<ReturnType<typeof setTimeout>>
}


export const startSimulatorServer = async (options: SimulatorServerOptions): Promise<SimulatorServer> => {
  const { simulator, priceBook } = options
  const tickIntervalMs = options.tickIntervalMs ?? 250
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? simulator.heartbeatEveryMs
  const heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? simulator.heartbeatTimeoutMs ?? 5_000
  const bySymbol = new Map(options.markets.map((m) => [m.symbol, m] as const))

  const stats = {
    connectionsAccepted: 0,
    clientFrames: 0,
    subscribeFrames: 0,
    heartbeatsSent: 0,
    heartbeatAnswers: 0,
    pingsAnswered: 0,
    framesSent: 0,
    serverCloses: 0,
    moduleErrors: 0
  }
  let silent = false
  let heartbeatsOn = true
  let nextConnectionId = 1
  const connections = new Set<Connection>()

  // One quote per market per tick, so every client of this exchange sees the same prices.
  let quotes = new Map<string, MarketQuote>()
  const quoteOf = (market: MarketSymbol): MarketQuote => {
    let q = quotes.get(market.symbol)
    if (q === undefined) {
      q = priceBook.quote(simulator.exchange, market.asset, market.quote)
      quotes.set(market.symbol, q)
    }
    return q
  }

  const server = new WebSocketServer({ host: "127.0.0.1", port: options.port ?? 0 })
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve)
    server.once("error", reject)
  })
  // After start-up a server error must not crash the test process.
  server.on("error", () => {})

  const forget = (conn: Connection) => {
    connections.delete(conn)
    for (const t of conn.timers) clearTimeout(t)
    conn.timers.clear()
  }

  const guarded = (fn: () => void) => {
    try {
      fn()
    } catch {
      // A module bug on one connection must not take down the simulator; tests can see the count.
      stats.moduleErrors++
    }
  }

  server.on("connection", (socket: WebSocket, request: IncomingMessage) => {
    stats.connectionsAccepted++
    socket.on("error", () => {})
    const timers = new Set<ReturnType<typeof setTimeout>>()
    const io: SessionIO = {
      connectionId: nextConnectionId++,
      requestPath: request.url ?? "/",
      now: Date.now,
      send: (frame) => {
        if (silent || socket.readyState !== WebSocket.OPEN) return
        stats.framesSent++
        socket.send(frame)
      },
      close: (code, reason) => {
        if (socket.readyState !== WebSocket.OPEN) return
        stats.serverCloses++
        socket.close(code, reason)
      },
      after: (ms, fn) => {
        const timer = setTimeout(() => {
          timers.delete(timer)
          if (socket.readyState === WebSocket.OPEN) guarded(fn)
        }, ms)
        timers.add(timer)
        return () => {
          clearTimeout(timer)
          timers.delete(timer)
        }
      },
      market: (symbol) => bySymbol.get(symbol),
      markets: options.markets,
      quote: quoteOf,
      heartbeatTimeoutMs,
      record: {
        subscribe: () => void stats.subscribeFrames++,
        // A silent server sends nothing, so it neither sends heartbeats nor answers pings.
        heartbeat: () => void (silent || stats.heartbeatsSent++),
        heartbeatAnswer: () => void stats.heartbeatAnswers++,
        pingAnswered: () => void (silent || stats.pingsAnswered++)
      }
    }
    const handler = simulator.openSession(io)
    const connection: Connection = { socket, handler, timers }
    connections.add(connection)
    socket.on("message", (data) => {
      stats.clientFrames++
      guarded(() => handler.onFrame(wsText(data)))
    })
    socket.on("close", () => forget(connection))
  })

  const tickTimer = setInterval(() => {
    quotes = new Map()
    if (silent) return
    for (const conn of connections) guarded(conn.handler.onTick)
  }, tickIntervalMs)

  const heartbeatTimer =
    heartbeatIntervalMs === undefined
      ? undefined
      : setInterval(() => {
          if (silent || !heartbeatsOn) return
          for (const conn of connections) {
            if (conn.handler.onHeartbeat !== undefined) guarded(conn.handler.onHeartbeat)
          }
        }, heartbeatIntervalMs)

  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0

  const control: SimulatorControl = {
    exchange: simulator.exchange,
    dropAll: () => {
      for (const conn of connections) {
        forget(conn)
        conn.socket.terminate()
      }
    },
    setSilent: (value) => {
      silent = value
    },
    setHeartbeats: (value) => {
      heartbeatsOn = value
    },
    setPrice: (asset, quote, price) => priceBook.pin(simulator.exchange, asset, quote, price),
    clearPrice: (asset, quote) => priceBook.unpin(simulator.exchange, asset, quote),
    get stats(): SimulatorStats {
      return { ...stats, openConnections: connections.size }
    }
  }

  const close = async (): Promise<void> => {
    clearInterval(tickTimer)
    if (heartbeatTimer !== undefined) clearInterval(heartbeatTimer)
    control.dropAll()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }

  return { url: `ws://127.0.0.1:${port}${simulator.path}`, control, close }
}
