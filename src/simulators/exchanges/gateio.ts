/**
 * Gate spot WebSocket v4 wire facts (reference §4): requests `{"time","channel","event",
 * "payload"}` whose `time` is in seconds and must be within 60 s of server time; acks with
 * `time`, `time_ms`, `error:null`, `result:{status:"success"}`; `spot.tickers` and
 * `spot.book_ticker` updates with decimal strings; `spot.ping` answered with `spot.pong`.
 * Liveness is protocol-level ping/pong (the `ws` stack answers it), so no app heartbeat is sent.
 * REST: `GET /api/v4/spot/tickers?currency_pair=BTC_USDT` answers an array (§4.6).
 */
import type { MarketSymbol } from "../../domain/exchanges/protocol.ts"
import { jsonAnswer, type RestTickerRoute } from "../restSimulator.ts"
import type { ExchangeSimulator, SessionIO } from "../simulatorServer.ts"
import { formatDecimal, formatQuantity, parseClientJson, stringsOf } from "../wireFormat.ts"

const CHANNELS = new Set(["spot.tickers", "spot.book_ticker"])
const MAX_CLOCK_SKEW_S = 60

const envelope = (io: SessionIO) => {
  const ms = io.now()
  return { time: Math.floor(ms / 1000), time_ms: ms }
}

export const gateioSimulator: ExchangeSimulator = {
  exchange: "gateio",
  path: "/ws/v4/",
  heartbeatEveryMs: undefined,
  heartbeatTimeoutMs: undefined,
  openSession: (io) => {
    /** channel → pair → market */
    const subscriptions = new Map<string, Map<string, MarketSymbol>>()
    let bookUpdateId = 48_733_182

    const reply = (
      request: { readonly [key: string]: unknown },
      error: { readonly code: number; readonly message: string } | null,
      result: unknown
    ) =>
      io.send(
        JSON.stringify({
          ...envelope(io),
          ...(typeof request["id"] === "number" ? { id: request["id"] } : {}),
          channel: request["channel"],
          event: request["event"],
          error,
          result
        })
      )

    const updateFrame = (channel: string, pair: string, market: MarketSymbol): string => {
      const q = io.quote(market)
      const head = envelope(io)
      const result =
        channel === "spot.book_ticker"
          ? {
              t: head.time_ms,
              u: bookUpdateId++,
              s: pair,
              b: formatDecimal(q.bid),
              B: formatQuantity(q.bidSize),
              a: formatDecimal(q.ask),
              A: formatQuantity(q.askSize)
            }
          : {
              currency_pair: pair,
              last: formatDecimal(q.last),
              lowest_ask: formatDecimal(q.ask),
              highest_bid: formatDecimal(q.bid),
              change_percentage: (((q.last - q.open24h) / q.open24h) * 100).toFixed(2),
              base_volume: formatQuantity(q.volume24h),
              quote_volume: formatQuantity(q.volume24h * q.last),
              high_24h: formatDecimal(q.high24h),
              low_24h: formatDecimal(q.low24h)
            }
      return JSON.stringify({ ...head, channel, event: "update", result })
    }

    const onSubscribe = (msg: { readonly [key: string]: unknown }, subscribe: boolean) => {
      const channel = msg["channel"]
      const time = msg["time"]
      if (typeof time !== "number" || Math.abs(time - io.now() / 1000) > MAX_CLOCK_SKEW_S) {
        reply(msg, { code: 2, message: "invalid argument: time must be within 60s of server time" }, null)
        return
      }
      if (typeof channel !== "string" || !CHANNELS.has(channel)) {
        reply(msg, { code: 2, message: `unknown channel ${String(channel)}` }, null)
        return
      }
      const pairs = stringsOf(msg["payload"])
      const unknown = pairs.find((p) => io.market(p) === undefined)
      if (pairs.length === 0 || unknown !== undefined) {
        reply(msg, { code: 2, message: `unknown currency pair ${unknown ?? ""}` }, null)
        return
      }
      const subscribed = subscriptions.get(channel) ?? new Map<string, MarketSymbol>()
      for (const pair of pairs) {
        const market = io.market(pair)
        if (market === undefined) continue
        if (subscribe) subscribed.set(pair, market)
        else subscribed.delete(pair)
      }
      subscriptions.set(channel, subscribed)
      reply(msg, null, { status: "success" })
    }

    return {
      onFrame: (raw) => {
        const msg = parseClientJson(raw)
        if (msg === undefined) {
          io.send(JSON.stringify({ ...envelope(io), channel: "", event: "", error: { code: 1, message: "invalid request body" }, result: null }))
          return
        }
        if (msg["channel"] === "spot.ping") {
          io.record.pingAnswered()
          io.send(JSON.stringify({ ...envelope(io), channel: "spot.pong", event: "", error: null, result: null }))
          return
        }
        if (msg["event"] === "subscribe") {
          io.record.subscribe()
          onSubscribe(msg, true)
        } else if (msg["event"] === "unsubscribe") {
          onSubscribe(msg, false)
        } else {
          reply(msg, { code: 1, message: "invalid request body" }, null)
        }
      },
      onTick: () => {
        for (const [channel, pairs] of subscriptions) {
          for (const [pair, market] of pairs) io.send(updateFrame(channel, pair, market))
        }
      }
    }
  }
}

export const gateioRestRoute: RestTickerRoute = {
  exchange: "gateio",
  answer: (request, context) => {
    if (!request.path.endsWith("/spot/tickers")) return undefined
    const pair = request.query.get("currency_pair") ?? ""
    const market = context.markets.find((m) => m.symbol === pair)
    if (market === undefined) return jsonAnswer(400, { label: "INVALID_CURRENCY_PAIR", message: `Invalid currency pair ${pair}` })
    const q = context.quote(market)
    const change = (((q.last - q.open24h) / q.open24h) * 100).toFixed(2)
    return jsonAnswer(200, [
      {
        currency_pair: pair,
        last: formatDecimal(q.last),
        lowest_ask: formatDecimal(q.ask),
        lowest_size: formatQuantity(q.askSize),
        highest_bid: formatDecimal(q.bid),
        highest_size: formatQuantity(q.bidSize),
        change_percentage: change,
        change_utc0: change,
        change_utc8: change,
        base_volume: formatQuantity(q.volume24h),
        quote_volume: formatQuantity(q.volume24h * q.last),
        high_24h: formatDecimal(q.high24h),
        low_24h: formatDecimal(q.low24h)
      }
    ])
  }
}
