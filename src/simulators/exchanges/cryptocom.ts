/**
 * Crypto.com Exchange API v1 market-data wire facts (reference §5): `subscribe` with
 * `params.channels` of `ticker.{instrument}`; no separate ack for tickers: the first data frame
 * carries the request `id`, later ones `"id":-1`; ticker data with single-letter fields, decimal
 * strings and `t` in ms as a number; unknown instruments answered with code 40003. Every 30 s the
 * server sends `public/heartbeat` with an id and closes (code 1000) a connection that has not
 * answered `public/respond-heartbeat` with that id within 5 s. Requests are limited to 100 per
 * calendar second, pro-rated for the second the socket opened in (why the docs ask clients to
 * wait 1 s before the first request, §5.1); over the limit: code 42901 TOO_MANY_REQUESTS.
 * REST: `GET /exchange/v1/public/get-tickers?instrument_name=…`; the documented example prints
 * `id`, `code` and `t` as strings, and so does this simulator (§5.6).
 */
import type { MarketSymbol } from "../../domain/exchanges/protocol.ts"
import { jsonAnswer, type RestTickerRoute } from "../restSimulator.ts"
import type { ExchangeSimulator } from "../simulatorServer.ts"
import { formatDecimal, formatQuantity, isClientMessage, parseClientJson, stringsOf } from "../wireFormat.ts"

const TICKER_PREFIX = "ticker."
const REQUESTS_PER_SECOND = 100

export const cryptocomSimulator: ExchangeSimulator = {
  exchange: "cryptocom",
  path: "/exchange/v1/market",
  heartbeatEveryMs: 30_000,
  heartbeatTimeoutMs: 5_000,
  openSession: (io) => {
    /** subscription name → market */
    const subscriptions = new Map<string, MarketSymbol>()
    /** heartbeat id → cancels its disconnect deadline */
    const pendingHeartbeats = new Map<number, () => void>()
    let lastHeartbeatId = 0

    const openedAt = io.now()
    const openingSecond = Math.floor(openedAt / 1000)
    let currentSecond = openingSecond
    let requestsThisSecond = 0
    /** Calendar-second request budget; the opening second gets only its remaining fraction (at least 1). */
    const withinRateLimit = (): boolean => {
      const second = Math.floor(io.now() / 1000)
      if (second !== currentSecond) {
        currentSecond = second
        requestsThisSecond = 0
      }
      const limit =
        second === openingSecond ? Math.ceil(REQUESTS_PER_SECOND * (1 - (openedAt % 1000) / 1000)) : REQUESTS_PER_SECOND
      requestsThisSecond++
      return requestsThisSecond <= limit
    }

    const tickerFrame = (id: unknown, subscription: string, market: MarketSymbol): string => {
      const q = io.quote(market)
      const instrument = subscription.slice(TICKER_PREFIX.length)
      const data = {
        h: formatDecimal(q.high24h),
        l: formatDecimal(q.low24h),
        a: formatDecimal(q.last),
        c: ((q.last - q.open24h) / q.open24h).toFixed(8),
        b: formatDecimal(q.bid),
        bs: formatQuantity(q.bidSize),
        k: formatDecimal(q.ask),
        ks: formatQuantity(q.askSize),
        i: instrument,
        v: formatQuantity(q.volume24h),
        vv: (q.volume24h * q.last).toFixed(2),
        // Open interest exists only for perpetuals.
        ...(instrument.endsWith("-PERP") ? { oi: formatQuantity(q.volume24h / 3) } : {}),
        t: io.now()
      }
      return JSON.stringify({
        id,
        method: "subscribe",
        code: 0,
        result: { instrument_name: instrument, subscription, channel: "ticker", data: [data] }
      })
    }

    const onSubscribe = (msg: { readonly [key: string]: unknown }, subscribe: boolean) => {
      const id = msg["id"]
      const method = subscribe ? "subscribe" : "unsubscribe"
      const params = msg["params"]
      const channels = isClientMessage(params) ? stringsOf(params["channels"]) : []
      if (channels.length === 0) {
        io.send(JSON.stringify({ id, method, code: 40001, message: "BAD_REQUEST" }))
        return
      }
      for (const channel of channels) {
        const market = channel.startsWith(TICKER_PREFIX) ? io.market(channel.slice(TICKER_PREFIX.length)) : undefined
        if (market === undefined) {
          io.send(JSON.stringify({ id, method, code: 40003, channel, message: "Unknown symbol" }))
          continue
        }
        if (!subscribe) {
          subscriptions.delete(channel)
          continue
        }
        subscriptions.set(channel, market)
        // The first data frame doubles as the ack: it carries the request id (§5.2).
        io.send(tickerFrame(id, channel, market))
      }
      if (!subscribe) io.send(JSON.stringify({ id, method, code: 0 }))
    }

    const onRespondHeartbeat = (id: unknown) => {
      const cancel = typeof id === "number" ? pendingHeartbeats.get(id) : undefined
      if (cancel === undefined || typeof id !== "number") return
      cancel()
      pendingHeartbeats.delete(id)
      io.record.heartbeatAnswer()
    }

    return {
      onFrame: (raw) => {
        const msg = parseClientJson(raw)
        if (msg === undefined) {
          io.send(JSON.stringify({ id: -1, code: 40001, message: "BAD_REQUEST" }))
          return
        }
        const method = msg["method"]
        if (method === "subscribe") io.record.subscribe()
        if ((method === "subscribe" || method === "unsubscribe") && !withinRateLimit()) {
          io.send(JSON.stringify({ id: msg["id"], method, code: 42901, message: "TOO_MANY_REQUESTS" }))
          return
        }
        switch (method) {
          case "subscribe":
            onSubscribe(msg, true)
            return
          case "unsubscribe":
            onSubscribe(msg, false)
            return
          case "public/respond-heartbeat":
            onRespondHeartbeat(msg["id"])
            return
          default:
            io.send(JSON.stringify({ id: msg["id"] ?? -1, method, code: 40001, message: "BAD_REQUEST" }))
        }
      },
      onTick: () => {
        for (const [subscription, market] of subscriptions) io.send(tickerFrame(-1, subscription, market))
      },
      onHeartbeat: () => {
        const id = Math.max(io.now(), lastHeartbeatId + 1)
        lastHeartbeatId = id
        io.record.heartbeat()
        io.send(JSON.stringify({ id, method: "public/heartbeat", code: 0 }))
        pendingHeartbeats.set(
          id,
          io.after(io.heartbeatTimeoutMs, () => io.close(1000, "heartbeat not answered"))
        )
      }
    }
  }
}

export const cryptocomRestRoute: RestTickerRoute = {
  exchange: "cryptocom",
  answer: (request, context) => {
    if (!request.path.endsWith("/public/get-tickers")) return undefined
    const instrument = request.query.get("instrument_name") ?? ""
    const market = context.markets.find((m) => m.symbol === instrument)
    if (market === undefined) {
      return jsonAnswer(400, { id: "-1", method: "public/get-tickers", code: "40001", message: "BAD_REQUEST" })
    }
    const q = context.quote(market)
    return jsonAnswer(200, {
      id: "-1",
      method: "public/get-tickers",
      code: "0",
      result: {
        data: [
          {
            h: formatDecimal(q.high24h),
            l: formatDecimal(q.low24h),
            a: formatDecimal(q.last),
            i: instrument,
            v: formatQuantity(q.volume24h),
            vv: (q.volume24h * q.last).toFixed(2),
            c: ((q.last - q.open24h) / q.open24h).toFixed(8),
            b: formatDecimal(q.bid),
            k: formatDecimal(q.ask),
            t: String(context.now())
          }
        ]
      }
    })
  }
}
