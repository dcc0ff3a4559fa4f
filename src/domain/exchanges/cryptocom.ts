/**
 * Crypto.com Exchange API v1 market-data feed (reference §5): `ticker.{instrument}` channels.
 * The server sends `public/heartbeat` every 30 s and closes the socket unless the client answers
 * `public/respond-heartbeat` with the same id within 5 s: that answer is returned in `replies`.
 * `ticker` subscriptions get no separate ack; the first data frame echoes the request id (§5.2).
 */
import type { Tick } from "../price.ts"
import { msTimestamp, positiveDecimal } from "./decimal.ts"
import {
  ACK,
  batches,
  describeValue,
  errorFrame,
  IGNORED,
  isRecord,
  joinUrl,
  makeTick,
  marketOf,
  parseJson,
  recordsOf,
  stringOf,
  tickerFrame,
  uniqueSymbols,
  type JsonRecord
} from "./frame.ts"
import type { ExchangeProtocol, MarketSymbol, ParsedFrame } from "./protocol.ts"

/**
 * A 3p probe saw 100 channels per frame accepted (§5.2); half of that. A connection holds at
 * most 400 subscriptions (code 40107, §5.4): beyond that the engine must open another socket.
 */
const CHANNELS_PER_SUBSCRIBE = 50

/** `code` is 0 on success, as a number on WS and a string on REST (§5.6). */
const succeeded = (code: unknown): boolean => code === undefined || code === 0 || code === "0"

/** Fields: `a` last, `b` bid, `k` ask (each may be null), `t` ms as number or string (§5.3). */
const tickOf = (record: JsonRecord, market: MarketSymbol, receivedAt: number): Tick | undefined =>
  makeTick(
    "cryptocom",
    market,
    positiveDecimal(record["a"]),
    positiveDecimal(record["b"]),
    positiveDecimal(record["k"]),
    msTimestamp(record["t"]),
    receivedAt
  )

const parseTicker = (result: JsonRecord, markets: ReadonlyMap<string, MarketSymbol>, receivedAt: number): ParsedFrame => {
  const ticks: Array<Tick> = []
  for (const record of recordsOf(result["data"])) {
    const market = marketOf(markets, record["i"] ?? result["instrument_name"])
    if (market === undefined) continue
    const tick = tickOf(record, market, receivedAt)
    if (tick !== undefined) ticks.push(tick)
  }
  return tickerFrame(ticks)
}

const RAW_NUMERIC_ID = /"id"\s*:\s*(-?\d+)/

/**
 * Echo the id exactly as received; the server matches on it. A numeric id is copied from the raw
 * text, since `JSON.parse` would round one beyond 2^53.
 */
const heartbeatReply = (id: unknown, raw: string): string => {
  if (typeof id === "number") {
    const digits = RAW_NUMERIC_ID.exec(raw)?.[1]
    if (digits !== undefined && Number(digits) === id) return `{"id":${digits},"method":"public/respond-heartbeat"}`
  }
  return typeof id === "number" || typeof id === "string"
    ? JSON.stringify({ id, method: "public/respond-heartbeat" })
    : JSON.stringify({ method: "public/respond-heartbeat" })
}

const parseFrame = (raw: string, markets: ReadonlyMap<string, MarketSymbol>, receivedAt: number): ParsedFrame => {
  const msg = parseJson(raw)
  if (!isRecord(msg)) return IGNORED
  const method = msg["method"]
  if (method === "public/heartbeat") return { ticks: [], replies: [heartbeatReply(msg["id"], raw)], kind: "heartbeat" }
  if (!succeeded(msg["code"])) return errorFrame(msg["message"], `crypto.com error ${describeValue(msg["code"])}`)
  if (method !== "subscribe") return IGNORED
  const result = msg["result"]
  if (!isRecord(result)) return ACK // book channels' bare per-channel ack
  return result["channel"] === "ticker" ? parseTicker(result, markets, receivedAt) : IGNORED
}

/** REST `public/get-tickers`: `{"code":0|"0","result":{"data":[{…same fields…}]}}` (§5.6). */
const parseRestTicker = (body: string, market: MarketSymbol, receivedAt: number): Tick | undefined => {
  const msg = parseJson(body)
  if (!isRecord(msg) || !succeeded(msg["code"])) return undefined
  const result = msg["result"]
  if (!isRecord(result)) return undefined
  const rows = recordsOf(result["data"])
  const row = rows.find((r) => stringOf(r["i"]) === market.symbol) ?? (rows.length === 1 ? rows[0] : undefined)
  return row === undefined ? undefined : tickOf(row, market, receivedAt)
}

/** `now` gives epoch ms for the documented `nonce`. */
export const makeCryptocomProtocol = (now: () => number): ExchangeProtocol => ({
  exchange: "cryptocom",
  defaultWsUrl: "wss://stream.crypto.com/exchange/v1/market",
  defaultRestUrl: "https://api.crypto.com",
  // Spot instruments are BASE_QUOTE (BTC_USD, BTC_USDT); BTCUSD-PERP is the perpetual (§5.5).
  symbolFor: (asset, quote) => `${asset.toUpperCase()}_${quote.toUpperCase()}`,
  // The docs ask for a 1 s pause between connecting and the first request (§5.1): the engine's job.
  subscribeFrames: (markets) =>
    batches(uniqueSymbols(markets), CHANNELS_PER_SUBSCRIBE).map((symbols, index) =>
      JSON.stringify({
        id: index + 1,
        method: "subscribe",
        params: { channels: symbols.map((s) => `ticker.${s}`) },
        nonce: now()
      })
    ),
  connectUrl: (base) => base,
  parseFrame,
  // The server drives keep-alive with its own heartbeat; the client only answers it.
  clientPing: undefined,
  // Heartbeats every 30 s: allow one to arrive late by half a period.
  silenceTimeoutMs: 45_000,
  restTickerUrl: (base, market) =>
    joinUrl(base, `/exchange/v1/public/get-tickers?instrument_name=${encodeURIComponent(market.symbol)}`),
  parseRestTicker,
  // Public market data: 100 req/s per method per IP (§5.6; get-tickers not named, UNCONFIRMED).
  restBudgetPerSecond: 5
})

export const cryptocomProtocol: ExchangeProtocol = makeCryptocomProtocol(Date.now)
