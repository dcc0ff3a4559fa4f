/**
 * Gemini's new WebSocket API wire facts (reference §2.2–2.4): one socket, Binance-style
 * requests `{"id","method","params"}` answered with `{"id","status":200,"result":null}` or
 * `{"id","status":400,"error":{code,msg}}`; `{symbol}@bookTicker` frames with decimal strings,
 * lower-case symbols and `E` in nanoseconds (an integer beyond 2^53, printed exactly);
 * `{symbol}@trade` frames. No server heartbeat is documented; `ping` is a request method.
 * REST: `GET /v1/pubticker/{symbol}` (§2.7).
 */
import type { MarketSymbol } from "../../domain/exchanges/protocol.ts"
import { jsonAnswer, type RestTickerRoute } from "../restSimulator.ts"
import type { ExchangeSimulator, SessionIO } from "../simulatorServer.ts"
import { formatDecimal, formatQuantity, parseClientJson, stringsOf } from "../wireFormat.ts"

type StreamKind = "bookTicker" | "trade"

const STREAM = /^([a-z0-9]+)@(bookTicker|trade)$/

/** Epoch ns as an exact JSON integer: JSON.stringify of a number would round it. */
const nanosJson = (ms: number, counter: number): string =>
  `${Math.floor(ms)}${String(counter % 1_000_000).padStart(6, "0")}`

const findMarket = (io: SessionIO, symbol: string): MarketSymbol | undefined =>
  io.markets.find((m) => m.symbol.toLowerCase() === symbol)

const answer = (id: unknown, body: { readonly [key: string]: unknown }): string =>
  JSON.stringify({ id: id ?? null, ...body })

export const geminiSimulator: ExchangeSimulator = {
  exchange: "gemini",
  path: "",
  heartbeatEveryMs: undefined,
  heartbeatTimeoutMs: undefined,
  openSession: (io) => {
    /** stream name → (market, kind) */
    const streams = new Map<string, { readonly market: MarketSymbol; readonly kind: StreamKind }>()
    let updateId = 1_751_505_576_085
    let tradeId = 2_840_000_000
    let nanoCounter = 0

    const streamFrame = (market: MarketSymbol, kind: StreamKind): string => {
      const q = io.quote(market)
      const symbol = market.symbol.toLowerCase()
      // Placeholder swapped for the exact integer after stringifying.
      const e = nanosJson(io.now(), nanoCounter++ * 1_117)
      if (kind === "bookTicker") {
        const body = JSON.stringify({
          u: updateId++,
          E: 0,
          s: symbol,
          b: formatDecimal(q.bid),
          B: formatQuantity(q.bidSize),
          a: formatDecimal(q.ask),
          A: formatQuantity(q.askSize)
        })
        return body.replace('"E":0', `"E":${e}`)
      }
      const body = JSON.stringify({
        E: 0,
        s: symbol,
        t: tradeId++,
        p: formatDecimal(q.last),
        q: formatQuantity(q.lastSize),
        m: q.side === "sell"
      })
      return body.replace('"E":0', `"E":${e}`)
    }

    const onSubscribe = (id: unknown, params: ReadonlyArray<string>, subscribe: boolean) => {
      const parsed = params.map((p) => {
        const match = STREAM.exec(p)
        const market = match?.[1] === undefined ? undefined : findMarket(io, match[1])
        return { name: p, market, kind: match?.[2] as StreamKind | undefined }
      })
      const invalid = parsed.find((p) => p.market === undefined || p.kind === undefined)
      if (params.length === 0 || invalid !== undefined) {
        io.send(answer(id, { status: 400, error: { code: -1013, msg: `Invalid params: ${invalid?.name ?? "[]"}` } }))
        return
      }
      for (const p of parsed) {
        if (p.market === undefined || p.kind === undefined) continue
        if (subscribe) streams.set(p.name, { market: p.market, kind: p.kind })
        else streams.delete(p.name)
      }
      io.send(answer(id, { status: 200, result: null }))
      if (!subscribe) return
      for (const p of parsed) {
        if (p.market !== undefined && p.kind === "bookTicker") io.send(streamFrame(p.market, p.kind))
      }
    }

    return {
      onFrame: (raw) => {
        const msg = parseClientJson(raw)
        if (msg === undefined) {
          io.send(answer(null, { status: 400, error: { code: -1000, msg: "Malformed request" } }))
          return
        }
        const id = msg["id"]
        const method = typeof msg["method"] === "string" ? msg["method"].toLowerCase() : undefined
        switch (method) {
          case "subscribe":
            io.record.subscribe()
            onSubscribe(id, stringsOf(msg["params"]), true)
            return
          case "unsubscribe":
            onSubscribe(id, stringsOf(msg["params"]), false)
            return
          case "list_subscriptions":
            io.send(answer(id, { status: 200, result: [...streams.keys()] }))
            return
          case "ping":
            io.record.pingAnswered()
            io.send(answer(id, { status: 200, result: null }))
            return
          case "time":
            io.send(answer(id, { status: 200, result: io.now() }))
            return
          default:
            io.send(answer(id, { status: 400, error: { code: -1020, msg: "Unsupported method" } }))
        }
      },
      onTick: () => {
        for (const s of streams.values()) io.send(streamFrame(s.market, s.kind))
      }
    }
  }
}

const REST_TICKER = /\/v1\/pubticker\/([^/]+)$/

export const geminiRestRoute: RestTickerRoute = {
  exchange: "gemini",
  answer: (request, context) => {
    const symbol = REST_TICKER.exec(request.path)?.[1]
    if (symbol === undefined) return undefined
    const wanted = decodeURIComponent(symbol).toLowerCase()
    const market = context.markets.find((m) => m.symbol.toLowerCase() === wanted)
    if (market === undefined) {
      return jsonAnswer(400, { result: "error", reason: "InvalidSymbol", message: `Supplied value '${wanted}' is not a valid symbol` })
    }
    const q = context.quote(market)
    return jsonAnswer(200, {
      bid: formatDecimal(q.bid),
      ask: formatDecimal(q.ask),
      last: formatDecimal(q.last),
      volume: {
        [market.asset]: formatQuantity(q.volume24h),
        [market.quote]: (q.volume24h * q.last).toFixed(8),
        timestamp: context.now()
      }
    })
  }
}
