/**
 * OKX v5 public WebSocket (reference §6): `tickers` channel, pushed on trade or BBO change at
 * most every 100 ms. OKX has no protocol-level ping and drops a socket idle for 30 s: the client
 * sends the text `ping` and gets the text `pong`, which is not JSON (§6.4).
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
  PONG,
  recordsOf,
  stringOf,
  tickerFrame,
  uniqueSymbols,
  type JsonRecord
} from "./frame.ts"
import type { ExchangeProtocol, MarketSymbol, ParsedFrame } from "./protocol.ts"

/**
 * The only documented request limit is 64 KB of `args` (§6.4); an arg is ~45 bytes, so 100 per
 * request (~4.5 KB) is far inside it. Subscribe requests are also capped at 480 per hour per
 * connection, which batching keeps us far from.
 */
const ARGS_PER_SUBSCRIBE = 100

const CHANNEL = "tickers"

/** Fields are strings; `bidPx`/`askPx` may be "" (treated as missing, not 0); `ts` ms string (§6.3). */
const tickOf = (record: JsonRecord, market: MarketSymbol, receivedAt: number): Tick | undefined =>
  makeTick(
    "okx",
    market,
    positiveDecimal(record["last"]),
    positiveDecimal(record["bidPx"]),
    positiveDecimal(record["askPx"]),
    msTimestamp(record["ts"]),
    receivedAt
  )

const parseTickers = (
  arg: JsonRecord,
  data: unknown,
  markets: ReadonlyMap<string, MarketSymbol>,
  receivedAt: number
): ParsedFrame => {
  const ticks: Array<Tick> = []
  for (const record of recordsOf(data)) {
    const market = marketOf(markets, record["instId"] ?? arg["instId"])
    if (market === undefined) continue
    const tick = tickOf(record, market, receivedAt)
    if (tick !== undefined) ticks.push(tick)
  }
  return tickerFrame(ticks)
}

const parseFrame = (raw: string, markets: ReadonlyMap<string, MarketSymbol>, receivedAt: number): ParsedFrame => {
  if (raw === "pong") return PONG
  const msg = parseJson(raw)
  if (!isRecord(msg)) return IGNORED
  switch (msg["event"]) {
    case undefined:
      break
    case "subscribe":
    case "unsubscribe":
      return ACK
    case "error":
      return errorFrame(msg["msg"], `okx error ${describeValue(msg["code"])}`)
    // 64008: "connection will soon be closed for a service upgrade" (§6.4).
    case "notice":
      return errorFrame(msg["msg"], `okx notice ${describeValue(msg["code"])}`)
    default:
      return IGNORED
  }
  const arg = msg["arg"]
  if (isRecord(arg) && arg["channel"] === CHANNEL) return parseTickers(arg, msg["data"], markets, receivedAt)
  return IGNORED
}

/** REST `/api/v5/market/ticker`: `{"code":"0","data":[{…same fields…}]}` (§6.6). */
const parseRestTicker = (body: string, market: MarketSymbol, receivedAt: number): Tick | undefined => {
  const msg = parseJson(body)
  if (!isRecord(msg) || (msg["code"] !== "0" && msg["code"] !== 0)) return undefined
  const rows = recordsOf(msg["data"])
  const row = rows.find((r) => stringOf(r["instId"]) === market.symbol) ?? (rows.length === 1 ? rows[0] : undefined)
  return row === undefined ? undefined : tickOf(row, market, receivedAt)
}

export const okxProtocol: ExchangeProtocol = {
  exchange: "okx",
  defaultWsUrl: "wss://ws.okx.com:8443/ws/v5/public",
  defaultRestUrl: "https://www.okx.com",
  symbolFor: (asset, quote) => `${asset.toUpperCase()}-${quote.toUpperCase()}`,
  // `id` is optional (§6.2) and not sent: acks echo the arg, which identifies them well enough.
  subscribeFrames: (markets) =>
    batches(uniqueSymbols(markets), ARGS_PER_SUBSCRIBE).map((symbols) =>
      JSON.stringify({ op: "subscribe", args: symbols.map((instId) => ({ channel: CHANNEL, instId })) })
    ),
  connectUrl: (base) => base,
  parseFrame,
  // Must be < 30 s of idleness (§6.4); every 15 s leaves room for one lost ping.
  clientPing: { frame: "ping", everyMs: 15_000 },
  // The server itself gives up after 30 s without traffic.
  silenceTimeoutMs: 30_000,
  restTickerUrl: (base, market) => joinUrl(base, `/api/v5/market/ticker?instId=${encodeURIComponent(market.symbol)}`),
  parseRestTicker,
  // 20 requests / 2 s per IP (§6.6) = 10/s: under a third.
  restBudgetPerSecond: 3
}
