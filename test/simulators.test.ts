import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { WebSocket } from "ws"
import type { Exchange } from "../src/domain/price.ts"
import { type SimulatedMarket, type Simulators, startSimulators } from "../src/simulators/index.ts"
import { krakenSimulator } from "../src/simulators/exchanges/kraken.ts"
import { makePriceBook, makeRandomWalk, mulberry32 } from "../src/simulators/randomWalk.ts"
import { startSimulatorServer } from "../src/simulators/simulatorServer.ts"

const MARKETS: ReadonlyArray<SimulatedMarket> = [
  { exchange: "coinbase", asset: "BTC", quote: "USD", symbol: "BTC-USD" },
  { exchange: "coinbase", asset: "ETH", quote: "USD", symbol: "ETH-USD" },
  { exchange: "gemini", asset: "BTC", quote: "USD", symbol: "btcusd" },
  { exchange: "kraken", asset: "BTC", quote: "USD", symbol: "BTC/USD" },
  { exchange: "kraken", asset: "DOGE", quote: "USD", symbol: "XDG/USD" },
  { exchange: "gateio", asset: "BTC", quote: "USDT", symbol: "BTC_USDT" },
  { exchange: "cryptocom", asset: "BTC", quote: "USD", symbol: "BTC_USD" },
  { exchange: "okx", asset: "BTC", quote: "USDT", symbol: "BTC-USDT" }
]

const HEARTBEAT_TIMEOUT_MS = 150

/** A raw WebSocket client that records every frame and the close code. */
interface Client {
  readonly socket: WebSocket
  readonly frames: Array<string>
  readonly json: () => Array<Record<string, unknown>>
  readonly send: (frame: string | object) => void
  readonly closed: Promise<number>
}

const connect = async (url: string): Promise<Client> => {
  const socket = new WebSocket(url)
  const frames: Array<string> = []
  socket.on("message", (data) => frames.push(data.toString()))
  const closed = new Promise<number>((resolve) => socket.on("close", (code) => resolve(code)))
  await new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve())
    socket.once("error", reject)
  })
  return {
    socket,
    frames,
    json: () =>
      frames.flatMap((f) => {
        try {
          const v: unknown = JSON.parse(f)
          return typeof v === "object" && v !== null && !Array.isArray(v) ? [v as Record<string, unknown>] : []
        } catch {
          return []
        }
      }),
    send: (frame) => socket.send(typeof frame === "string" ? frame : JSON.stringify(frame)),
    closed
  }
}

const waitFor = async <A>(probe: () => A | undefined | false, timeoutMs = 2_000): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = probe()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error("timed out waiting")
    await new Promise((r) => setTimeout(r, 10))
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Walks into parsed JSON; undefined as soon as a step is missing. */
const dig = (value: unknown, ...path: ReadonlyArray<string | number>): unknown =>
  path.reduce<unknown>(
    (v, key) => (typeof v === "object" && v !== null ? (v as Record<string | number, unknown>)[key] : undefined),
    value
  )

let sims: Simulators
const clients: Array<Client> = []
const open = async (exchange: Exchange): Promise<Client> => {
  const client = await connect(sims.urls[exchange].ws)
  clients.push(client)
  return client
}

beforeAll(async () => {
  sims = await startSimulators({
    seed: 7,
    tickIntervalMs: 25,
    markets: MARKETS,
    heartbeatIntervalMs: { cryptocom: 100, coinbase: 50, kraken: 50 },
    heartbeatTimeoutMs: { cryptocom: HEARTBEAT_TIMEOUT_MS }
  })
})

afterAll(async () => {
  for (const c of clients) c.socket.terminate()
  await sims.close()
})

describe("random walk", () => {
  it("is deterministic for a seed and stays positive", () => {
    fc.assert(
      fc.property(fc.integer(), fc.integer({ min: 1, max: 200 }), (seed, steps) => {
        const run = () => {
          const walk = makeRandomWalk(mulberry32(seed), 100, 0.01)
          return Array.from({ length: steps }, () => walk.step())
        }
        const a = run()
        expect(run()).toEqual(a)
        expect(a.every((p) => p > 0 && Number.isFinite(p))).toBe(true)
      })
    )
  })

  it("different seeds give different paths; venues stay near the true price; pins hold", () => {
    let t = 0
    const book = (seed: number) => makePriceBook({ seed, stepMs: 1, now: () => t })
    const a = book(1)
    const b = book(2)
    t = 50
    expect(a.truePrice("BTC", "USD")).not.toBe(b.truePrice("BTC", "USD"))
    const truth = a.truePrice("BTC", "USD")
    const q = a.quote("kraken", "BTC", "USD")
    expect(q.bid).toBeLessThan(q.ask)
    expect(Math.abs((q.bid + q.ask) / 2 / truth - 1)).toBeLessThan(0.005)
    a.pin("kraken", "BTC", "USD", 12_345)
    expect((a.quote("kraken", "BTC", "USD").bid + a.quote("kraken", "BTC", "USD").ask) / 2).toBeCloseTo(12_345, 6)
    a.unpin("kraken", "BTC", "USD")
    expect(a.quote("kraken", "BTC", "USD").bid).toBeGreaterThan(truth * 0.99)
  })
})

describe("coinbase simulator", () => {
  it("acks with subscriptions, sends tickers with string prices and µs time, and heartbeats", async () => {
    const c = await open("coinbase")
    c.send({ type: "subscribe", product_ids: ["BTC-USD"], channels: ["ticker", "heartbeat"] })
    const ack = await waitFor(() => c.json().find((m) => m["type"] === "subscriptions"))
    expect(ack["channels"]).toEqual([
      { name: "ticker", product_ids: ["BTC-USD"], account_ids: null },
      { name: "heartbeat", product_ids: ["BTC-USD"], account_ids: null }
    ])
    const tickers = await waitFor(() => {
      const found = c.json().filter((m) => m["type"] === "ticker")
      return found.length >= 2 ? found : undefined
    })
    // The first ticker after subscribing carries no trade fields, as on the live feed.
    expect(tickers[0]?.["time"]).toBeUndefined()
    expect(tickers[0]?.["best_bid"]).toBeDefined()
    const ticker = tickers[1] ?? {}
    expect(ticker["product_id"]).toBe("BTC-USD")
    for (const field of ["price", "best_bid", "best_ask", "volume_24h"]) expect(typeof ticker[field]).toBe("string")
    expect(Number(ticker["best_bid"])).toBeLessThan(Number(ticker["best_ask"]))
    expect(ticker["time"]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/)
    const heartbeat = await waitFor(() => c.json().find((m) => m["type"] === "heartbeat"))
    expect(heartbeat["product_id"]).toBe("BTC-USD")
  })

  it("rejects an unknown product with an error message", async () => {
    const c = await open("coinbase")
    c.send({ type: "subscribe", product_ids: ["NOPE-USD"], channels: ["ticker"] })
    const error = await waitFor(() => c.json().find((m) => m["type"] === "error"))
    expect(String(error["reason"])).toContain("NOPE-USD")
    await sleep(80)
    expect(c.json().some((m) => m["type"] === "ticker")).toBe(false)
  })
})

describe("gemini simulator", () => {
  it("answers subscribe and ping by id and streams bookTicker with exact ns E", async () => {
    const c = await open("gemini")
    c.send({ id: "1", method: "subscribe", params: ["btcusd@bookTicker"] })
    const ack = await waitFor(() => c.json().find((m) => m["id"] === "1"))
    expect(ack).toEqual({ id: "1", status: 200, result: null })
    const raw = await waitFor(() => c.frames.find((f) => f.includes('"s":"btcusd"')))
    expect(raw).toMatch(/"E":\d{19},/)
    const book = JSON.parse(raw) as Record<string, unknown>
    expect(typeof book["b"]).toBe("string")
    expect(typeof book["a"]).toBe("string")
    c.send({ id: "p", method: "ping" })
    expect(await waitFor(() => c.json().find((m) => m["id"] === "p"))).toMatchObject({ status: 200 })
    c.send({ id: "2", method: "subscribe", params: ["nopeusd@bookTicker"] })
    expect(await waitFor(() => c.json().find((m) => m["id"] === "2"))).toMatchObject({ status: 400 })
  })
})

describe("kraken simulator", () => {
  it("greets with status, acks per symbol, sends snapshot then numeric updates, answers ping", async () => {
    const c = await open("kraken")
    const status = await waitFor(() => c.json().find((m) => m["channel"] === "status"))
    expect(status["type"]).toBe("update")
    c.send({
      method: "subscribe",
      params: { channel: "ticker", symbol: ["BTC/USD", "DOGE/USD"], event_trigger: "bbo", snapshot: true },
      req_id: 42
    })
    const acks = await waitFor(() => {
      const found = c.json().filter((m) => m["method"] === "subscribe")
      return found.length === 2 ? found : undefined
    })
    expect(acks.map((a) => dig(a, "result", "symbol")).sort()).toEqual(["BTC/USD", "DOGE/USD"])
    expect(acks.every((a) => a["success"] === true && a["req_id"] === 42)).toBe(true)
    const tickers = await waitFor(() => {
      const found = c.json().filter((m) => m["channel"] === "ticker")
      return found.length >= 4 ? found : undefined
    })
    expect(tickers[0]?.["type"]).toBe("snapshot")
    expect(tickers.some((t) => t["type"] === "update")).toBe(true)
    expect(typeof dig(tickers[0], "data", 0, "bid")).toBe("number")
    expect(typeof dig(tickers[0], "data", 0, "ask")).toBe("number")
    c.send({ method: "ping", req_id: 101 })
    expect(await waitFor(() => c.json().find((m) => m["method"] === "pong"))).toMatchObject({ req_id: 101 })
  })

  it("rejects legacy XBT names on v2 and ping params", async () => {
    const c = await open("kraken")
    c.send({ method: "subscribe", params: { channel: "ticker", symbol: ["XBT/USD"] }, req_id: 1 })
    const nack = await waitFor(() => c.json().find((m) => m["success"] === false))
    expect(nack["symbol"]).toBe("XBT/USD")
    c.send({ method: "ping", params: {}, req_id: 2 })
    const bad = await waitFor(() => c.json().find((m) => m["method"] === "ping"))
    expect(bad["error"]).toBe("Unsupported field: 'params' for the given msg type: ping")
  })

  it("sends heartbeats only when nothing else is flowing", async () => {
    const busy = await open("kraken")
    busy.send({ method: "subscribe", params: { channel: "ticker", symbol: ["BTC/USD"] } })
    await waitFor(() => busy.json().some((m) => m["channel"] === "ticker"))
    await sleep(200)
    // Ticks every 25 ms fill every 50 ms heartbeat window.
    expect(busy.json().some((m) => m["channel"] === "heartbeat")).toBe(false)

    const quietServer = await startSimulatorServer({
      simulator: krakenSimulator,
      markets: MARKETS.filter((m) => m.exchange === "kraken"),
      priceBook: makePriceBook({ seed: 1 }),
      tickIntervalMs: 60_000,
      heartbeatIntervalMs: 30
    })
    try {
      const quiet = await connect(quietServer.url)
      await sleep(100)
      expect(quiet.json().some((m) => m["channel"] === "heartbeat")).toBe(false) // none before a subscription
      quiet.send({ method: "subscribe", params: { channel: "ticker", symbol: ["BTC/USD"] } })
      await waitFor(() => quiet.json().filter((m) => m["channel"] === "heartbeat").length >= 2)
      quiet.socket.terminate()
    } finally {
      await quietServer.close()
    }
  })
})

describe("gate simulator", () => {
  it("acks subscribe, streams spot.tickers, answers spot.ping, rejects a time in ms", async () => {
    const c = await open("gateio")
    const now = Math.floor(Date.now() / 1000)
    c.send({ time: now, id: 5, channel: "spot.tickers", event: "subscribe", payload: ["BTC_USDT"] })
    const ack = await waitFor(() => c.json().find((m) => m["event"] === "subscribe"))
    expect(ack).toMatchObject({ id: 5, channel: "spot.tickers", error: null, result: { status: "success" } })
    expect(typeof ack["time_ms"]).toBe("number")
    const update = await waitFor(() => c.json().find((m) => m["event"] === "update"))
    expect(dig(update, "result", "currency_pair")).toBe("BTC_USDT")
    expect(typeof dig(update, "result", "highest_bid")).toBe("string")
    expect(typeof dig(update, "result", "lowest_ask")).toBe("string")
    expect(Math.abs(Number(update["time"]) - now)).toBeLessThanOrEqual(2)
    c.send({ time: now, channel: "spot.ping" })
    expect(await waitFor(() => c.json().find((m) => m["channel"] === "spot.pong"))).toMatchObject({ error: null, result: null })
    c.send({ time: Date.now(), channel: "spot.tickers", event: "subscribe", payload: ["BTC_USDT"], id: 6 })
    const rejected = await waitFor(() => c.json().find((m) => m["id"] === 6))
    expect(rejected["error"]).not.toBeNull()
  })
})

describe("crypto.com simulator", () => {
  it("echoes the request id on the first ticker frame, then -1", async () => {
    const c = await open("cryptocom")
    c.send({ id: 11, method: "subscribe", params: { channels: ["ticker.BTC_USD"] }, nonce: Date.now() })
    const frames = await waitFor(() => {
      const found = c.json().filter((m) => m["method"] === "subscribe")
      return found.length >= 3 ? found : undefined
    })
    expect(frames[0]?.["id"]).toBe(11)
    expect(frames.slice(1).every((f) => f["id"] === -1)).toBe(true)
    const data = dig(frames[0], "result", "data", 0)
    expect(dig(data, "i")).toBe("BTC_USD")
    expect(typeof dig(data, "b")).toBe("string")
    expect(typeof dig(data, "k")).toBe("string")
    expect(typeof dig(data, "t")).toBe("number")
  })

  it("disconnects a client that ignores public/heartbeat", async () => {
    const c = await open("cryptocom")
    const heartbeat = await waitFor(() => c.json().find((m) => m["method"] === "public/heartbeat"))
    expect(typeof heartbeat["id"]).toBe("number")
    const code = await Promise.race([c.closed, sleep(1_000).then(() => -1)])
    expect(code).toBe(1000)
  })

  it("keeps a client that answers heartbeats with their id", async () => {
    const c = await open("cryptocom")
    const before = sims.control.cryptocom.stats.heartbeatAnswers
    c.socket.on("message", (data) => {
      const m = JSON.parse(data.toString()) as Record<string, unknown>
      if (m["method"] === "public/heartbeat") c.send({ id: m["id"], method: "public/respond-heartbeat" })
    })
    await sleep(HEARTBEAT_TIMEOUT_MS * 4)
    expect(c.socket.readyState).toBe(WebSocket.OPEN)
    expect(sims.control.cryptocom.stats.heartbeatAnswers).toBeGreaterThan(before)
  })

  it("answers a burst beyond the per-second request limit with TOO_MANY_REQUESTS", async () => {
    const c = await open("cryptocom")
    for (let i = 0; i < 250; i++) c.send({ id: i + 1, method: "subscribe", params: { channels: ["ticker.BTC_USD"] } })
    const limited = await waitFor(() => c.json().find((m) => m["code"] === 42901))
    expect(limited["message"]).toBe("TOO_MANY_REQUESTS")
  })
})

describe("okx simulator", () => {
  it("acks each arg with connId, streams tickers with string ts, answers text ping", async () => {
    const c = await open("okx")
    c.send({ id: "1512", op: "subscribe", args: [{ channel: "tickers", instId: "BTC-USDT" }] })
    const ack = await waitFor(() => c.json().find((m) => m["event"] === "subscribe"))
    expect(ack).toMatchObject({ id: "1512", arg: { channel: "tickers", instId: "BTC-USDT" } })
    expect(typeof ack["connId"]).toBe("string")
    const push = await waitFor(() => c.json().find((m) => Array.isArray(m["data"])))
    expect(dig(push, "data", 0, "instId")).toBe("BTC-USDT")
    expect(dig(push, "data", 0, "ts")).toMatch(/^\d{13}$/)
    expect(typeof dig(push, "data", 0, "bidPx")).toBe("string")
    c.send("ping")
    await waitFor(() => c.frames.includes("pong"))
    c.send({ op: "subscribe", args: [{ channel: "tickers", instId: "NOPE-USDT" }] })
    expect(await waitFor(() => c.json().find((m) => m["event"] === "error"))).toMatchObject({ code: "60018" })
  })
})

describe("simulator controls", () => {
  it("dropAll terminates sockets abruptly; stats count connections and subscribes", async () => {
    const before = sims.control.okx.stats
    const c = await open("okx")
    c.send({ op: "subscribe", args: [{ channel: "tickers", instId: "BTC-USDT" }] })
    await waitFor(() => c.json().some((m) => m["event"] === "subscribe"))
    const during = sims.control.okx.stats
    expect(during.connectionsAccepted).toBe(before.connectionsAccepted + 1)
    expect(during.subscribeFrames).toBe(before.subscribeFrames + 1)
    sims.control.okx.dropAll()
    expect(await c.closed).toBe(1006)
    await waitFor(() => sims.control.okx.stats.openConnections === 0)
  })

  it("setSilent stops every frame; setPrice pins what the exchange shows", async () => {
    const c = await open("gateio")
    c.send({ time: Math.floor(Date.now() / 1000), channel: "spot.tickers", event: "subscribe", payload: ["BTC_USDT"] })
    await waitFor(() => c.json().some((m) => m["event"] === "update"))
    sims.control.gateio.setSilent(true)
    await sleep(40)
    const count = c.frames.length
    await sleep(120)
    expect(c.frames.length).toBe(count)
    sims.control.gateio.setPrice("BTC", "USDT", 42_000)
    sims.control.gateio.setSilent(false)
    const raw = await waitFor(() => c.frames.slice(count).find((f) => f.includes('"event":"update"')))
    const result = (JSON.parse(raw) as Record<string, unknown>)["result"] as Record<string, string>
    expect((Number(result["highest_bid"]) + Number(result["lowest_ask"])) / 2).toBeCloseTo(42_000, 0)
    sims.control.gateio.clearPrice("BTC", "USDT")
  })
})

describe("REST simulator", () => {
  const get = async (exchange: Exchange, path: string) => {
    const response = await fetch(sims.urls[exchange].rest + path)
    return { status: response.status, body: (await response.json()) as unknown }
  }

  it("serves each exchange's ticker shape", async () => {
    const coinbase = (await get("coinbase", "/products/BTC-USD/ticker")).body as Record<string, unknown>
    expect(Object.keys(coinbase).sort()).toEqual(["ask", "bid", "price", "size", "time", "trade_id", "volume"])
    const gemini = (await get("gemini", "/v1/pubticker/btcusd")).body
    expect(typeof dig(gemini, "volume", "timestamp")).toBe("number")
    expect(typeof dig(gemini, "volume", "BTC")).toBe("string")
    const kraken = (await get("kraken", "/0/public/Ticker?pair=XBTUSD")).body as Record<string, unknown>
    expect(kraken["error"]).toEqual([])
    expect(Object.keys(kraken["result"] as object)).toEqual(["XXBTZUSD"])
    const doge = (await get("kraken", "/0/public/Ticker?pair=XDGUSD")).body as Record<string, unknown>
    expect(Object.keys(doge["result"] as object)).toEqual(["XXDGZUSD"])
    const gate = (await get("gateio", "/api/v4/spot/tickers?currency_pair=BTC_USDT")).body
    expect(Array.isArray(gate)).toBe(true)
    expect(dig(gate, 0, "currency_pair")).toBe("BTC_USDT")
    const cdc = (await get("cryptocom", "/exchange/v1/public/get-tickers?instrument_name=BTC_USD")).body as Record<string, unknown>
    expect(cdc["code"]).toBe("0")
    const okx = (await get("okx", "/api/v5/market/ticker?instId=BTC-USDT")).body as Record<string, unknown>
    expect(okx["code"]).toBe("0")
    expect(dig(okx, "data", 0, "instId")).toBe("BTC-USDT")
  })

  it("answers unknown markets the exchange's way, counts requests and can be made to fail", async () => {
    expect((await get("coinbase", "/products/NOPE-USD/ticker")).status).toBe(404)
    expect(((await get("kraken", "/0/public/Ticker?pair=NOPE")).body as Record<string, unknown>)["error"]).toEqual([
      "EQuery:Unknown asset pair"
    ])
    const before = sims.rest.stats("okx").requests
    sims.rest.setFailure("okx", 429)
    expect((await get("okx", "/api/v5/market/ticker?instId=BTC-USDT")).status).toBe(429)
    sims.rest.setFailure("okx", undefined)
    expect((await get("okx", "/api/v5/market/ticker?instId=BTC-USDT")).status).toBe(200)
    expect(sims.rest.stats("okx")).toMatchObject({ requests: before + 2, failed: 1 })
  })
})

describe("simulator health", () => {
  it("no exchange module threw while serving this file's clients", () => {
    for (const exchange of ["coinbase", "gemini", "kraken", "gateio", "cryptocom", "okx"] as const) {
      expect(sims.control[exchange].stats.moduleErrors, exchange).toBe(0)
    }
  })
})
