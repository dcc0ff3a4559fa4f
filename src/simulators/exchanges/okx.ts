/**
 * OKX v5 public WebSocket wire facts (reference §6): `{"id"?,"op":"subscribe","args":[{channel,
 * instId}]}` acked once per arg with the arg echoed and a `connId`; `tickers` pushes with every
 * number a string and `ts` in ms as a string; errors as `{"event":"error","code","msg"}`; the text
 * `ping` answered with the text `pong` (not JSON). A connection with no subscription within 30 s
 * is closed. REST: `GET /api/v5/market/ticker?instId=…` → `{"code":"0","msg":"","data":[…]}` (§6.6).
 */
import type { MarketSymbol } from "../../domain/exchanges/protocol.ts"
import type { MarketQuote } from "../randomWalk.ts"
import { jsonAnswer, type RestTickerRoute } from "../restSimulator.ts"
import type { ExchangeSimulator } from "../simulatorServer.ts"
import { formatDecimal, formatQuantity, isClientMessage, parseClientJson } from "../wireFormat.ts"

const SUBSCRIBE_DEADLINE_MS = 30_000

/** The ticker record, the same on the WebSocket and REST (§6.3, §6.6). */
const tickerRecord = (instId: string, q: MarketQuote, now: number) => ({
  instType: "SPOT",
  instId,
  last: formatDecimal(q.last),
  lastSz: formatQuantity(q.lastSize),
  askPx: formatDecimal(q.ask),
  askSz: formatQuantity(q.askSize),
  bidPx: formatDecimal(q.bid),
  bidSz: formatQuantity(q.bidSize),
  open24h: formatDecimal(q.open24h),
  high24h: formatDecimal(q.high24h),
  low24h: formatDecimal(q.low24h),
  volCcy24h: (q.volume24h * q.last).toFixed(2),
  vol24h: formatQuantity(q.volume24h),
  sodUtc0: formatDecimal(q.open24h),
  sodUtc8: formatDecimal(q.open24h),
  ts: String(now)
})

export const okxSimulator: ExchangeSimulator = {
  exchange: "okx",
  path: "/ws/v5/public",
  heartbeatEveryMs: undefined,
  heartbeatTimeoutMs: undefined,
  openSession: (io) => {
    const connId = (0xa4d3ae00 + io.connectionId).toString(16).padStart(8, "0")
    /** instId → market */
    const subscribed = new Map<string, MarketSymbol>()

    io.after(SUBSCRIBE_DEADLINE_MS, () => {
      if (subscribed.size === 0) io.close(1000, "no subscription within 30s")
    })

    const error = (id: unknown, code: string, msg: string) =>
      io.send(JSON.stringify({ ...(typeof id === "string" ? { id } : {}), event: "error", code, msg, connId }))

    const tickerFrame = (instId: string, market: MarketSymbol): string =>
      JSON.stringify({ arg: { channel: "tickers", instId }, data: [tickerRecord(instId, io.quote(market), io.now())] })

    const onSubscribe = (msg: { readonly [key: string]: unknown }, subscribe: boolean) => {
      const id = msg["id"]
      const op = subscribe ? "subscribe" : "unsubscribe"
      const args = Array.isArray(msg["args"]) ? msg["args"].filter(isClientMessage) : []
      if (args.length === 0) {
        error(id, "60012", `Invalid request: ${JSON.stringify(msg)}`)
        return
      }
      for (const arg of args) {
        const channel = arg["channel"]
        const instId = arg["instId"]
        const market = typeof instId === "string" ? io.market(instId) : undefined
        if (channel !== "tickers" || market === undefined || typeof instId !== "string") {
          error(
            id,
            "60018",
            `Wrong URL or channel:${String(channel)},instId:${String(instId)} doesn't exist. Please use the correct URL, channel and parameters referring to API document.`
          )
          continue
        }
        if (subscribe) subscribed.set(instId, market)
        else subscribed.delete(instId)
        io.send(JSON.stringify({ ...(typeof id === "string" ? { id } : {}), event: op, arg: { channel, instId }, connId }))
        if (subscribe) io.send(tickerFrame(instId, market))
      }
    }

    return {
      onFrame: (raw) => {
        if (raw === "ping") {
          io.record.pingAnswered()
          io.send("pong")
          return
        }
        const msg = parseClientJson(raw)
        if (msg === undefined) {
          error(undefined, "60012", `Invalid request: ${raw.slice(0, 100)}`)
          return
        }
        if (msg["op"] === "subscribe") {
          io.record.subscribe()
          onSubscribe(msg, true)
        } else if (msg["op"] === "unsubscribe") {
          onSubscribe(msg, false)
        } else {
          error(msg["id"], "60012", `Invalid request: ${raw.slice(0, 100)}`)
        }
      },
      onTick: () => {
        for (const [instId, market] of subscribed) io.send(tickerFrame(instId, market))
      }
    }
  }
}

export const okxRestRoute: RestTickerRoute = {
  exchange: "okx",
  answer: (request, context) => {
    if (!request.path.endsWith("/market/ticker")) return undefined
    const instId = request.query.get("instId") ?? ""
    const market = context.markets.find((m) => m.symbol === instId)
    if (market === undefined) return jsonAnswer(200, { code: "51001", msg: "Instrument ID does not exist", data: [] })
    return jsonAnswer(200, { code: "0", msg: "", data: [tickerRecord(instId, context.quote(market), context.now())] })
  }
}
