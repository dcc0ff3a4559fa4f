/**
 * Coinbase Exchange feed wire facts (reference §1): `subscribe` with `product_ids` and
 * `channels` (names or `{name, product_ids}` objects), a `subscriptions` ack listing everything
 * subscribed, flat `ticker` messages with decimal strings and µs ISO time, and the `heartbeat`
 * channel (one message per product per second). No application ping exists. A client that has
 * not subscribed within 5 s is disconnected. REST: `GET /products/{id}/ticker` (§1.7).
 */
import { jsonAnswer, type RestTickerRoute } from "../restSimulator.ts"
import type { ExchangeSimulator } from "../simulatorServer.ts"
import { formatDecimal, formatQuantity, isClientMessage, isoMicros, parseClientJson, stringsOf } from "../wireFormat.ts"

const SUBSCRIBE_DEADLINE_MS = 5_000
/** `ticker_1000` is the old name of `ticker_batch`; both are accepted (§1.2). */
const TICKER_CHANNELS = new Set(["ticker", "ticker_batch", "ticker_1000"])
const KNOWN_CHANNELS = new Set([...TICKER_CHANNELS, "heartbeat"])

export const coinbaseSimulator: ExchangeSimulator = {
  exchange: "coinbase",
  path: "",
  heartbeatEveryMs: 1_000,
  heartbeatTimeoutMs: undefined,
  openSession: (io) => {
    /** channel name → subscribed product ids */
    const subscriptions = new Map<string, Set<string>>()
    const sequences = new Map<string, number>()
    let tradeId = 1_000_000
    let subscribed = false

    io.after(SUBSCRIBE_DEADLINE_MS, () => {
      if (!subscribed) {
        io.send(JSON.stringify({ type: "error", message: "Failed to subscribe", reason: "subscribe timeout" }))
        io.close(1000, "subscribe timeout")
      }
    })

    const nextSequence = (productId: string): number => {
      const n = (sequences.get(productId) ?? 37_475_248_000) + 1
      sequences.set(productId, n)
      return n
    }

    const ackFrame = (): string =>
      JSON.stringify({
        type: "subscriptions",
        channels: [...subscriptions].map(([name, ids]) => ({ name, product_ids: [...ids], account_ids: null }))
      })

    /** The ticker sent right after subscribing lacks the trade fields, as live (§1.3). */
    const tickerFrame = (productId: string, initial = false): string | undefined => {
      const market = io.market(productId)
      if (market === undefined) return undefined
      const q = io.quote(market)
      const trade = initial
        ? {}
        : { side: q.side, time: isoMicros(io.now()), trade_id: tradeId++, last_size: formatQuantity(q.lastSize) }
      return JSON.stringify({
        type: "ticker",
        sequence: nextSequence(productId),
        product_id: productId,
        price: formatDecimal(q.last),
        open_24h: formatDecimal(q.open24h),
        volume_24h: formatQuantity(q.volume24h),
        low_24h: formatDecimal(q.low24h),
        high_24h: formatDecimal(q.high24h),
        volume_30d: formatQuantity(q.volume24h * 30),
        best_bid: formatDecimal(q.bid),
        best_bid_size: formatQuantity(q.bidSize),
        best_ask: formatDecimal(q.ask),
        best_ask_size: formatQuantity(q.askSize),
        ...trade
      })
    }

    /** Channels may be plain names (using the top-level product_ids) or `{name, product_ids}`. */
    const requested = (msg: { readonly [key: string]: unknown }): ReadonlyArray<[string, ReadonlyArray<string>]> => {
      const topLevel = stringsOf(msg["product_ids"])
      const channels = Array.isArray(msg["channels"]) ? msg["channels"] : []
      return channels.flatMap((c): Array<[string, ReadonlyArray<string>]> => {
        if (typeof c === "string") return [[c, topLevel]]
        if (isClientMessage(c) && typeof c["name"] === "string") {
          const own = stringsOf(c["product_ids"])
          return [[c["name"], own.length > 0 ? own : topLevel]]
        }
        return []
      })
    }

    const onSubscribe = (msg: { readonly [key: string]: unknown }, subscribe: boolean) => {
      const entries = requested(msg)
      const unknownChannel = entries.find(([name]) => !KNOWN_CHANNELS.has(name))
      if (unknownChannel !== undefined) {
        io.send(JSON.stringify({ type: "error", message: "Failed to subscribe", reason: `${unknownChannel[0]} is not a valid channel` }))
        return
      }
      const unknownProduct = entries.flatMap(([, ids]) => ids).find((id) => io.market(id) === undefined)
      if (unknownProduct !== undefined) {
        io.send(JSON.stringify({ type: "error", message: "Failed to subscribe", reason: `${unknownProduct} is not a valid product` }))
        return
      }
      if (entries.length === 0) {
        io.send(JSON.stringify({ type: "error", message: "Failed to subscribe", reason: "channels must not be empty" }))
        return
      }
      const fresh: Array<string> = []
      for (const [name, ids] of entries) {
        const set = subscriptions.get(name) ?? new Set<string>()
        for (const id of ids) {
          if (subscribe) {
            if (TICKER_CHANNELS.has(name) && !set.has(id)) fresh.push(id)
            set.add(id)
          } else set.delete(id)
        }
        if (set.size > 0) subscriptions.set(name, set)
        else subscriptions.delete(name)
      }
      subscribed = subscribed || subscribe
      io.send(ackFrame())
      // A ticker follows right after subscribing, as on the live feed.
      for (const id of fresh) {
        const frame = tickerFrame(id, true)
        if (frame !== undefined) io.send(frame)
      }
    }

    return {
      onFrame: (raw) => {
        const msg = parseClientJson(raw)
        if (msg === undefined) {
          io.send(JSON.stringify({ type: "error", message: "Malformed JSON", reason: "" }))
          return
        }
        if (msg["type"] === "subscribe") {
          io.record.subscribe()
          onSubscribe(msg, true)
        } else if (msg["type"] === "unsubscribe") {
          onSubscribe(msg, false)
        } else {
          io.send(JSON.stringify({ type: "error", message: "Failed to subscribe", reason: `${String(msg["type"])} is not a valid type` }))
        }
      },
      onTick: () => {
        const sent = new Set<string>()
        for (const [name, ids] of subscriptions) {
          if (!TICKER_CHANNELS.has(name)) continue
          for (const id of ids) {
            if (sent.has(id)) continue
            sent.add(id)
            const frame = tickerFrame(id)
            if (frame !== undefined) io.send(frame)
          }
        }
      },
      onHeartbeat: () => {
        for (const id of subscriptions.get("heartbeat") ?? []) {
          io.record.heartbeat()
          io.send(
            JSON.stringify({
              type: "heartbeat",
              sequence: sequences.get(id) ?? 0,
              last_trade_id: tradeId - 1,
              product_id: id,
              time: isoMicros(io.now())
            })
          )
        }
      }
    }
  }
}

const REST_TICKER = /\/products\/([^/]+)\/ticker$/

export const coinbaseRestRoute: RestTickerRoute = {
  exchange: "coinbase",
  answer: (request, context) => {
    const productId = REST_TICKER.exec(request.path)?.[1]
    if (productId === undefined) return undefined
    const market = context.markets.find((m) => m.symbol === decodeURIComponent(productId))
    if (market === undefined) return jsonAnswer(404, { message: "NotFound" })
    const q = context.quote(market)
    return jsonAnswer(200, {
      trade_id: Math.floor(context.now() / 1000),
      price: formatDecimal(q.last),
      size: formatQuantity(q.lastSize),
      time: isoMicros(context.now()),
      bid: formatDecimal(q.bid),
      ask: formatDecimal(q.ask),
      volume: formatQuantity(q.volume24h)
    })
  }
}
