/**
 * The partner stream over real sockets: the fast server hands /ws upgrades and /stream to node:http
 * (as the LPO wires it), a WebSocket client (`ws`) and an SSE client read every message type.
 * Prices come from ticks ingested straight into the PriceCache, so nothing depends on live feeds;
 * keys come from an in-memory ApiKeys over the seed tiers.
 */
import { Effect } from "effect"
import { createServer, get as httpGet, type IncomingMessage, type Server } from "node:http"
import { connect, Socket } from "node:net"
import type { Duplex } from "node:stream"
import { afterEach, describe, expect, it } from "vitest"
import { WebSocket } from "ws"
import type { ParamName } from "../src/domain/params.ts"
import type { Exchange, Tick } from "../src/domain/price.ts"
import { COUNTER_NAMES } from "../src/domain/runtimeCounters.ts"
import { TIER_SEED } from "../src/domain/seedData.ts"
import type { UsageFacts } from "../src/domain/usageChunk.ts"
import { makeFastHttpServer, takeUpgradedSocket } from "../src/layers/http/fastHttp.ts"
import { makeSendEnvelope, parseRequest } from "../src/layers/http/httpKit.ts"
import { makeMemoryCache } from "../src/layers/CacheMemory.ts"
import { makePriceCacheMemory } from "../src/layers/PriceCacheMemory.ts"
import { makeKeySlots } from "../src/programs/stream/keySlots.ts"
import type { PriceHttpDeps } from "../src/programs/lpo/priceHttp.ts"
import { DEFAULT_STREAM_OPTIONS, makeStreamHub, NOT_PARTNER_CODE, type StreamHub, type StreamOptions } from "../src/programs/stream/streamHub.ts"
import { type ApiKeyRecord, ApiKeys, type AuthResult, type TierLimits } from "../src/services/ApiKeys.ts"
import type { PriceCache } from "../src/services/PriceCache.ts"
import type { RateLimiter } from "../src/services/RateLimiter.ts"
import { changeableParams } from "./support/params.ts"

// --- the server under test ---------------------------------------------------------------------

const tierOf = (name: string): TierLimits => {
  const t = TIER_SEED.find((row) => row.tier === name)!
  return {
    tier: t.tier, ratePerSec: t.requests_per_second, burst: t.burst, monthlyQueries: t.monthly_queries,
    lrsReportsPerMonth: t.lrs_reports_per_month, lrsRequiresAddon: t.lrs_requires_addon, webhookAssets: t.webhook_assets, partnerWs: t.partner_ws
  }
}

interface Harness {
  readonly port: number
  readonly hub: StreamHub
  readonly prices: PriceCache["Service"]
  readonly rows: Array<UsageFacts>
  readonly keyOf: (tier: string) => { readonly key: string; readonly id: string }
  readonly addKey: (key: string, tier: string) => void
  readonly revoke: (id: string) => void
  readonly setParams: (changes: Partial<Record<ParamName, string>>) => void
  readonly close: () => Promise<void>
}

const ASSETS = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE"]
const EXCHANGES: ReadonlyArray<Exchange> = ["coinbase", "kraken", "okx"]

const tick = (exchange: Exchange, asset: string, mid: number, quote = "USD", at = Date.now()): Tick => ({
  exchange, asset, quote, last: mid, bid: mid, ask: mid, exchangeTs: at, receivedAt: at
})

const harnesses: Array<Harness> = []
afterEach(async () => {
  for (const h of harnesses.splice(0)) await h.close()
})

const startHarness = async (options: Partial<StreamOptions> = {}, params: Partial<Record<ParamName, string>> = {}): Promise<Harness> => {
  // "throw" stands for a bug in the code reading it.
  const { service: paramsService, set: setParams } = changeableParams({ price_stale_ms: "60000", ...params }, (name, value) => {
    if (value === "throw") throw new Error(`reading ${name} failed`)
  })
  const prices = makePriceCacheMemory(paramsService)
  prices.setMarkets([
    ...ASSETS.flatMap((asset) => EXCHANGES.map((exchange) => ({ exchange, asset, quote: "USD", usdEquivalent: false }))),
    { exchange: "okx", asset: "ETH", quote: "USDT", usdEquivalent: true },
    { exchange: "kraken", asset: "LTC", quote: "USD", usdEquivalent: false } // listed, never priced
  ])
  for (const asset of ASSETS) for (const e of EXCHANGES) prices.ingest(tick(e, asset, 100))
  prices.ingest(tick("okx", "ETH", 100, "USDT"))

  const records = new Map<string, ApiKeyRecord>()
  const revoked = new Set<string>()
  let n = 0
  const authOf = (record: ApiKeyRecord | undefined): AuthResult =>
    record === undefined ? { _tag: "Refused", code: "INVALID_API_KEY", keyId: undefined }
    : revoked.has(record.id) ? { _tag: "Refused", code: "KEY_REVOKED", keyId: record.id }
    : { _tag: "Authorized", key: record }
  const apiKeys = ApiKeys.of({
    // Keys named "…slow…" are not in the node's cache: a 150 ms lookup, as for a key made on another node.
    authenticate: (plain) =>
      plain === undefined ? { _tag: "Refused", code: "MISSING_API_KEY", keyId: undefined }
      : plain.includes("slow") ? { _tag: "Unknown", hash: `hash-${plain}` }
      : authOf(records.get(plain)),
    authenticateHash: (hash) => authOf([...records.values()].find((r) => r.hash === hash)),
    authenticateSlow: (hash) => Effect.sleep("150 millis").pipe(Effect.as(authOf([...records.values()].find((r) => r.hash === hash)))),
    create: () => Effect.die("not used"),
    list: Effect.die("not used"),
    revoke: () => Effect.die("not used"),
    invalidate: () => Effect.die("not used"),
    tiers: () => new Map(),
    reload: Effect.void
  })
  const rows: Array<UsageFacts> = []
  const meta = { node: "test-node", region: "local", version: "0.0.0" }
  const deps: PriceHttpDeps = {
    apiKeys, prices, params: paramsService, meta, sendEnvelope: makeSendEnvelope(meta),
    limiter: new Proxy({}, { get: () => () => { throw new Error("the stream does not rate-limit") } }) as RateLimiter["Service"],
    stats: { values: new Float64Array(COUNTER_NAMES.length), startedAt: Date.now(), snapshot: () => ({}) as never, reset: () => {} },
    usage: { record: (facts) => void rows.push(facts), stats: () => ({ buffered: 0, written: 0, batches: 0, failures: 0, spooled: 0, replayed: 0, lastBatchMs: 0 }) }
  }
  // Slots through an in-process cache: claims answer asynchronously, as they do over Valkey.
  const slots = makeKeySlots(makeMemoryCache(), "test-node", () => paramsService.int("stream_max_connections_per_key"))
  const hub = makeStreamHub(deps, { ...DEFAULT_STREAM_OPTIONS, ...options }, slots)

  // As LpoHttpServer wires it: the fast server claims nothing here, node:http gets /stream and the upgrades.
  const fallback: Server = createServer({ shouldUpgradeCallback: hub.wantsUpgrade }, (req, res) => {
    const info = parseRequest(req)
    if ((info.method === "GET" || info.method === "HEAD") && (info.path === "/stream" || info.path === "/ws")) return hub.request(req, res, info)
    res.writeHead(404).end()
  })
  fallback.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => hub.upgrade(req, socket, head, parseRequest(req)))
  const fast = makeFastHttpServer({ route: () => undefined, fallback })
  const port = await new Promise<number>((resolve) => fast.server.listen(0, "127.0.0.1", () => {
    const address = fast.server.address()
    resolve(typeof address === "object" && address !== null ? address.port : 0)
  }))
  const harness: Harness = {
    port, hub, prices, rows,
    keyOf: (tier) => {
      const key = `tb_test_${tier}_${n++}`
      harness.addKey(key, tier)
      return { key, id: `id-${key}` }
    },
    addKey: (key, tier) =>
      void records.set(key, { id: `id-${key}`, hash: `hash-${key}`, prefix: key.slice(0, 8), tier: tierOf(tier), lrsEnabled: false, status: "active", expiresAt: undefined, email: undefined, createdAt: 0 }),
    revoke: (id) => void revoked.add(id),
    setParams: (changes) => void setParams(changes),
    close: async () => {
      await Effect.runPromise(hub.shutdown)
      slots.close()
      fast.closeAll()
      await new Promise((r) => fast.server.close(r))
    }
  }
  harnesses.push(harness)
  return harness
}

// --- clients ---------------------------------------------------------------------------------

interface Message {
  readonly type: string
  readonly seq: number
  readonly [field: string]: unknown
}

/** Collects a connection's messages; `next` waits for the first unread one matching. */
const collector = () => {
  const messages: Array<Message> = []
  let read = 0
  const waiters: Array<() => void> = []
  const push = (m: Message) => {
    messages.push(m)
    for (const w of waiters.splice(0)) w()
  }
  const next = async (match: (m: Message) => boolean = () => true, timeoutMs = 3000): Promise<Message> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      for (; read < messages.length; read++) {
        const m = messages[read]!
        if (match(m)) {
          read++
          return m
        }
      }
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no matching message in ${timeoutMs} ms; got ${JSON.stringify(messages.slice(-5))}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
  }
  return { messages, push, next }
}

interface WsClient {
  readonly ws: WebSocket
  readonly socket: () => Socket
  readonly messages: Array<Message>
  readonly next: (match?: (m: Message) => boolean, timeoutMs?: number) => Promise<Message>
  readonly send: (value: unknown) => void
  readonly closed: Promise<{ readonly code: number; readonly reason: string }>
}

const openWs = (port: number, headers: Record<string, string> = {}): Promise<WsClient> =>
  new Promise((resolve, reject) => {
    let raw: Socket | undefined
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, {
      headers,
      // Our own socket, so a test can stop reading it.
      createConnection: () => (raw = connect({ host: "127.0.0.1", port }))
    })
    const c = collector()
    const closed = new Promise<{ code: number; reason: string }>((done) => ws.once("close", (code, reason) => done({ code, reason: reason.toString() })))
    ws.on("message", (data) => c.push(JSON.parse(String(data)) as Message))
    ws.once("open", () => resolve({ ws, socket: () => raw!, messages: c.messages, next: c.next, send: (v) => ws.send(JSON.stringify(v)), closed }))
    ws.once("unexpected-response", (_req, res) => {
      let body = ""
      res.on("data", (d: Buffer) => void (body += d.toString()))
      res.on("end", () => reject(Object.assign(new Error(`refused ${res.statusCode}`), { status: res.statusCode, body: JSON.parse(body) as Record<string, unknown> })))
    })
    ws.once("error", reject)
  })

const refusal = async (port: number, headers: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> => {
  try {
    const c = await openWs(port, headers)
    c.ws.terminate()
    throw new Error("connected")
  } catch (error) {
    const e = error as { status?: number; body?: Record<string, unknown> }
    if (e.status === undefined) throw error
    return { status: e.status, body: e.body ?? {} }
  }
}

interface SseEvent extends Message {
  readonly event: string
  readonly id: string
}

const openSse = (port: number, path: string, headers: Record<string, string>) =>
  new Promise<{ status: number; res: IncomingMessage; body: () => string; comments: () => number; next: (match?: (m: Message) => boolean, timeoutMs?: number) => Promise<Message>; events: Array<Message> }>((resolve) => {
    httpGet({ host: "127.0.0.1", port, path, headers }, (res) => {
      const c = collector()
      let text = ""
      let comments = 0
      let buffer = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => {
        text += chunk
        buffer += chunk
        let end: number
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          if (block.startsWith(":")) {
            comments++
            continue
          }
          const fields = Object.fromEntries(block.split("\n").map((line) => [line.slice(0, line.indexOf(":")), line.slice(line.indexOf(":") + 2)]))
          const data = JSON.parse(fields["data"] ?? "{}") as Message
          const event: SseEvent = { ...data, event: fields["event"] ?? "", id: fields["id"] ?? "" }
          c.push(event)
        }
      })
      resolve({ status: res.statusCode ?? 0, res, body: () => text, comments: () => comments, next: c.next, events: c.messages })
    })
  })

const waitUntil = async (check: () => boolean, timeoutMs = 3000) => {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not reached")
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** Every asset's consensus moves (all three sources, so the median does). */
const churn = (h: Harness, i: number) => {
  for (const asset of ASSETS) {
    const price = 100 + (i % 50) + Math.random()
    for (const e of EXCHANGES) h.prices.ingest(tick(e, asset, price))
  }
}

const expectSeqRising = (messages: ReadonlyArray<Message>) => expect(messages.map((m) => m.seq)).toEqual(messages.map((_, i) => i + 1))

// --- tests -----------------------------------------------------------------------------------

describe("partner stream over WebSocket", () => {
  it("subscribes with a header key: response, snapshot, updates, unsubscribe, seq on every message", async () => {
    const h = await startHarness({}, { stream_min_interval_ms: "0" })
    const { key, id } = h.keyOf("partner")
    const c = await openWs(h.port, { "x-api-key": key })
    c.send({ type: "subscribe", assets: ["btc", "ETH/USDT", "LTC"] })
    expect(await c.next()).toMatchObject({ type: "response", status: "success", code: "OK", assets: ["BTC", "ETH/USDT", "LTC"] })
    expect(await c.next()).toMatchObject({ type: "price_update", asset: "BTC", quote: "USD", price: 100 })
    expect(await c.next()).toMatchObject({ type: "price_update", asset: "ETH", quote: "USDT", price: 100 })
    // Listed but never priced: the snapshot says stale, with no age.
    expect(await c.next()).toMatchObject({ type: "stale", asset: "LTC", quote: "USD", age_ms: null })
    for (const e of EXCHANGES) h.prices.ingest(tick(e, "BTC", 101))
    const update = await c.next()
    expect(update).toMatchObject({ type: "price_update", asset: "BTC", price: 101 })
    expect(Object.keys(update)).toEqual(["type", "asset", "quote", "price", "ts", "age_ms", "seq"])
    // Not subscribed: nothing.
    for (const e of EXCHANGES) h.prices.ingest(tick(e, "SOL", 150))
    c.send({ type: "unsubscribe", assets: ["BTC"] })
    expect(await c.next()).toMatchObject({ type: "response", status: "success", assets: ["BTC"] })
    for (const e of EXCHANGES) h.prices.ingest(tick(e, "BTC", 102))
    h.prices.ingest(tick("okx", "ETH", 103, "USDT"))
    expect(await c.next()).toMatchObject({ type: "price_update", asset: "ETH", quote: "USDT", price: 103 })
    expect(c.messages.filter((m) => m.type === "price_update" && m["asset"] === "BTC")).toHaveLength(2)
    expectSeqRising(c.messages)
    c.ws.close(1000)
    await c.closed
    await waitUntil(() => h.rows.some((r) => r.endpoint === "/ws:close"))
    // Usage: opened (101), subscribe, unsubscribe, close with the connection's bytes.
    const mine = h.rows.filter((r) => r.apiKeyId === id)
    expect(mine.map((r) => [r.endpoint, r.protocol, r.code])).toEqual([
      ["/ws", "ws", "OK"], ["/ws:subscribe", "ws", "OK"], ["/ws:unsubscribe", "ws", "OK"], ["/ws:close", "ws", "OK"]
    ])
    expect(mine[0]?.status).toBe(101)
    expect(mine[1]?.asset).toBe("btc,ETH/USDT,LTC")
    const framed = c.messages.reduce((sum, m) => {
      const length = Buffer.byteLength(JSON.stringify(m))
      return sum + length + (length < 126 ? 2 : 4)
    }, 0)
    expect(mine[3]?.bytesOut).toBe(framed)
    expect(h.prices.snapshot(Date.now()).watched).toBe(0)
  })

  it("authenticates by the first message, and closes a connection that does not in time", async () => {
    const h = await startHarness({ authTimeoutMs: 300 })
    const { key, id } = h.keyOf("partner")
    const c = await openWs(h.port)
    c.send({ type: "auth", key })
    expect(await c.next()).toMatchObject({ type: "response", status: "success", code: "OK", seq: 1 })
    c.send({ type: "subscribe", assets: ["SOL"] })
    expect(await c.next()).toMatchObject({ type: "response", status: "success", assets: ["SOL"] })
    expect(await c.next()).toMatchObject({ type: "price_update", asset: "SOL" })
    expect(h.rows.find((r) => r.endpoint === "/ws" && r.apiKeyId === id)?.status).toBe(101)

    const silent = await openWs(h.port)
    expect(await silent.next(undefined, 2000)).toMatchObject({ type: "response", status: "error", code: "MISSING_API_KEY" })
    expect((await silent.closed).code).toBe(1008)

    const early = await openWs(h.port)
    early.send({ type: "subscribe", assets: ["BTC"] })
    expect(await early.next()).toMatchObject({ type: "response", status: "error", code: "MISSING_API_KEY" })
    expect((await early.closed).code).toBe(1008)

    const wrong = await openWs(h.port)
    wrong.send({ type: "auth", key: "tb_nope" })
    expect(await wrong.next()).toMatchObject({ type: "response", status: "error", code: "INVALID_API_KEY" })
    expect((await wrong.closed).code).toBe(1008)

    const listener = await openWs(h.port)
    listener.send({ type: "auth", key: h.keyOf("listener").key })
    expect(await listener.next()).toMatchObject({ type: "response", status: "error", code: NOT_PARTNER_CODE })
    expect((await listener.closed).code).toBe(1008)
    await waitUntil(() => h.rows.filter((r) => r.code !== "OK").length === 4)
    expect(h.rows.filter((r) => r.code !== "OK").map((r) => r.code).sort()).toEqual(["INVALID_API_KEY", "MISSING_API_KEY", "MISSING_API_KEY", NOT_PARTNER_CODE].sort())
  })

  it("keeps messages sent right behind a first-message key until the key is looked up", async () => {
    const h = await startHarness()
    const slow = "tb_test_slow_lookup"
    h.addKey(slow, "partner")
    const c = await openWs(h.port)
    c.send({ type: "auth", key: slow })
    c.send({ type: "subscribe", assets: ["BTC"] })
    expect(await c.next()).toMatchObject({ type: "response", status: "success", code: "OK", seq: 1 })
    expect(await c.next()).toMatchObject({ type: "response", status: "success", assets: ["BTC"], seq: 2 })
    expect(await c.next()).toMatchObject({ type: "price_update", asset: "BTC", seq: 3 })
    // A key the node knows: looked up at once, admitted asynchronously (the connection slot).
    const fast = await openWs(h.port)
    fast.send({ type: "auth", key: h.keyOf("partner").key })
    fast.send({ type: "subscribe", assets: ["ETH"] })
    expect(await fast.next()).toMatchObject({ type: "response", status: "success", code: "OK", seq: 1 })
    expect(await fast.next()).toMatchObject({ type: "response", status: "success", assets: ["ETH"], seq: 2 })
  })

  it("refuses a header key before the upgrade: without partner_ws 403, unknown 401, with the envelope", async () => {
    const h = await startHarness()
    const associate = h.keyOf("associate")
    const r = await refusal(h.port, { "x-api-key": associate.key })
    expect(r.status).toBe(403)
    expect(r.body).toMatchObject({ success: false, service: "LPO", code: NOT_PARTNER_CODE })
    expect(Object.keys(r.body)).toHaveLength(12)
    expect((await refusal(h.port, { authorization: "Bearer tb_unknown" })).status).toBe(401)
    expect(h.rows.map((r) => [r.endpoint, r.protocol, r.code, r.apiKeyId])).toEqual([
      ["/ws", "ws", NOT_PARTNER_CODE, associate.id], ["/ws", "ws", "INVALID_API_KEY", undefined]
    ])
    // A plain GET (no upgrade) says what is missing.
    const plain = await fetch(`http://127.0.0.1:${h.port}/ws`)
    expect(plain.status).toBe(400)
    expect(((await plain.json()) as { code: string }).code).toBe("BAD_REQUEST")
  })

  it("answers bad subscriptions with an error response and changes nothing", async () => {
    const h = await startHarness()
    const c = await openWs(h.port, { "x-api-key": h.keyOf("partner").key })
    c.send({ type: "subscribe", assets: ["BTC", "NOPE"] })
    expect(await c.next()).toMatchObject({ type: "response", status: "error", code: "UNKNOWN_ASSET", assets: ["NOPE"] })
    c.send({ type: "subscribe", assets: ["B-TC"] })
    expect(await c.next()).toMatchObject({ type: "response", status: "error", code: "BAD_REQUEST", assets: ["B-TC"] })
    c.ws.send("not json")
    expect(await c.next()).toMatchObject({ type: "response", status: "error", code: "BAD_REQUEST" })
    c.send({ type: "subscribe", assets: Array.from({ length: 151 }, (_, i) => `A${i}`) })
    expect(await c.next()).toMatchObject({ type: "response", status: "error", code: "BAD_REQUEST" })
    expect(String((c.messages.at(-1) as Message)["message"])).toContain("at most 150 subscriptions")
    for (const e of EXCHANGES) h.prices.ingest(tick(e, "BTC", 120))
    await new Promise((r) => setTimeout(r, 100))
    expect(c.messages.filter((m) => m.type === "price_update")).toEqual([])
    expect(h.prices.snapshot(Date.now()).watched).toBe(0)
  })

  it("sends at most one update per asset per stream_min_interval_ms, the newest price", async () => {
    const h = await startHarness({}, { stream_min_interval_ms: "300" })
    const c = await openWs(h.port, { "x-api-key": h.keyOf("partner").key })
    c.send({ type: "subscribe", assets: ["BTC", "ETH"] })
    const snapshot = await c.next((m) => m.type === "price_update" && m["asset"] === "ETH")
    const start = Date.now()
    for (let i = 1; i <= 20; i++) {
      for (const e of EXCHANGES) h.prices.ingest(tick(e, "BTC", 100 + i))
      await new Promise((r) => setTimeout(r, 10))
    }
    const first = await c.next((m) => m.type === "price_update" && m["asset"] === "BTC")
    // The snapshot was the last BTC message: the next one waits for the interval, and is the newest price.
    expect(Date.now() - start).toBeGreaterThanOrEqual(250)
    expect(first["price"]).toBe(120)
    await new Promise((r) => setTimeout(r, 400))
    expect(c.messages.filter((m) => m.type === "price_update" && m["asset"] === "BTC")).toHaveLength(2)
    expect(snapshot.seq).toBeLessThan(first.seq)
  })

  it("tells when a subscribed price goes stale, and sends heartbeats when nothing else happens", async () => {
    const h = await startHarness({ heartbeatMs: 200, sweepMs: 50 }, { price_stale_ms: "400", stream_min_interval_ms: "0" })
    for (const e of EXCHANGES) h.prices.ingest(tick(e, "XRP", 2))
    const c = await openWs(h.port, { "x-api-key": h.keyOf("partner").key })
    c.send({ type: "subscribe", assets: ["XRP"] })
    await c.next((m) => m.type === "price_update")
    const stale = await c.next((m) => m.type === "stale", 3000)
    expect(stale).toMatchObject({ asset: "XRP", quote: "USD" })
    expect(stale["age_ms"]).toBeGreaterThanOrEqual(400)
    const beats = [await c.next((m) => m.type === "heartbeat"), await c.next((m) => m.type === "heartbeat")]
    expect(Object.keys(beats[0]!)).toEqual(["type", "ts", "seq"])
    expect(beats[1]!["ts"] as number - (beats[0]!["ts"] as number)).toBeGreaterThanOrEqual(150)
    expectSeqRising(c.messages)
  })

  it("closes a client that stops reading with 4008, holding at most 1 MiB for it", async () => {
    const h = await startHarness({}, { stream_min_interval_ms: "0" })
    const c = await openWs(h.port, { "x-api-key": h.keyOf("partner").key })
    c.send({ type: "subscribe", assets: ASSETS })
    await c.next((m) => m.type === "price_update" && m["asset"] === "DOGE")
    c.socket().pause()
    // Price changes until the server gives up on the client (kernel buffers take the first megabytes).
    for (let i = 0; i < 100_000 && h.hub.stats().slowConsumerCloses === 0; i++) {
      churn(h, i)
      await new Promise((r) => setImmediate(r))
    }
    expect(h.hub.stats().slowConsumerCloses).toBe(1)
    // Released at once: no session, no subscription, whatever the client does next.
    expect(h.hub.stats().connections).toBe(0)
    expect(h.prices.snapshot(Date.now()).watched).toBe(0)
    // Closed as soon as it passed 1 MiB unsent (by at most one message).
    expect(h.hub.stats().slowConsumerUnsentMax).toBeGreaterThan(1024 * 1024)
    expect(h.hub.stats().slowConsumerUnsentMax).toBeLessThan(1024 * 1024 + 1024)
    c.socket().resume()
    expect((await c.closed).code).toBe(4008)
  }, 30_000)

  it("closes a connection whose send has not drained for maxBlockedMs (4008)", async () => {
    const h = await startHarness({ maxBlockedMs: 300, sweepMs: 50, maxUnsentBytes: 64 * 1024 * 1024 }, { stream_min_interval_ms: "0" })
    const c = await openWs(h.port, { "x-api-key": h.keyOf("partner").key })
    c.send({ type: "subscribe", assets: ASSETS })
    await c.next((m) => m.type === "price_update" && m["asset"] === "DOGE")
    c.socket().pause()
    for (let i = 0; i < 100_000 && h.hub.stats().slowConsumerCloses === 0; i++) {
      churn(h, i)
      if (i % 20 === 0) await new Promise((r) => setTimeout(r, 1))
      else await new Promise((r) => setImmediate(r))
    }
    expect(h.hub.stats().slowConsumerCloses).toBe(1)
    // Closed by time, well before the byte limit.
    expect(h.hub.stats().slowConsumerUnsentMax).toBeGreaterThan(0)
    expect(h.hub.stats().slowConsumerUnsentMax).toBeLessThan(64 * 1024 * 1024)
    c.socket().resume()
    expect((await c.closed).code).toBe(4008)
  }, 30_000)

  it("pings, and drops a connection that does not answer by the next ping", async () => {
    const h = await startHarness({ pingIntervalMs: 200, sweepMs: 20, heartbeatMs: 60_000 })
    const c = await openWs(h.port, { "x-api-key": h.keyOf("partner").key })
    let pings = 0
    c.ws.on("ping", () => pings++)
    await new Promise((r) => setTimeout(r, 700))
    expect(pings).toBeGreaterThanOrEqual(2)
    expect(h.hub.stats().connections).toBe(1)
    // Stop answering (nothing is read, so no pong goes back).
    c.socket().pause()
    await waitUntil(() => h.hub.stats().connections === 0, 2000)
    c.socket().resume()
    expect((await c.closed).code).toBe(1006)
  })

  it("ends a connection at its lifetime with a RECONNECT response first, and a reconnect gets the snapshot", async () => {
    const h = await startHarness({ lifetimeMs: 400, sweepMs: 20 })
    const { key } = h.keyOf("partner")
    const c = await openWs(h.port, { "x-api-key": key })
    c.send({ type: "subscribe", assets: ["ADA"] })
    await c.next((m) => m.type === "price_update")
    const notice = await c.next((m) => m.type === "response" && m["status"] === "error", 2000)
    expect(notice).toMatchObject({ code: "RECONNECT" })
    expect((await c.closed).code).toBe(1001)
    for (const e of EXCHANGES) h.prices.ingest(tick(e, "ADA", 0.5))
    const again = await openWs(h.port, { "x-api-key": key })
    again.send({ type: "subscribe", assets: ["ADA"] })
    expect(await again.next()).toMatchObject({ type: "response", status: "success", seq: 1 })
    expect(await again.next()).toMatchObject({ type: "price_update", asset: "ADA", price: 0.5, seq: 2 })
  })

  it("holds each key to stream_max_connections_per_key (WebSocket and SSE together), freed on close", async () => {
    const h = await startHarness({}, { stream_max_connections_per_key: "2" })
    const { key } = h.keyOf("partner")
    const a = await openWs(h.port, { "x-api-key": key })
    const b = await openSse(h.port, "/stream?assets=BTC", { "x-api-key": key })
    expect(b.status).toBe(200)
    const refused = await refusal(h.port, { "x-api-key": key })
    expect(refused.status).toBe(429)
    expect(refused.body).toMatchObject({ code: "RATE_LIMITED" })
    const byMessage = await openWs(h.port)
    byMessage.send({ type: "auth", key })
    expect(await byMessage.next()).toMatchObject({ code: "RATE_LIMITED" })
    // Another key is not affected.
    await (await openWs(h.port, { "x-api-key": h.keyOf("partner").key })).ws.close()
    a.ws.close()
    await a.closed
    await waitUntil(() => h.hub.stats().connections === 1)
    const c = await openWs(h.port, { "x-api-key": key })
    expect(c.ws.readyState).toBe(WebSocket.OPEN)
    b.res.destroy()
  })

  it("closes a connection whose key is revoked (checked every keyCheckMs)", async () => {
    const h = await startHarness({ keyCheckMs: 200, sweepMs: 20 })
    const { key, id } = h.keyOf("partner")
    const c = await openWs(h.port, { "x-api-key": key })
    h.revoke(id)
    expect(await c.next((m) => m.type === "response", 2000)).toMatchObject({ status: "error", code: "KEY_REVOKED" })
    expect((await c.closed).code).toBe(1008)
  })

  it("refuses client messages past the per-second limit, once, without a usage row each", async () => {
    const h = await startHarness({ maxClientMessagesPerSecond: 5 })
    const c = await openWs(h.port, { "x-api-key": h.keyOf("partner").key })
    for (let i = 0; i < 12; i++) c.send({ type: "unsubscribe", assets: ["BTC"] })
    await c.next((m) => m["code"] === "RATE_LIMITED")
    await new Promise((r) => setTimeout(r, 100))
    expect(c.messages.filter((m) => m.type === "response").map((m) => m["code"])).toEqual(["OK", "OK", "OK", "OK", "OK", "RATE_LIMITED"])
    expect(h.rows.filter((r) => r.endpoint === "/ws:unsubscribe")).toHaveLength(5)
    // A new second, new messages.
    await new Promise((r) => setTimeout(r, 1000))
    c.send({ type: "unsubscribe", assets: ["BTC"] })
    expect(await c.next((m) => m.type === "response")).toMatchObject({ code: "OK" })
  })

  it("closes a connection (1011) whose session fails instead of leaving it silent", async () => {
    const h = await startHarness({}, { stream_min_interval_ms: "0" })
    const c = await openWs(h.port, { "x-api-key": h.keyOf("partner").key })
    c.send({ type: "subscribe", assets: ["BTC"] })
    await c.next((m) => m.type === "price_update")
    h.setParams({ stream_min_interval_ms: "throw" })
    for (const e of EXCHANGES) h.prices.ingest(tick(e, "BTC", 130))
    expect((await c.closed).code).toBe(1011)
    expect(h.hub.stats().connections).toBe(0)
  })

  it("tells every connection to reconnect at shutdown", async () => {
    const h = await startHarness()
    const c = await openWs(h.port, { "x-api-key": h.keyOf("partner").key })
    await Effect.runPromise(h.hub.shutdown)
    expect(await c.next()).toMatchObject({ type: "response", status: "error", code: "RECONNECT" })
    expect((await c.closed).code).toBe(1001)
  })
})

describe("the fast server's hand-over of an upgrade", () => {
  it("gives the upgrade its raw socket, with the bytes sent right behind the request", async () => {
    const seen: Array<{ raw: boolean; head: string; later: string }> = []
    const fallback = createServer({ shouldUpgradeCallback: () => true })
    fallback.on("upgrade", (_req: IncomingMessage, duplex: Duplex, head: Buffer) => {
      const taken = takeUpgradedSocket(duplex, head)
      const entry = { raw: taken?.socket instanceof Socket, head: taken?.head.toString() ?? "", later: "" }
      seen.push(entry)
      taken?.socket.on("data", (d: Buffer) => void (entry.later += d.toString()))
      taken?.socket.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\nhello")
    })
    const fast = makeFastHttpServer({ route: () => undefined, fallback })
    const port = await new Promise<number>((resolve) => fast.server.listen(0, "127.0.0.1", () => resolve((fast.server.address() as { port: number }).port)))
    try {
      const client = connect({ host: "127.0.0.1", port })
      let received = ""
      client.on("data", (d: Buffer) => void (received += d.toString()))
      client.write("GET /x HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: x\r\n\r\nfirst bytes")
      await waitUntil(() => received.endsWith("hello"))
      // More than the wrapper would hold: it is detached, so nothing fills it and pauses the socket.
      const more = ` and more${"x".repeat(256 * 1024)}`
      client.write(more)
      await waitUntil(() => seen[0]?.later.length === more.length)
      expect(seen).toEqual([{ raw: true, head: "first bytes", later: more }])
      client.destroy()
    } finally {
      fast.closeAll()
      await new Promise((r) => fast.server.close(r))
    }
  })
})

describe("partner stream over Server-Sent Events", () => {
  it("sends the same messages as events with ids, comments, Last-Event-ID, usage rows", async () => {
    const h = await startHarness({ sseCommentMs: 200, heartbeatMs: 150, sweepMs: 20 }, { stream_min_interval_ms: "0" })
    const { key, id } = h.keyOf("partner")
    const s = await openSse(h.port, "/stream?assets=BTC,ETH/USDT", { "x-api-key": key })
    expect(s.status).toBe(200)
    expect(s.res.headers["content-type"]).toBe("text/event-stream; charset=utf-8")
    expect(await s.next()).toMatchObject({ event: "response", id: "1", type: "response", status: "success", assets: ["BTC", "ETH/USDT"], seq: 1 })
    expect(await s.next()).toMatchObject({ event: "price_update", id: "2", asset: "BTC", seq: 2 })
    expect(await s.next()).toMatchObject({ event: "price_update", asset: "ETH", quote: "USDT" })
    for (const e of EXCHANGES) h.prices.ingest(tick(e, "BTC", 107))
    expect(await s.next((m) => m.type === "price_update")).toMatchObject({ asset: "BTC", price: 107 })
    expect(await s.next((m) => m.type === "heartbeat")).toMatchObject({ event: "heartbeat" })
    await waitUntil(() => s.comments() >= 1, 2000)
    expectSeqRising(s.events)
    for (const m of s.events) expect((m as SseEvent).id).toBe(String(m.seq))
    s.res.destroy()
    await waitUntil(() => h.rows.some((r) => r.endpoint === "/stream:close"))
    const mine = h.rows.filter((r) => r.apiKeyId === id)
    expect(mine.map((r) => [r.endpoint, r.protocol, r.code])).toEqual([["/stream", "http", "OK"], ["/stream:subscribe", "http", "OK"], ["/stream:close", "http", "OK"]])
    expect(mine[2]?.bytesOut).toBe(Buffer.byteLength(s.body()))

    // A reconnect with Last-Event-ID gets the snapshot again.
    const again = await openSse(h.port, "/stream?assets=BTC", { "x-api-key": key, "last-event-id": "9" })
    expect(await again.next()).toMatchObject({ type: "response", status: "success" })
    expect(await again.next()).toMatchObject({ type: "price_update", asset: "BTC", price: 107 })
    again.res.destroy()
  })

  it("refuses with the envelope: no key, no partner_ws, bad or unknown assets", async () => {
    const h = await startHarness()
    const get = async (path: string, headers: Record<string, string> = {}) => {
      const res = await fetch(`http://127.0.0.1:${h.port}${path}`, { headers })
      return { status: res.status, body: await res.json() as { code: string } }
    }
    expect(await get("/stream?assets=BTC")).toMatchObject({ status: 401, body: { code: "MISSING_API_KEY" } })
    expect(await get("/stream?assets=BTC", { "x-api-key": h.keyOf("associate").key })).toMatchObject({ status: 403, body: { code: NOT_PARTNER_CODE } })
    const partner = h.keyOf("partner").key
    expect(await get("/stream", { "x-api-key": partner })).toMatchObject({ status: 400, body: { code: "BAD_REQUEST" } })
    expect(await get("/stream?assets=BT$C", { "x-api-key": partner })).toMatchObject({ status: 400 })
    expect(await get("/stream?assets=BTC,NOPE", { "x-api-key": partner })).toMatchObject({ status: 404, body: { code: "UNKNOWN_ASSET" } })
    expect(h.hub.stats().connections).toBe(0)
  })

  it("closes an SSE reader that stops reading, holding at most 1 MiB for it", async () => {
    const h = await startHarness({}, { stream_min_interval_ms: "0" })
    const s = await openSse(h.port, `/stream?assets=${ASSETS.join(",")}`, { "x-api-key": h.keyOf("partner").key })
    await s.next((m) => m.type === "price_update" && m["asset"] === "DOGE")
    s.res.socket.pause()
    for (let i = 0; i < 100_000 && h.hub.stats().slowConsumerCloses === 0; i++) {
      churn(h, i)
      await new Promise((r) => setImmediate(r))
    }
    expect(h.hub.stats().slowConsumerCloses).toBe(1)
    expect(h.hub.stats().slowConsumerUnsentMax).toBeLessThan(1024 * 1024 + 1024)
    expect(h.hub.stats().connections).toBe(0)
    expect(h.prices.snapshot(Date.now()).watched).toBe(0)
    s.res.destroy()
  }, 30_000)
})
