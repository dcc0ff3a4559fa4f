/**
 * Gemini public feed (reference §2).
 *
 * Feed choice: the new WebSocket API at wss://ws.gemini.com with `{symbol}@bookTicker` streams.
 * Gemini marks the v1 (one socket per symbol) and v2 (`l2` books only, no ticker) market-data
 * APIs as archived and says to start new integrations on the new API (§2.1); `@bookTicker` is
 * its documented real-time best bid/ask, with an official sample message and nanosecond event
 * time, and Gemini's own MCP server prices from its mid (§2.8). It carries no last trade: the
 * `@trade` stream is not subscribed because a trade-only tick would displace the BBO tick the
 * price is taken from; the REST fallback supplies `last`.
 */
import type { Tick } from "../price.ts"
import { msTimestamp, nsTimestamp, positiveDecimal } from "./decimal.ts"
import {
  ACK,
  batches,
  EMPTY_TICKER,
  errorFrame,
  IGNORED,
  isRecord,
  joinUrl,
  makeTick,
  parseJson,
  PONG,
  tickerFrame,
  uniqueSymbols
} from "./frame.ts"
import type { ExchangeProtocol, MarketSymbol, ParsedFrame } from "./protocol.ts"

/**
 * Per-message stream limit: UNCONFIRMED (§2.4). The older public WS doc allows 12 requests per
 * minute, so batches must be large enough to subscribe everything in a handful of messages,
 * yet small: 50 streams per message covers 600 markets within 12 messages.
 */
const STREAMS_PER_SUBSCRIBE = 50

/** Our ping's request id, so its answer can be told from subscribe answers. */
const PING_ID = "ping"

/** Gemini symbols are lower case on the new API (`btcusd`); configured ones may not be. */
const toWire = (symbol: string): string => symbol.toLowerCase()

const lookup = (markets: ReadonlyMap<string, MarketSymbol>, symbol: string): MarketSymbol | undefined =>
  markets.get(symbol) ?? markets.get(symbol.toUpperCase())

const parseBookTicker = (
  msg: { readonly [key: string]: unknown },
  symbol: string,
  markets: ReadonlyMap<string, MarketSymbol>,
  receivedAt: number
): ParsedFrame => {
  const market = lookup(markets, symbol)
  if (market === undefined) return EMPTY_TICKER
  // A bid of "" has been seen live (§0.1): positiveDecimal turns it into undefined.
  const tick = makeTick(
    "gemini",
    market,
    undefined,
    positiveDecimal(msg["b"]),
    positiveDecimal(msg["a"]),
    nsTimestamp(msg["E"]),
    receivedAt
  )
  return tick === undefined ? EMPTY_TICKER : tickerFrame([tick])
}

/** Request answers: `{"id":…,"status":200,"result":…}` or `{"id":…,"status":4xx,"error":{code,msg}}` (§2.2). */
const parseResponse = (msg: { readonly [key: string]: unknown }): ParsedFrame => {
  const status = msg["status"]
  const error = msg["error"]
  const failed = isRecord(error) || (status !== undefined && status !== 200)
  if (!failed) return msg["id"] === PING_ID ? PONG : ACK
  return errorFrame(isRecord(error) ? error["msg"] : undefined, `gemini status ${typeof status === "number" ? status : "?"}`)
}

const parseFrame = (raw: string, markets: ReadonlyMap<string, MarketSymbol>, receivedAt: number): ParsedFrame => {
  const msg = parseJson(raw)
  if (!isRecord(msg)) return IGNORED
  const symbol = msg["s"]
  if (typeof symbol === "string" && ("b" in msg || "a" in msg)) return parseBookTicker(msg, symbol, markets, receivedAt)
  // Gemini's own client treats any frame with `id` or `result` as a request answer (§2.2).
  if ("id" in msg || "result" in msg || "status" in msg) return parseResponse(msg)
  return IGNORED
}

/** v1 pubticker: `{"bid","ask","last","volume":{…,"timestamp":ms}}` (§2.7). */
const parseRestTicker = (body: string, market: MarketSymbol, receivedAt: number): Tick | undefined => {
  const msg = parseJson(body)
  if (!isRecord(msg)) return undefined
  const volume = msg["volume"]
  return makeTick(
    "gemini",
    market,
    positiveDecimal(msg["last"]),
    positiveDecimal(msg["bid"]),
    positiveDecimal(msg["ask"]),
    isRecord(volume) ? msTimestamp(volume["timestamp"]) : undefined,
    receivedAt
  )
}

export const geminiProtocol: ExchangeProtocol = {
  exchange: "gemini",
  defaultWsUrl: "wss://ws.gemini.com",
  defaultRestUrl: "https://api.gemini.com",
  symbolFor: (asset, quote) => `${asset}${quote}`.toLowerCase(),
  subscribeFrames: (markets) =>
    batches(uniqueSymbols(markets, toWire), STREAMS_PER_SUBSCRIBE).map((symbols, index) =>
      JSON.stringify({ id: String(index + 1), method: "subscribe", params: symbols.map((s) => `${s}@bookTicker`) })
    ),
  // One socket carries every stream; the per-symbol URLs belong to the archived v1 API.
  connectUrl: (base) => base,
  parseFrame,
  /**
   * Server idle timeout: UNCONFIRMED (§2.4). The API lists a `ping` method; its answer keeps a
   * socket whose books are quiet visibly alive. 15 s matches common exchange idle limits (≥ 30 s).
   */
  clientPing: { frame: JSON.stringify({ id: PING_ID, method: "ping" }), everyMs: 15_000 },
  // Three ping periods without any frame.
  silenceTimeoutMs: 45_000,
  restTickerUrl: (base, market) => joinUrl(base, `/v1/pubticker/${encodeURIComponent(toWire(market.symbol))}`),
  parseRestTicker,
  // 120 req/min public, "do not exceed 1 request per second" (§2.7): half of that.
  restBudgetPerSecond: 0.5
}
