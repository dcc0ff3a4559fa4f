/**
 * Gate spot WebSocket v4 (reference §4): `spot.tickers`, pushed at most once a second per pair,
 * with last, best bid and best ask. Frames carry no per-ticker time, only the envelope `time_ms`
 * (since 2022) or `time` in seconds. Requests must carry `time` in seconds within 60 s of server
 * time, so frames are built from a clock (injectable for tests).
 */
import type { Tick } from "../price.ts"
import { msTimestamp, positiveDecimal, secondsTimestamp } from "./decimal.ts"
import {
  ACK,
  batches,
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
  uniqueSymbols
} from "./frame.ts"
import type { ExchangeProtocol, MarketSymbol, ParsedFrame } from "./protocol.ts"

/**
 * Pairs per subscribe payload: UNCONFIRMED (§4.4; only a 3p note of 100 channels per
 * connection exists). 50 stays well inside even that.
 */
const PAIRS_PER_SUBSCRIBE = 50

const CHANNEL = "spot.tickers"

const errorText = (error: unknown): unknown => (isRecord(error) ? error["message"] : undefined)

const parseTickers = (
  msg: { readonly [key: string]: unknown },
  markets: ReadonlyMap<string, MarketSymbol>,
  receivedAt: number
): ParsedFrame => {
  const exchangeTs = msTimestamp(msg["time_ms"]) ?? secondsTimestamp(msg["time"])
  const result = msg["result"]
  const ticks: Array<Tick> = []
  for (const record of isRecord(result) ? [result] : recordsOf(result)) {
    const market = marketOf(markets, record["currency_pair"])
    if (market === undefined) continue
    const tick = makeTick(
      "gateio",
      market,
      positiveDecimal(record["last"]),
      positiveDecimal(record["highest_bid"]),
      positiveDecimal(record["lowest_ask"]),
      exchangeTs,
      receivedAt
    )
    if (tick !== undefined) ticks.push(tick)
  }
  return tickerFrame(ticks)
}

const parseFrame = (raw: string, markets: ReadonlyMap<string, MarketSymbol>, receivedAt: number): ParsedFrame => {
  const msg = parseJson(raw)
  if (!isRecord(msg)) return IGNORED
  const event = msg["event"]
  // Service-restart notice (§4.4): surfaced as an error so the engine logs it; the close follows.
  if (msg["type"] === "upgrade" || event === "upgrade") return errorFrame(msg["msg"], "gate service upgrade")
  const error = msg["error"]
  if (error !== undefined && error !== null) return errorFrame(errorText(error), "gate error")
  if (msg["channel"] === "spot.pong") return PONG
  if (event === "subscribe" || event === "unsubscribe") return ACK
  if (msg["channel"] === CHANNEL && event === "update") return parseTickers(msg, markets, receivedAt)
  return IGNORED
}

/** REST `/spot/tickers?currency_pair=…` answers an array; no timestamp (§4.6). */
const parseRestTicker = (body: string, market: MarketSymbol, receivedAt: number): Tick | undefined => {
  const rows = recordsOf(parseJson(body))
  const row = rows.find((r) => stringOf(r["currency_pair"]) === market.symbol) ?? (rows.length === 1 ? rows[0] : undefined)
  if (row === undefined) return undefined
  return makeTick(
    "gateio",
    market,
    positiveDecimal(row["last"]),
    positiveDecimal(row["highest_bid"]),
    positiveDecimal(row["lowest_ask"]),
    undefined,
    receivedAt
  )
}

/** `now` gives epoch ms; requests carry whole seconds. */
export const makeGateioProtocol = (now: () => number): ExchangeProtocol => {
  const seconds = (): number => Math.floor(now() / 1000)
  return {
    exchange: "gateio",
    defaultWsUrl: "wss://api.gateio.ws/ws/v4/",
    defaultRestUrl: "https://api.gateio.ws",
    symbolFor: (asset, quote) => `${asset.toUpperCase()}_${quote.toUpperCase()}`,
    subscribeFrames: (markets) =>
      batches(uniqueSymbols(markets), PAIRS_PER_SUBSCRIBE).map((pairs) =>
        JSON.stringify({ time: seconds(), channel: CHANNEL, event: "subscribe", payload: pairs })
      ),
    connectUrl: (base) => base,
    parseFrame,
    /**
     * Optional app ping (§4.4): the server relies on protocol pings, but `spot.pong` answers
     * give the silence watchdog a frame even when no pair moved. 10 s as in Gate's demo and Go
     * SDK. A getter so every read carries the current time.
     */
    get clientPing() {
      return { frame: JSON.stringify({ time: seconds(), channel: "spot.ping" }), everyMs: 10_000 }
    },
    // Three ping periods without any frame.
    silenceTimeoutMs: 30_000,
    restTickerUrl: (base, market) =>
      joinUrl(base, `/api/v4/spot/tickers?currency_pair=${encodeURIComponent(market.symbol)}`),
    parseRestTicker,
    // 200 requests / 10 s per endpoint per IP (§4.6) = 20/s: a quarter.
    restBudgetPerSecond: 5
  }
}

export const gateioProtocol: ExchangeProtocol = makeGateioProtocol(Date.now)
