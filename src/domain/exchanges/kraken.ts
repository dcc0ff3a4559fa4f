/**
 * Kraken Spot WebSocket v2 (reference §3): `ticker` channel with `event_trigger: "bbo"`, so
 * the best bid/ask is pushed when it changes, not only on trades (§3.7). Prices are JSON numbers.
 * v2 names markets `BTC/USD`; REST and v1 use the legacy `XBT` / `XDG` codes (§3.5), so both
 * spellings are accepted in `exchange_asset_map` and translated where each API needs them.
 */
import type { Tick } from "../price.ts"
import { isoTimestamp, positiveDecimal } from "./decimal.ts"
import {
  ACK,
  batches,
  errorFrame,
  HEARTBEAT,
  IGNORED,
  isRecord,
  joinUrl,
  makeTick,
  parseJson,
  PONG,
  recordsOf,
  tickerFrame,
  uniqueSymbols
} from "./frame.ts"
import type { ExchangeProtocol, MarketSymbol, ParsedFrame } from "./protocol.ts"

/**
 * Symbols per subscribe message: UNCONFIRMED (no official limit found, §3.4). Each symbol is
 * acknowledged separately, so a modest 50 keeps one request's burst of acks small.
 */
const SYMBOLS_PER_SUBSCRIBE = 50

/** Kraken's legacy asset codes (REST, v1) and the names v2 uses for them. */
const LEGACY_TO_V2: ReadonlyMap<string, string> = new Map([
  ["XBT", "BTC"],
  ["XDG", "DOGE"]
])
const V2_TO_LEGACY: ReadonlyMap<string, string> = new Map([...LEGACY_TO_V2].map(([legacy, v2]) => [v2, legacy]))

const renameParts = (symbol: string, names: ReadonlyMap<string, string>): ReadonlyArray<string> =>
  symbol.split("/").map((part) => names.get(part) ?? part)

/** "XBT/USD" → "BTC/USD"; v2 rejects the legacy names. */
const toV2 = (symbol: string): string => renameParts(symbol, LEGACY_TO_V2).join("/")
/** "BTC/USD" → "XBTUSD", the documented REST `pair` form. */
const toRestPair = (symbol: string): string => renameParts(symbol, V2_TO_LEGACY).join("")

/** Frames name the v2 symbol; the map may hold either spelling. */
const lookup = (markets: ReadonlyMap<string, MarketSymbol>, symbol: unknown): MarketSymbol | undefined => {
  if (typeof symbol !== "string") return undefined
  return markets.get(symbol) ?? markets.get(renameParts(symbol, V2_TO_LEGACY).join("/"))
}

const parseTicker = (data: unknown, markets: ReadonlyMap<string, MarketSymbol>, receivedAt: number): ParsedFrame => {
  const ticks: Array<Tick> = []
  for (const record of recordsOf(data)) {
    const market = lookup(markets, record["symbol"])
    if (market === undefined) continue
    // `timestamp` is absent from older v2 frames (§3.3): optional.
    const tick = makeTick(
      "kraken",
      market,
      positiveDecimal(record["last"]),
      positiveDecimal(record["bid"]),
      positiveDecimal(record["ask"]),
      isoTimestamp(record["timestamp"]),
      receivedAt
    )
    if (tick !== undefined) ticks.push(tick)
  }
  return tickerFrame(ticks)
}

const parseFrame = (raw: string, markets: ReadonlyMap<string, MarketSymbol>, receivedAt: number): ParsedFrame => {
  const msg = parseJson(raw)
  if (!isRecord(msg)) return IGNORED
  switch (msg["channel"]) {
    case "ticker":
      return parseTicker(msg["data"], markets, receivedAt)
    case "heartbeat":
      return HEARTBEAT
    case undefined:
      break
    default:
      // `status` (system state on connect) and channels we never subscribe.
      return IGNORED
  }
  if (msg["success"] === false) return errorFrame(msg["error"], "kraken request failed")
  switch (msg["method"]) {
    case "pong":
      return PONG
    case "subscribe":
    case "unsubscribe":
      return ACK
    default:
      return IGNORED
  }
}

/** REST Ticker: `{"error":[],"result":{"XXBTZUSD":{"a":[ask,…],"b":[bid,…],"c":[last,…],…}}}` (§3.6). */
const parseRestTicker = (body: string, market: MarketSymbol, receivedAt: number): Tick | undefined => {
  const msg = parseJson(body)
  if (!isRecord(msg)) return undefined
  const errors = msg["error"]
  if (Array.isArray(errors) && errors.length > 0) return undefined
  const result = msg["result"]
  if (!isRecord(result)) return undefined
  // The result key (XXBTZUSD) differs from the requested pair; a single-pair request has one key.
  const entries = Object.values(result)
  const entry = entries.length === 1 ? entries[0] : undefined
  if (!isRecord(entry)) return undefined
  const first = (field: unknown): number | undefined =>
    Array.isArray(field) ? positiveDecimal(field[0]) : undefined
  // No timestamp in the REST ticker.
  return makeTick("kraken", market, first(entry["c"]), first(entry["b"]), first(entry["a"]), undefined, receivedAt)
}

export const krakenProtocol: ExchangeProtocol = {
  exchange: "kraken",
  defaultWsUrl: "wss://ws.kraken.com/v2",
  defaultRestUrl: "https://api.kraken.com",
  symbolFor: (asset, quote) => `${asset.toUpperCase()}/${quote.toUpperCase()}`,
  subscribeFrames: (markets) =>
    batches(uniqueSymbols(markets, toV2), SYMBOLS_PER_SUBSCRIBE).map((symbols, index) =>
      JSON.stringify({
        method: "subscribe",
        params: { channel: "ticker", symbol: symbols, event_trigger: "bbo", snapshot: true },
        req_id: index + 1
      })
    ),
  connectUrl: (base) => base,
  parseFrame,
  // The server already sends `heartbeat` ~1/s; the app ping (no `params`: §3.4) is a cheap
  // round-trip check on top of it, frequent enough to land inside every silence window.
  clientPing: { frame: JSON.stringify({ method: "ping" }), everyMs: 5_000 },
  // Ten missed one-second heartbeats.
  silenceTimeoutMs: 10_000,
  restTickerUrl: (base, market) =>
    joinUrl(base, `/0/public/Ticker?pair=${encodeURIComponent(toRestPair(market.symbol))}`),
  parseRestTicker,
  // Public REST limit unpublished; ~1 req/s per IP per a 3p profile (§3.6, UNCONFIRMED): half.
  restBudgetPerSecond: 0.5
}
