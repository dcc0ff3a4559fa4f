import { describe, expect, it } from "vitest"
import { coinbaseProtocol } from "../src/domain/exchanges/coinbase.ts"
import { makeCryptocomProtocol } from "../src/domain/exchanges/cryptocom.ts"
import { isoTimestamp, msTimestamp, nsTimestamp, positiveDecimal, secondsTimestamp } from "../src/domain/exchanges/decimal.ts"
import { makeGateioProtocol } from "../src/domain/exchanges/gateio.ts"
import { geminiProtocol } from "../src/domain/exchanges/gemini.ts"
import { PROTOCOLS, protocolFor } from "../src/domain/exchanges/index.ts"
import { krakenProtocol } from "../src/domain/exchanges/kraken.ts"
import { okxProtocol } from "../src/domain/exchanges/okx.ts"
import type { MarketSymbol } from "../src/domain/exchanges/protocol.ts"
import { EXCHANGES } from "../src/domain/price.ts"
import { COINBASE, CRYPTOCOM, GATE, GEMINI, KRAKEN, marketMap, OKX } from "./exchanges.samples.ts"

const RECEIVED_AT = 1_700_000_000_000

const marketsFor = (symbols: ReadonlyArray<string>, toSymbol: (asset: string, quote: string) => string) =>
  symbols.map((pair): MarketSymbol => {
    const [asset = "", quote = ""] = pair.split("/")
    return { asset, quote, symbol: toSymbol(asset, quote) }
  })

/** n distinct synthetic markets in one exchange's naming. */
const manyMarkets = (n: number, toSymbol: (asset: string, quote: string) => string): ReadonlyArray<MarketSymbol> =>
  marketsFor(
    Array.from({ length: n }, (_, i) => `A${i}/USD`),
    toSymbol
  )

const parsedJson = (frames: ReadonlyArray<string>): ReadonlyArray<unknown> => frames.map((f) => JSON.parse(f))

describe("decimal helpers", () => {
  it("accept plain decimals and numbers, reject everything not finite and > 0", () => {
    expect(positiveDecimal("1285.22")).toBe(1285.22)
    expect(positiveDecimal(".5")).toBe(0.5)
    expect(positiveDecimal("1e3")).toBe(1000)
    expect(positiveDecimal(0.10025)).toBe(0.10025)
    for (const bad of ["", "0", "-1", "NaN", "Infinity", "1e400", "0x10", " 1", "1,5", "1_0", null, true, {}, [1], 0, -3, Number.NaN, Number.POSITIVE_INFINITY])
      expect(positiveDecimal(bad)).toBeUndefined()
  })

  it("convert timestamps in s / ms / ns / ISO to ms and reject implausible ones", () => {
    expect(secondsTimestamp(1606291803)).toBe(1606291803000)
    expect(msTimestamp("1597026383085")).toBe(1597026383085)
    expect(nsTimestamp(JSON.parse("1751508438600117161"))).toBe(1751508438600)
    expect(nsTimestamp("1751508438600117161")).toBe(1751508438600)
    expect(isoTimestamp("2022-10-19T23:28:22.061769Z")).toBe(Date.UTC(2022, 9, 19, 23, 28, 22, 61))
    expect(isoTimestamp("2022-10-19T23:28:22.061769+02:00")).toBe(Date.UTC(2022, 9, 19, 21, 28, 22, 61))
    for (const bad of ["1", "2022-10-19", "2022-13-45T99:28:22Z", 1666222102061, null])
      expect(isoTimestamp(bad)).toBeUndefined()
    // ms mistaken for seconds, or garbage far in the future, is no timestamp.
    expect(secondsTimestamp(1597026383085)).toBeUndefined()
    expect(msTimestamp(1e300)).toBeUndefined()
    expect(msTimestamp(12)).toBeUndefined()
  })
})

describe("index", () => {
  it("has one protocol per exchange, under its own name", () => {
    expect(Object.keys(PROTOCOLS).sort()).toEqual([...EXCHANGES].sort())
    for (const exchange of EXCHANGES) expect(protocolFor(exchange).exchange).toBe(exchange)
  })

  it("translates BTC/USD and ETH/USDT to each exchange's default symbol", () => {
    const table = EXCHANGES.map((e) => [e, PROTOCOLS[e].symbolFor("BTC", "USD"), PROTOCOLS[e].symbolFor("ETH", "USDT")])
    expect(table).toEqual([
      ["coinbase", "BTC-USD", "ETH-USDT"],
      ["gemini", "btcusd", "ethusdt"],
      ["kraken", "BTC/USD", "ETH/USDT"],
      ["gateio", "BTC_USD", "ETH_USDT"],
      ["cryptocom", "BTC_USD", "ETH_USDT"],
      ["okx", "BTC-USD", "ETH-USDT"]
    ])
  })

  it("keeps the silence timeout longer than the client ping period", () => {
    for (const exchange of EXCHANGES) {
      const { clientPing, silenceTimeoutMs } = PROTOCOLS[exchange]
      expect(silenceTimeoutMs).toBeGreaterThan(clientPing?.everyMs ?? 0)
      expect(PROTOCOLS[exchange].restBudgetPerSecond).toBeGreaterThan(0)
    }
  })

  it("every exchange subscribes each market exactly once, duplicates folded", () => {
    for (const exchange of EXCHANGES) {
      const protocol = PROTOCOLS[exchange]
      const markets = manyMarkets(230, protocol.symbolFor)
      const frames = protocol.subscribeFrames([...markets, ...markets.slice(0, 10)])
      const text = frames.join("\n")
      for (const m of markets) {
        const escaped = m.symbol.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&")
        const occurrences = text.match(new RegExp(`(?<![A-Za-z0-9])${escaped}(?![A-Za-z0-9])`, "g"))?.length ?? 0
        expect(occurrences, `${exchange} ${m.symbol}`).toBe(1)
      }
      expect(protocol.subscribeFrames([])).toEqual([])
    }
  })
})

describe("coinbase", () => {
  const markets = marketMap([COINBASE.ethUsd])

  it("parses the ticker sample", () => {
    const frame = coinbaseProtocol.parseFrame(COINBASE.ticker, markets, RECEIVED_AT)
    expect(frame.kind).toBe("ticker")
    expect(frame.ticks).toEqual([
      {
        exchange: "coinbase",
        asset: "ETH",
        quote: "USD",
        last: 1285.22,
        bid: 1285.04,
        ask: 1285.27,
        exchangeTs: Date.UTC(2022, 9, 19, 23, 28, 22, 61),
        receivedAt: RECEIVED_AT
      }
    ])
  })

  it("accepts the first ticker without time, and yields nothing for unknown products", () => {
    const noTime = JSON.stringify({ ...JSON.parse(COINBASE.ticker), time: undefined })
    expect(coinbaseProtocol.parseFrame(noTime, markets, RECEIVED_AT).ticks[0]?.exchangeTs).toBeUndefined()
    const other = coinbaseProtocol.parseFrame(COINBASE.ticker, marketMap([COINBASE.usdcUsd]), RECEIVED_AT)
    expect(other).toMatchObject({ kind: "ticker", ticks: [] })
  })

  it("classifies heartbeat, subscriptions and error", () => {
    expect(coinbaseProtocol.parseFrame(COINBASE.heartbeat, markets, RECEIVED_AT).kind).toBe("heartbeat")
    expect(coinbaseProtocol.parseFrame(COINBASE.subscriptions, markets, RECEIVED_AT).kind).toBe("ack")
    expect(coinbaseProtocol.parseFrame(COINBASE.error, markets, RECEIVED_AT)).toMatchObject({
      kind: "error",
      error: "Failed to subscribe: ETH-XYZ is not a valid product"
    })
  })

  it("subscribes ticker + heartbeat in batches of 100 products", () => {
    expect(parsedJson(coinbaseProtocol.subscribeFrames([COINBASE.ethUsd]))).toEqual([
      { type: "subscribe", product_ids: ["ETH-USD"], channels: ["ticker", "heartbeat"] }
    ])
    const frames = coinbaseProtocol.subscribeFrames(manyMarkets(250, coinbaseProtocol.symbolFor))
    expect(frames.map((f) => (JSON.parse(f) as { product_ids: Array<string> }).product_ids.length)).toEqual([100, 100, 50])
    expect(coinbaseProtocol.clientPing).toBeUndefined()
  })

  it("builds and parses the REST ticker", () => {
    expect(coinbaseProtocol.restTickerUrl("https://api.exchange.coinbase.com/", COINBASE.usdcUsd)).toBe(
      "https://api.exchange.coinbase.com/products/USDC-USD/ticker"
    )
    expect(coinbaseProtocol.parseRestTicker(COINBASE.rest, COINBASE.usdcUsd, RECEIVED_AT)).toEqual({
      exchange: "coinbase",
      asset: "USDC",
      quote: "USD",
      last: 0.997999,
      bid: 0.997094,
      ask: 0.998,
      exchangeTs: Date.UTC(2020, 0, 28, 2, 13, 33, 12),
      receivedAt: RECEIVED_AT
    })
    expect(coinbaseProtocol.parseRestTicker('{"message":"NotFound"}', COINBASE.usdcUsd, RECEIVED_AT)).toBeUndefined()
  })
})

describe("gemini", () => {
  const markets = marketMap([GEMINI.btcUsd])

  it("parses the bookTicker sample (ns event time → ms, no last)", () => {
    const frame = geminiProtocol.parseFrame(GEMINI.bookTicker, markets, RECEIVED_AT)
    expect(frame.kind).toBe("ticker")
    expect(frame.ticks).toEqual([
      {
        exchange: "gemini",
        asset: "BTC",
        quote: "USD",
        last: undefined,
        bid: 45000.5,
        ask: 45001,
        exchangeTs: 1751508438600,
        receivedAt: RECEIVED_AT
      }
    ])
  })

  it('treats a "" bid as missing and matches an upper-case configured symbol', () => {
    const emptyBid = GEMINI.bookTicker.replace('"b":"45000.50"', '"b":""')
    const upper = marketMap([{ ...GEMINI.btcUsd, symbol: "BTCUSD" }])
    const tick = geminiProtocol.parseFrame(emptyBid, upper, RECEIVED_AT).ticks[0]
    expect(tick).toMatchObject({ bid: undefined, ask: 45001 })
  })

  it("classifies request answers", () => {
    expect(geminiProtocol.parseFrame(GEMINI.ack, markets, RECEIVED_AT).kind).toBe("ack")
    expect(geminiProtocol.parseFrame(GEMINI.error, markets, RECEIVED_AT)).toMatchObject({
      kind: "error",
      error: "Authentication required"
    })
    const ping = JSON.parse(geminiProtocol.clientPing?.frame ?? "null") as { id: string; method: string }
    expect(ping.method).toBe("ping")
    const answer = JSON.stringify({ id: ping.id, status: 200, result: null })
    expect(geminiProtocol.parseFrame(answer, markets, RECEIVED_AT).kind).toBe("pong")
  })

  it("subscribes lower-case bookTicker streams with string ids", () => {
    const frames = geminiProtocol.subscribeFrames([{ ...GEMINI.btcUsd, symbol: "BTCUSD" }, { asset: "ETH", quote: "USD", symbol: "ethusd" }])
    expect(frames).toEqual(['{"id":"1","method":"subscribe","params":["btcusd@bookTicker","ethusd@bookTicker"]}'])
    const ids = geminiProtocol.subscribeFrames(manyMarkets(120, geminiProtocol.symbolFor)).map((f) => (JSON.parse(f) as { id: string }).id)
    expect(ids).toEqual(["1", "2", "3"])
    expect(geminiProtocol.connectUrl("wss://ws.gemini.com", [GEMINI.btcUsd])).toBe("wss://ws.gemini.com")
  })

  it("parses the (crossed) REST pubticker sample as is", () => {
    expect(geminiProtocol.restTickerUrl("https://api.gemini.com", GEMINI.btcUsd)).toBe("https://api.gemini.com/v1/pubticker/btcusd")
    expect(geminiProtocol.parseRestTicker(GEMINI.rest, GEMINI.btcUsd, RECEIVED_AT)).toMatchObject({
      last: 977.65,
      bid: 977.59,
      ask: 977.35,
      exchangeTs: 1483018200000
    })
  })
})

describe("kraken", () => {
  const markets = marketMap([KRAKEN.algoUsd, KRAKEN.btcUsdLegacy])

  it("parses the ticker sample (JSON numbers, RFC 3339 time)", () => {
    const frame = krakenProtocol.parseFrame(KRAKEN.ticker, markets, RECEIVED_AT)
    expect(frame.ticks).toEqual([
      {
        exchange: "kraken",
        asset: "ALGO",
        quote: "USD",
        last: 0.10035,
        bid: 0.10025,
        ask: 0.10036,
        exchangeTs: Date.UTC(2023, 8, 25, 9, 4, 31, 742),
        receivedAt: RECEIVED_AT
      }
    ])
  })

  it("maps v2 BTC/USD frames onto a legacy XBT/USD market, with or without timestamp", () => {
    const btc = KRAKEN.ticker.replace("ALGO/USD", "BTC/USD").replace(/,"timestamp":"[^"]+"/, "")
    const [tick] = krakenProtocol.parseFrame(btc, markets, RECEIVED_AT).ticks
    expect(tick).toMatchObject({ asset: "BTC", quote: "USD", last: 0.10035, exchangeTs: undefined })
  })

  it("classifies status, ack, heartbeat, pong and failures", () => {
    expect(krakenProtocol.parseFrame(KRAKEN.status, markets, RECEIVED_AT).kind).toBe("ignored")
    expect(krakenProtocol.parseFrame(KRAKEN.ack, markets, RECEIVED_AT).kind).toBe("ack")
    expect(krakenProtocol.parseFrame(KRAKEN.heartbeat, markets, RECEIVED_AT).kind).toBe("heartbeat")
    expect(krakenProtocol.parseFrame(KRAKEN.pong, markets, RECEIVED_AT).kind).toBe("pong")
    expect(krakenProtocol.parseFrame(KRAKEN.pingError, markets, RECEIVED_AT)).toMatchObject({
      kind: "error",
      error: "Unsupported field: 'params' for the given msg type: ping"
    })
  })

  it("subscribes v2 names with the bbo trigger and pings without params", () => {
    expect(parsedJson(krakenProtocol.subscribeFrames([KRAKEN.btcUsdLegacy, KRAKEN.algoUsd]))).toEqual([
      {
        method: "subscribe",
        params: { channel: "ticker", symbol: ["BTC/USD", "ALGO/USD"], event_trigger: "bbo", snapshot: true },
        req_id: 1
      }
    ])
    expect(JSON.parse(krakenProtocol.clientPing?.frame ?? "null")).toEqual({ method: "ping" })
  })

  it("requests the XBT pair on REST and reads a[0]/b[0]/c[0]", () => {
    expect(krakenProtocol.restTickerUrl("https://api.kraken.com", { asset: "BTC", quote: "USD", symbol: "BTC/USD" })).toBe(
      "https://api.kraken.com/0/public/Ticker?pair=XBTUSD"
    )
    expect(krakenProtocol.parseRestTicker(KRAKEN.rest, KRAKEN.btcUsdLegacy, RECEIVED_AT)).toEqual({
      exchange: "kraken",
      asset: "BTC",
      quote: "USD",
      last: 30303.2,
      bid: 30300,
      ask: 30300.1,
      exchangeTs: undefined,
      receivedAt: RECEIVED_AT
    })
    const failed = '{"error":["EQuery:Unknown asset pair"],"result":{}}'
    expect(krakenProtocol.parseRestTicker(failed, KRAKEN.btcUsdLegacy, RECEIVED_AT)).toBeUndefined()
  })
})

describe("gateio", () => {
  const gate = makeGateioProtocol(() => 1606291803_456)
  const markets = marketMap([GATE.btcUsdt])

  it("builds the documented subscribe request, time in seconds from the clock", () => {
    const frames = gate.subscribeFrames(marketsFor(["BTC/USDT", "ETH/USDT"], gate.symbolFor))
    expect(frames).toEqual([GATE.subscribe])
    expect(JSON.parse(gate.clientPing?.frame ?? "null")).toEqual({ time: 1606291803, channel: "spot.ping" })
  })

  it("parses the spot.tickers sample with envelope time, preferring time_ms", () => {
    expect(gate.parseFrame(GATE.tickers, markets, RECEIVED_AT).ticks).toEqual([
      {
        exchange: "gateio",
        asset: "BTC",
        quote: "USDT",
        last: 19106.55,
        bid: 19106.55,
        ask: 19108.71,
        exchangeTs: 1606291803000,
        receivedAt: RECEIVED_AT
      }
    ])
    const withMs = GATE.tickers.replace('"time":1606291803,', '"time":1606291803,"time_ms":1606291803777,')
    expect(gate.parseFrame(withMs, markets, RECEIVED_AT).ticks[0]?.exchangeTs).toBe(1606291803777)
  })

  it("classifies ack, error, pong and upgrade notices", () => {
    expect(gate.parseFrame(GATE.ack, markets, RECEIVED_AT).kind).toBe("ack")
    expect(gate.parseFrame(GATE.error, markets, RECEIVED_AT)).toMatchObject({
      kind: "error",
      error: "unknown currency pair GIBBERISH_USD"
    })
    expect(gate.parseFrame(GATE.pong, markets, RECEIVED_AT).kind).toBe("pong")
    expect(gate.parseFrame(GATE.upgrade, markets, RECEIVED_AT).kind).toBe("error")
  })

  it("reads the REST array by currency pair", () => {
    expect(gate.restTickerUrl("https://api.gateio.ws", GATE.btc3lUsdt)).toBe(
      "https://api.gateio.ws/api/v4/spot/tickers?currency_pair=BTC3L_USDT"
    )
    expect(gate.parseRestTicker(GATE.rest, GATE.btc3lUsdt, RECEIVED_AT)).toMatchObject({
      asset: "BTC3L",
      last: 2.46140352,
      bid: 2.4606821,
      ask: 2.477,
      exchangeTs: undefined
    })
    expect(gate.parseRestTicker("[]", GATE.btc3lUsdt, RECEIVED_AT)).toBeUndefined()
  })
})

describe("cryptocom", () => {
  const cdc = makeCryptocomProtocol(() => 1587523073344)
  const markets = marketMap([CRYPTOCOM.btcPerp])

  it("builds the documented subscribe request and batches 50 channels per frame", () => {
    expect(cdc.subscribeFrames(marketsFor(["BTC/USD", "ETH/USD"], cdc.symbolFor))).toEqual([CRYPTOCOM.subscribe])
    const frames = cdc.subscribeFrames(manyMarkets(120, cdc.symbolFor)).map(
      (f) => JSON.parse(f) as { id: number; params: { channels: Array<string> } }
    )
    expect(frames.map((f) => [f.id, f.params.channels.length])).toEqual([
      [1, 50],
      [2, 50],
      [3, 20]
    ])
  })

  it("parses the ticker sample (a last, b bid, k ask, t ms)", () => {
    expect(cdc.parseFrame(CRYPTOCOM.ticker, markets, RECEIVED_AT).ticks).toEqual([
      {
        exchange: "cryptocom",
        asset: "BTC",
        quote: "USD",
        last: 51174.5,
        bid: 51170,
        ask: 51180,
        exchangeTs: 1613580710768,
        receivedAt: RECEIVED_AT
      }
    ])
  })

  it("treats null bid/ask as missing", () => {
    const noBook = CRYPTOCOM.ticker.replace('"b":"51170.000000"', '"b":null').replace('"k":"51180.000000"', '"k":null')
    expect(cdc.parseFrame(noBook, markets, RECEIVED_AT).ticks[0]).toMatchObject({ last: 51174.5, bid: undefined, ask: undefined })
  })

  it("answers public/heartbeat with public/respond-heartbeat and the same id", () => {
    const frame = cdc.parseFrame(CRYPTOCOM.heartbeat, markets, RECEIVED_AT)
    expect(frame.kind).toBe("heartbeat")
    expect(frame.replies).toEqual([CRYPTOCOM.heartbeatReply])
    // An id beyond 2^53 is echoed digit for digit, not rounded.
    const big = cdc.parseFrame('{"id":13834774380200032777,"method":"public/heartbeat","code":0}', markets, RECEIVED_AT)
    expect(big.replies).toEqual(['{"id":13834774380200032777,"method":"public/respond-heartbeat"}'])
  })

  it("classifies book acks and errors", () => {
    expect(cdc.parseFrame(CRYPTOCOM.bookAck, markets, RECEIVED_AT)).toMatchObject({ kind: "ack", replies: [] })
    expect(cdc.parseFrame(CRYPTOCOM.error, markets, RECEIVED_AT)).toMatchObject({ kind: "error", error: "Unknown symbol" })
  })

  it("parses the REST get-tickers sample (string code and t)", () => {
    expect(cdc.restTickerUrl("https://api.crypto.com", CRYPTOCOM.btcPerp)).toBe(
      "https://api.crypto.com/exchange/v1/public/get-tickers?instrument_name=BTCUSD-PERP"
    )
    expect(cdc.parseRestTicker(CRYPTOCOM.rest, CRYPTOCOM.btcPerp, RECEIVED_AT)).toMatchObject({
      last: 51174.5,
      bid: 51170,
      ask: 51180,
      exchangeTs: 1613580710768
    })
    const failed = CRYPTOCOM.rest.replace('"code":"0"', '"code":"40001"')
    expect(cdc.parseRestTicker(failed, CRYPTOCOM.btcPerp, RECEIVED_AT)).toBeUndefined()
  })
})

describe("okx", () => {
  const markets = marketMap([OKX.btcUsdt])

  it("parses the tickers sample", () => {
    expect(okxProtocol.parseFrame(OKX.ticker, markets, RECEIVED_AT).ticks).toEqual([
      {
        exchange: "okx",
        asset: "BTC",
        quote: "USDT",
        last: 9999.99,
        bid: 8888.88,
        ask: 9999.99,
        exchangeTs: 1597026383085,
        receivedAt: RECEIVED_AT
      }
    ])
  })

  it('treats "" bidPx as missing, not zero', () => {
    const emptyBid = OKX.ticker.replace('"bidPx":"8888.88"', '"bidPx":""')
    expect(okxProtocol.parseFrame(emptyBid, markets, RECEIVED_AT).ticks[0]).toMatchObject({ bid: undefined, ask: 9999.99 })
  })

  it("classifies text pong, ack, error and notice", () => {
    expect(okxProtocol.clientPing).toEqual({ frame: "ping", everyMs: 15_000 })
    expect(okxProtocol.parseFrame("pong", markets, RECEIVED_AT).kind).toBe("pong")
    expect(okxProtocol.parseFrame(OKX.ack, markets, RECEIVED_AT).kind).toBe("ack")
    expect(okxProtocol.parseFrame(OKX.error, markets, RECEIVED_AT)).toMatchObject({ kind: "error", error: 'Invalid request: {"op": "subscribe"}' })
    expect(okxProtocol.parseFrame(OKX.notice, markets, RECEIVED_AT).error).toContain("service upgrade")
  })

  it("subscribes tickers args, 100 per request", () => {
    expect(okxProtocol.subscribeFrames([OKX.btcUsdt])).toEqual(['{"op":"subscribe","args":[{"channel":"tickers","instId":"BTC-USDT"}]}'])
    const frames = okxProtocol.subscribeFrames(manyMarkets(250, okxProtocol.symbolFor))
    expect(frames.map((f) => (JSON.parse(f) as { args: Array<unknown> }).args.length)).toEqual([100, 100, 50])
  })

  it("parses the REST ticker and rejects non-zero codes", () => {
    expect(okxProtocol.restTickerUrl("https://www.okx.com", OKX.btcUsdt)).toBe("https://www.okx.com/api/v5/market/ticker?instId=BTC-USDT")
    expect(okxProtocol.parseRestTicker(OKX.rest, OKX.btcUsdt, RECEIVED_AT)).toMatchObject({
      last: 51240,
      bid: 51239.9,
      ask: 51240,
      exchangeTs: 1708669925904
    })
    const failed = OKX.rest.replace('"code":"0"', '"code":"51001"')
    expect(okxProtocol.parseRestTicker(failed, OKX.btcUsdt, RECEIVED_AT)).toBeUndefined()
  })
})
