/**
 * Kraken Spot WebSocket v2 wire facts (reference §3): a `status` frame on connect; `subscribe`
 * to `ticker` with `symbol[]`, `event_trigger`, `snapshot`, optional `req_id`; one ack per
 * symbol; `snapshot` then `update` frames whose prices are JSON numbers; `{"channel":"heartbeat"}`
 * about once a second when nothing else was sent; `{"method":"ping"}` answered with `pong`.
 * v2 names markets `BTC/USD`: the legacy `XBT`/`XDG` codes are rejected.
 * REST: `GET /0/public/Ticker?pair=XBTUSD`, answered under the legacy key `XXBTZUSD` (§3.6).
 */
import type { MarketSymbol } from "../../domain/exchanges/protocol.ts"
import { jsonAnswer, type RestTickerRoute } from "../restSimulator.ts"
import type { ExchangeSimulator, SessionIO } from "../simulatorServer.ts"
import { isoMicros, parseClientJson, roundedPrice, stringsOf } from "../wireFormat.ts"

const LEGACY_TO_V2: Readonly<Record<string, string>> = { XBT: "BTC", XDG: "DOGE" }

/** A configured symbol may use the legacy codes; the v2 wire never does. */
const v2Symbol = (symbol: string): string =>
  symbol
    .split("/")
    .map((part) => LEGACY_TO_V2[part] ?? part)
    .join("/")

const findMarket = (io: SessionIO, symbol: string): MarketSymbol | undefined =>
  symbol.split("/").some((part) => part in LEGACY_TO_V2) ? undefined : io.markets.find((m) => v2Symbol(m.symbol) === symbol)

const round = (value: number, decimals: number): number => Number(value.toFixed(decimals))

/** connection_id exceeds 2^53 on the live feed; printed exactly as an integer. */
const connectionIdJson = (id: number): string => `138347743802000${String(id).padStart(5, "0")}`

export const krakenSimulator: ExchangeSimulator = {
  exchange: "kraken",
  path: "/v2",
  heartbeatEveryMs: 1_000,
  heartbeatTimeoutMs: undefined,
  openSession: (io) => {
    /** v2 symbol → market */
    const subscribed = new Map<string, MarketSymbol>()
    let sentSinceHeartbeat = false

    const status = JSON.stringify({
      channel: "status",
      data: [{ api_version: "v2", connection_id: 0, system: "online", version: "2.0.0" }],
      type: "update"
    }).replace('"connection_id":0', `"connection_id":${connectionIdJson(io.connectionId)}`)
    io.send(status)

    const times = (receivedAt: number) => ({ time_in: isoMicros(receivedAt), time_out: isoMicros(io.now()) })

    const tickerFrame = (type: "snapshot" | "update", symbol: string, market: MarketSymbol): string => {
      const q = io.quote(market)
      sentSinceHeartbeat = true
      return JSON.stringify({
        channel: "ticker",
        type,
        data: [
          {
            symbol,
            bid: roundedPrice(q.bid),
            bid_qty: round(q.bidSize, 8),
            ask: roundedPrice(q.ask),
            ask_qty: round(q.askSize, 8),
            last: roundedPrice(q.last),
            volume: round(q.volume24h, 8),
            vwap: roundedPrice((q.high24h + q.low24h) / 2),
            low: roundedPrice(q.low24h),
            high: roundedPrice(q.high24h),
            change: roundedPrice(q.last - q.open24h),
            change_pct: round(((q.last - q.open24h) / q.open24h) * 100, 2),
            timestamp: isoMicros(io.now())
          }
        ]
      })
    }

    const onSubscribe = (msg: { readonly [key: string]: unknown }, receivedAt: number, subscribe: boolean) => {
      const method = subscribe ? "subscribe" : "unsubscribe"
      const reqId = typeof msg["req_id"] === "number" ? { req_id: msg["req_id"] } : {}
      const params = msg["params"]
      const p = typeof params === "object" && params !== null ? (params as { readonly [key: string]: unknown }) : {}
      if (p["channel"] !== "ticker") {
        io.send(JSON.stringify({ error: `Channel ${String(p["channel"])} not supported`, method, ...reqId, success: false, ...times(receivedAt) }))
        return
      }
      const trigger = p["event_trigger"] === undefined ? "trades" : p["event_trigger"]
      if (trigger !== "trades" && trigger !== "bbo") {
        io.send(JSON.stringify({ error: "Invalid event_trigger", method, ...reqId, success: false, ...times(receivedAt) }))
        return
      }
      const snapshot = p["snapshot"] !== false
      const symbols = stringsOf(p["symbol"])
      if (symbols.length === 0) {
        io.send(JSON.stringify({ error: "Missing field: symbol", method, ...reqId, success: false, ...times(receivedAt) }))
        return
      }
      for (const symbol of symbols) {
        const market = findMarket(io, symbol)
        if (market === undefined) {
          io.send(
            JSON.stringify({ error: `Currency pair not supported ${symbol}`, method, ...reqId, success: false, symbol, ...times(receivedAt) })
          )
          continue
        }
        if (subscribe) subscribed.set(symbol, market)
        else subscribed.delete(symbol)
        const result = subscribe ? { channel: "ticker", event_trigger: trigger, snapshot, symbol } : { channel: "ticker", symbol }
        io.send(JSON.stringify({ method, ...reqId, result, success: true, ...times(receivedAt) }))
        if (subscribe && snapshot) io.send(tickerFrame("snapshot", symbol, market))
      }
    }

    const onPing = (msg: { readonly [key: string]: unknown }, receivedAt: number) => {
      const reqId = typeof msg["req_id"] === "number" ? { req_id: msg["req_id"] } : {}
      if ("params" in msg) {
        io.send(
          JSON.stringify({
            error: "Unsupported field: 'params' for the given msg type: ping",
            method: "ping",
            ...reqId,
            success: false,
            ...times(receivedAt)
          })
        )
        return
      }
      io.record.pingAnswered()
      io.send(JSON.stringify({ method: "pong", ...reqId, ...times(receivedAt) }))
    }

    return {
      onFrame: (raw) => {
        const receivedAt = io.now()
        const msg = parseClientJson(raw)
        if (msg === undefined) {
          io.send(JSON.stringify({ error: "Malformed request", success: false, ...times(receivedAt) }))
          return
        }
        switch (msg["method"]) {
          case "subscribe":
            io.record.subscribe()
            onSubscribe(msg, receivedAt, true)
            return
          case "unsubscribe":
            onSubscribe(msg, receivedAt, false)
            return
          case "ping":
            onPing(msg, receivedAt)
            return
          default:
            io.send(JSON.stringify({ error: `Unsupported method: ${String(msg["method"])}`, success: false, ...times(receivedAt) }))
        }
      },
      onTick: () => {
        for (const [symbol, market] of subscribed) io.send(tickerFrame("update", symbol, market))
      },
      // Heartbeats fill silence only, and start with the first subscription.
      onHeartbeat: () => {
        if (subscribed.size > 0 && !sentSinceHeartbeat) {
          io.record.heartbeat()
          io.send(JSON.stringify({ channel: "heartbeat" }))
        }
        sentSinceHeartbeat = false
      }
    }
  }
}

const V2_TO_LEGACY: Readonly<Record<string, string>> = { BTC: "XBT", DOGE: "XDG" }
/** Assets and currencies whose REST keys carry Kraken's old X / Z class prefixes. */
const X_PREFIXED = new Set(["XBT", "ETH", "LTC", "XRP", "XDG", "XLM", "ETC", "ZEC", "XMR", "REP", "MLN"])
const Z_PREFIXED = new Set(["USD", "EUR", "GBP", "JPY", "CAD"])

const legacyParts = (market: MarketSymbol): readonly [string, string] => {
  const [base = market.asset, quote = market.quote] = v2Symbol(market.symbol).split("/")
  return [V2_TO_LEGACY[base] ?? base, V2_TO_LEGACY[quote] ?? quote]
}

/** The REST result key: XXBTZUSD for the old pairs, plain concatenation for newer ones. */
const restResultKey = (market: MarketSymbol): string => {
  const [base, quote] = legacyParts(market)
  return X_PREFIXED.has(base) && Z_PREFIXED.has(quote) ? `X${base}Z${quote}` : `${base}${quote}`
}

/** Every spelling the REST `pair` parameter accepts for a market. */
const restPairNames = (market: MarketSymbol): ReadonlyArray<string> => {
  const [base, quote] = legacyParts(market)
  const v2 = v2Symbol(market.symbol)
  return [`${base}${quote}`, v2.replace("/", ""), v2, `${base}/${quote}`, restResultKey(market)]
}

export const krakenRestRoute: RestTickerRoute = {
  exchange: "kraken",
  answer: (request, context) => {
    if (!request.path.endsWith("/0/public/Ticker")) return undefined
    const pair = request.query.get("pair") ?? ""
    const market = context.markets.find((m) => restPairNames(m).includes(pair))
    if (market === undefined) return jsonAnswer(200, { error: ["EQuery:Unknown asset pair"] })
    const q = context.quote(market)
    const lots = (price: number, size: number) => [price.toFixed(5), String(Math.max(1, Math.round(size))), size.toFixed(3)]
    return jsonAnswer(200, {
      error: [],
      result: {
        [restResultKey(market)]: {
          a: lots(q.ask, q.askSize),
          b: lots(q.bid, q.bidSize),
          c: [q.last.toFixed(5), q.lastSize.toFixed(8)],
          v: [(q.volume24h * 0.9).toFixed(8), q.volume24h.toFixed(8)],
          p: [((q.high24h + q.low24h) / 2).toFixed(5), ((q.high24h + q.low24h) / 2).toFixed(5)],
          t: [34_619, 38_907],
          l: [q.low24h.toFixed(5), q.low24h.toFixed(5)],
          h: [q.high24h.toFixed(5), q.high24h.toFixed(5)],
          o: q.open24h.toFixed(5)
        }
      }
    })
  }
}
