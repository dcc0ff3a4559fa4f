/**
 * Coinbase Exchange public feed (reference §1): the `ticker` channel (one message per match,
 * carrying last trade and the BBO at that moment) plus the `heartbeat` channel, which sends one
 * message per product per second and is the only liveness signal (no application ping exists).
 */
import type { Tick } from "../price.ts"
import { isoTimestamp, positiveDecimal } from "./decimal.ts"
import {
  ACK,
  batches,
  EMPTY_TICKER,
  errorFrame,
  HEARTBEAT,
  IGNORED,
  isRecord,
  joinUrl,
  makeTick,
  marketOf,
  parseJson,
  tickerFrame,
  uniqueSymbols
} from "./frame.ts"
import type { ExchangeProtocol, MarketSymbol, ParsedFrame } from "./protocol.ts"

/**
 * No per-message product limit is documented; the server does reject "Message too big". 100
 * product ids keep a frame near 1.5 KB, and the 100 msgs/s per IP limit (§1.4) is far away.
 */
const PRODUCTS_PER_SUBSCRIBE = 100

const parseFrame = (raw: string, markets: ReadonlyMap<string, MarketSymbol>, receivedAt: number): ParsedFrame => {
  const msg = parseJson(raw)
  if (!isRecord(msg)) return IGNORED
  switch (msg["type"]) {
    case "ticker": {
      const market = marketOf(markets, msg["product_id"])
      if (market === undefined) return EMPTY_TICKER
      // The first ticker after subscribing may lack `time` (§1.3): the tick then has no exchange ts.
      const tick = makeTick(
        "coinbase",
        market,
        positiveDecimal(msg["price"]),
        positiveDecimal(msg["best_bid"]),
        positiveDecimal(msg["best_ask"]),
        isoTimestamp(msg["time"]),
        receivedAt
      )
      return tick === undefined ? EMPTY_TICKER : tickerFrame([tick])
    }
    case "heartbeat":
      return HEARTBEAT
    case "subscriptions":
      return ACK
    case "error": {
      const reason = typeof msg["reason"] === "string" ? `: ${msg["reason"]}` : ""
      return errorFrame(typeof msg["message"] === "string" ? msg["message"] + reason : undefined, "coinbase error")
    }
    default:
      return IGNORED
  }
}

const parseRestTicker = (body: string, market: MarketSymbol, receivedAt: number): Tick | undefined => {
  const msg = parseJson(body)
  if (!isRecord(msg)) return undefined
  return makeTick(
    "coinbase",
    market,
    positiveDecimal(msg["price"]),
    positiveDecimal(msg["bid"]),
    positiveDecimal(msg["ask"]),
    isoTimestamp(msg["time"]),
    receivedAt
  )
}

export const coinbaseProtocol: ExchangeProtocol = {
  exchange: "coinbase",
  defaultWsUrl: "wss://ws-feed.exchange.coinbase.com",
  defaultRestUrl: "https://api.exchange.coinbase.com",
  symbolFor: (asset, quote) => `${asset.toUpperCase()}-${quote.toUpperCase()}`,
  // Must arrive within 5 s of connecting (§1.2); the engine sends these first.
  subscribeFrames: (markets) =>
    batches(uniqueSymbols(markets), PRODUCTS_PER_SUBSCRIBE).map((productIds) =>
      JSON.stringify({ type: "subscribe", product_ids: productIds, channels: ["ticker", "heartbeat"] })
    ),
  connectUrl: (base) => base,
  parseFrame,
  clientPing: undefined,
  // Heartbeats arrive every second per product: ten missing in a row means the socket is dead.
  silenceTimeoutMs: 10_000,
  restTickerUrl: (base, market) => joinUrl(base, `/products/${encodeURIComponent(market.symbol)}/ticker`),
  parseRestTicker,
  // Public REST limit is 10 req/s per IP, burst 15 (§1.7); stay at a third of it.
  restBudgetPerSecond: 3
}
