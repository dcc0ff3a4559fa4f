/**
 * Partner stream fan-out: 1,000 WebSocket clients × 50 assets each (150 assets, ~333 subscribers
 * per asset), updates delivered per second and latency from price change to client, against a
 * bare `ws` server sending the same messages (same JSON, per-connection seq) to the same clients.
 *
 * Each server runs as its own child process (127.0.0.1 only) with its own price driver; the
 * clients run in this process and only scan each frame for its `ts` (no JSON.parse), so the
 * client side stays cheaper than either server.
 * - stream: the real hub (src/programs/stream/streamHub.ts) behind the LPO's fast server and
 *   node:http hand-over, over a real PriceCache: the driver ingests ticks, the cache publishes
 *   consensus changes, the hub coalesces and sends. Keys from an in-memory ApiKeys (one partner
 *   key), usage rows to a counting sink (the usage pipeline is measured elsewhere).
 * - bare: `ws` WebSocketServer on node:http; the driver builds each message and sends it to each
 *   subscriber of the asset in the same turn, each connection's messages of a turn in one write
 *   (cork), as the hub does.
 * Two loads, each measured in alternating rounds (bare, stream), medians reported:
 * - saturation: every asset changes once per event-loop turn, as fast as the server keeps up
 *   (`stream_min_interval_ms` 0, so every change may be sent): updates delivered per second;
 * - steady: every asset changes once a second (offered ~50k updates/s), default
 *   `stream_min_interval_ms` (100): latency p50/p99 from the change to the client.
 *
 *   npm run build && node dist/bench/streamFanout.js [--clients 1000] [--per-client 50] [--seconds 4] [--rounds 2] [--json]
 */
import { type ChildProcess, fork } from "node:child_process"
import { createServer, type IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import { fileURLToPath, pathToFileURL } from "node:url"
import { Effect } from "effect"
import { type WebSocket as ServerSocket, WebSocket, WebSocketServer } from "ws"
import { median } from "../src/domain/consensus.ts"
import { DEFAULT_PARAMS, type ParamValues } from "../src/domain/params.ts"
import { COUNTER_NAMES } from "../src/domain/runtimeCounters.ts"
import { priceUpdateHead } from "../src/domain/streamMessages.ts"
import { makeFastHttpServer } from "../src/layers/http/fastHttp.ts"
import { makeSendEnvelope, parseRequest } from "../src/layers/http/httpKit.ts"
import { makePriceCacheMemory } from "../src/layers/PriceCacheMemory.ts"
import type { PriceHttpDeps } from "../src/programs/lpo/priceHttp.ts"
import { makeStreamHub } from "../src/programs/stream/streamHub.ts"
import { type ApiKeyRecord, ApiKeys } from "../src/services/ApiKeys.ts"
import { Params } from "../src/services/Params.ts"
import type { RateLimiter } from "../src/services/RateLimiter.ts"
import type { Benchmark, BenchSettings } from "./run.ts"

const ASSET_COUNT = 150
const ASSETS = Array.from({ length: ASSET_COUNT }, (_, i) => `A${i}`)
const KEY = "tb_bench_stream_key"
const STEADY_CHANGES_PER_ASSET_PER_S = 1

type Kind = "stream" | "bare"
type Load = "saturation" | "steady"

/** Parent → server child. */
type Command = { readonly cmd: "drive"; readonly load: Load } | { readonly cmd: "stop" }
/** Server child → parent. */
type Reply = { readonly ready: number } | { readonly stopped: number }

// --- server children ---------------------------------------------------------------------------

/** Calls `change(i)` per asset: once per event-loop turn (saturation) or at a fixed rate (steady). */
const makeDriver = (changeAll: (step: number, assets: ReadonlyArray<string>) => void) => {
  let driving = false
  let step = 0
  let changes = 0
  let timer: ReturnType<typeof setInterval> | undefined
  const saturate = () => {
    if (!driving) return
    changeAll(++step, ASSETS)
    changes += ASSETS.length
    setImmediate(saturate)
  }
  return {
    start: (load: Load) => {
      driving = true
      changes = 0
      if (load === "saturation") return saturate()
      // Steady: a slice of the assets every 10 ms, each asset twice a second.
      const perTick = (ASSET_COUNT * STEADY_CHANGES_PER_ASSET_PER_S) / 100
      let cursor = 0
      let due = 0
      timer = setInterval(() => {
        step++
        const slice: Array<string> = []
        for (due += perTick; due >= 1; due--) slice.push(ASSETS[(cursor++) % ASSET_COUNT]!)
        changeAll(step, slice)
        changes += slice.length
      }, 10)
    },
    stop: () => {
      driving = false
      if (timer !== undefined) clearInterval(timer)
      timer = undefined
      return changes
    }
  }
}

const priceAt = (step: number, assetIndex: number) => 100 + assetIndex + (step % 1000) / 100

const listen = (server: { listen: (port: number, host: string, cb: () => void) => unknown; address: () => unknown }) =>
  new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    resolve(typeof address === "object" && address !== null && "port" in address ? Number(address.port) : 0)
  }))

const serveStream = async (): Promise<{ readonly port: number; readonly drive: (load: Load) => void; readonly stop: () => number }> => {
  let values: ParamValues = { ...DEFAULT_PARAMS, price_stale_ms: "3600000", stream_max_connections_per_key: "100000" }
  const params = Params.of({
    current: () => values,
    int: (name) => Number(values[name]),
    bool: (name) => values[name] === "true",
    list: Effect.succeed([]),
    profiles: Effect.succeed({}),
    set: () => Effect.succeed(values),
    applyProfile: () => Effect.succeed(values),
    refresh: Effect.void
  })
  const prices = makePriceCacheMemory(params)
  prices.setMarkets(ASSETS.map((asset) => ({ exchange: "coinbase" as const, asset, quote: "USD", usdEquivalent: false })))
  const ingest = (step: number, assets: ReadonlyArray<string>) => {
    const now = Date.now()
    for (const asset of assets) {
      const p = priceAt(step, Number(asset.slice(1)))
      prices.ingest({ exchange: "coinbase", asset, quote: "USD", last: p, bid: p, ask: p, exchangeTs: now, receivedAt: now })
    }
  }
  ingest(0, ASSETS)
  const record: ApiKeyRecord = {
    id: "bench", hash: "bench", prefix: "tb_bench", lrsEnabled: false, status: "active", expiresAt: undefined, email: undefined, createdAt: 0,
    tier: { tier: "partner", ratePerSec: null, burst: null, monthlyQueries: null, lrsReportsPerMonth: null, lrsRequiresAddon: false, webhookAssets: ASSET_COUNT, partnerWs: true }
  }
  const apiKeys = ApiKeys.of({
    authenticate: (plain) => (plain === KEY ? { _tag: "Authorized", key: record } : { _tag: "Refused", code: "INVALID_API_KEY", keyId: undefined }),
    authenticateHash: () => ({ _tag: "Authorized", key: record }),
    authenticateSlow: () => Effect.die("not used"),
    create: () => Effect.die("not used"),
    list: Effect.die("not used"),
    revoke: () => Effect.die("not used"),
    invalidate: () => Effect.die("not used"),
    tiers: () => new Map(),
    reload: Effect.void
  })
  const meta = { node: "bench", region: "local", version: "0" }
  let rows = 0
  const deps: PriceHttpDeps = {
    apiKeys, prices, params, meta, sendEnvelope: makeSendEnvelope(meta),
    limiter: new Proxy({}, { get: () => () => { throw new Error("not used") } }) as RateLimiter["Service"],
    stats: { values: new Float64Array(COUNTER_NAMES.length), startedAt: Date.now(), snapshot: () => ({}) as never, reset: () => {} },
    usage: { record: () => void rows++, stats: () => ({ buffered: 0, written: rows, batches: 0, failures: 0, spooled: 0, replayed: 0, lastBatchMs: 0 }) }
  }
  const hub = makeStreamHub(deps)
  // As the LPO wires it: the fast server hands the upgrade to node:http, which gives it to the hub.
  const fallback = createServer({ shouldUpgradeCallback: hub.wantsUpgrade }, (req, res) => hub.request(req, res, parseRequest(req)))
  fallback.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => hub.upgrade(req, socket, head, parseRequest(req)))
  const fast = makeFastHttpServer({ route: () => undefined, fallback })
  const port = await listen(fast.server)
  const driver = makeDriver(ingest)
  return {
    port,
    drive: (load) => {
      values = { ...values, stream_min_interval_ms: load === "saturation" ? "0" : DEFAULT_PARAMS.stream_min_interval_ms }
      driver.start(load)
    },
    stop: () => driver.stop()
  }
}

const serveBare = async (): Promise<{ readonly port: number; readonly drive: (load: Load) => void; readonly stop: () => number }> => {
  interface Conn {
    readonly ws: ServerSocket
    readonly socket: Duplex
    seq: number
  }
  const subscribers = new Map<string, Set<Conn>>(ASSETS.map((a) => [a, new Set()]))
  const server = createServer((_req, res) => res.writeHead(404).end())
  const wss = new WebSocketServer({ server, perMessageDeflate: false })
  wss.on("connection", (ws, req) => {
    const conn: Conn = { ws, socket: req.socket, seq: 0 }
    ws.on("message", (data) => {
      const m = JSON.parse(String(data)) as { assets: ReadonlyArray<string> }
      for (const a of m.assets) subscribers.get(a)?.add(conn)
      ws.send(`{"type":"response","status":"success","code":"OK","message":"Success.","assets":${JSON.stringify(m.assets)},"seq":${++conn.seq}}`)
    })
    ws.on("close", () => {
      for (const set of subscribers.values()) set.delete(conn)
    })
  })
  const port = await listen(server)
  // As careful as the hub: each connection's messages of one turn leave in one write (cork).
  const corked = new Set<Conn>()
  const driver = makeDriver((step, assets) => {
    for (const asset of assets) {
      const now = Date.now()
      const head = priceUpdateHead(asset, "USD", priceAt(step, Number(asset.slice(1))), now)
      for (const c of subscribers.get(asset)!) {
        if (!corked.has(c)) {
          corked.add(c)
          c.socket.cork()
        }
        c.ws.send(`${head}${Date.now() - now},"seq":${++c.seq}}`)
      }
    }
    for (const c of corked) c.socket.uncork()
    corked.clear()
  })
  return { port, drive: (load) => driver.start(load), stop: () => driver.stop() }
}

const runServerChild = async (kind: Kind) => {
  const server = kind === "stream" ? await serveStream() : await serveBare()
  process.on("message", (message: Command) => {
    if (message.cmd === "drive") server.drive(message.load)
    else process.send?.({ stopped: server.stop() } satisfies Reply)
  })
  process.on("disconnect", () => process.exit(0))
  process.send?.({ ready: server.port } satisfies Reply)
}

// --- clients (this process) ----------------------------------------------------------------

interface Measurement {
  readonly updatesPerSec: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly clients: number
  readonly closedEarly: number
}

const TYPE_PRICE = Buffer.from(`{"type":"price_update"`)
const TS_FIELD = Buffer.from(`"ts":`)

/** Milliseconds between `ts` in a price update and now; undefined for other messages. */
const latencyOf = (frame: Buffer, now: number): number | undefined => {
  if (frame.compare(TYPE_PRICE, 0, TYPE_PRICE.length, 0, TYPE_PRICE.length) !== 0) return undefined
  let i = frame.indexOf(TS_FIELD) + TS_FIELD.length
  let ts = 0
  for (let c = frame[i]!; c >= 48 && c <= 57; c = frame[++i]!) ts = ts * 10 + (c - 48)
  return now - ts
}

const percentile = (histogram: Uint32Array, total: number, q: number): number => {
  let seen = 0
  for (let ms = 0; ms < histogram.length; ms++) {
    seen += histogram[ms]!
    if (seen >= q * total) return ms
  }
  return histogram.length
}

const connectClients = async (port: number, clients: number, perClient: number, onFrame: (frame: Buffer) => void): Promise<Array<WebSocket>> => {
  const sockets: Array<WebSocket> = []
  // In batches, so the listen backlog is never the limit.
  for (let start = 0; start < clients; start += 100) {
    await Promise.all(Array.from({ length: Math.min(100, clients - start) }, (_, k) => new Promise<void>((resolve, reject) => {
      const i = start + k
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { "x-api-key": KEY }, perMessageDeflate: false })
      const assets = Array.from({ length: perClient }, (_, j) => ASSETS[(i * 7 + j) % ASSET_COUNT]!)
      let answered = false
      ws.on("message", (data: Buffer) => {
        if (!answered) {
          answered = true
          resolve()
        }
        onFrame(data)
      })
      ws.once("open", () => ws.send(JSON.stringify({ type: "subscribe", assets })))
      ws.once("error", reject)
      sockets.push(ws)
    })))
  }
  return sockets
}

const command = (child: ChildProcess, message: Command) => child.send(message)
const nextReply = (child: ChildProcess) => new Promise<Reply>((resolve) => child.once("message", (m: Reply) => resolve(m)))

const measure = async (child: ChildProcess, port: number, load: Load, options: { clients: number; perClient: number; seconds: number }): Promise<Measurement> => {
  const histogram = new Uint32Array(10_000)
  let counting = false
  let updates = 0
  const sockets = await connectClients(port, options.clients, options.perClient, (frame) => {
    if (!counting) return
    const ms = latencyOf(frame, Date.now())
    if (ms === undefined) return
    updates++
    histogram[Math.max(0, Math.min(histogram.length - 1, ms))]!++
  })
  let closedEarly = 0
  for (const ws of sockets) ws.once("close", () => void closedEarly++)
  // Snapshots and connection work settle first.
  await new Promise((r) => setTimeout(r, 300))
  command(child, { cmd: "drive", load })
  await new Promise((r) => setTimeout(r, 1000)) // warm-up
  counting = true
  const started = performance.now()
  await new Promise((r) => setTimeout(r, options.seconds * 1000))
  counting = false
  const elapsed = (performance.now() - started) / 1000
  const stopped = nextReply(child)
  command(child, { cmd: "stop" })
  await stopped
  const early = closedEarly
  for (const ws of sockets) ws.terminate()
  await new Promise((r) => setTimeout(r, 300))
  return { updatesPerSec: updates / elapsed, p50Ms: percentile(histogram, updates, 0.5), p99Ms: percentile(histogram, updates, 0.99), clients: sockets.length, closedEarly: early }
}

const startChild = async (kind: Kind): Promise<{ child: ChildProcess; port: number }> => {
  const child = fork(fileURLToPath(import.meta.url), ["--serve", kind], { stdio: ["ignore", "inherit", "inherit", "ipc"] })
  const reply = await nextReply(child)
  if (!("ready" in reply)) throw new Error(`${kind} server did not start`)
  return { child, port: reply.ready }
}

export interface StreamFanoutResult {
  readonly saturation: { readonly bare: number; readonly stream: number; readonly ratio: number; readonly bareP99Ms: number; readonly streamP99Ms: number }
  readonly steady: { readonly bare: number; readonly stream: number; readonly bareP50Ms: number; readonly bareP99Ms: number; readonly streamP50Ms: number; readonly streamP99Ms: number }
  readonly closedEarly: number
  readonly rounds: number
}

export const measureStreamFanout = async (options: { clients: number; perClient: number; seconds: number; rounds: number }): Promise<StreamFanoutResult> => {
  const bare = await startChild("bare")
  const stream = await startChild("stream")
  try {
    const runs: Record<Load, Record<Kind, Array<Measurement>>> = { saturation: { bare: [], stream: [] }, steady: { bare: [], stream: [] } }
    for (let round = 0; round < options.rounds; round++) {
      for (const load of ["saturation", "steady"] as const) {
        runs[load].bare.push(await measure(bare.child, bare.port, load, options))
        runs[load].stream.push(await measure(stream.child, stream.port, load, options))
      }
    }
    const med = (ms: ReadonlyArray<Measurement>, f: (m: Measurement) => number) => median(ms.map(f))
    const ratios = runs.saturation.stream.map((s, i) => s.updatesPerSec / runs.saturation.bare[i]!.updatesPerSec)
    return {
      saturation: {
        bare: med(runs.saturation.bare, (m) => m.updatesPerSec), stream: med(runs.saturation.stream, (m) => m.updatesPerSec), ratio: median(ratios),
        bareP99Ms: med(runs.saturation.bare, (m) => m.p99Ms), streamP99Ms: med(runs.saturation.stream, (m) => m.p99Ms)
      },
      steady: {
        bare: med(runs.steady.bare, (m) => m.updatesPerSec), stream: med(runs.steady.stream, (m) => m.updatesPerSec),
        bareP50Ms: med(runs.steady.bare, (m) => m.p50Ms), bareP99Ms: med(runs.steady.bare, (m) => m.p99Ms),
        streamP50Ms: med(runs.steady.stream, (m) => m.p50Ms), streamP99Ms: med(runs.steady.stream, (m) => m.p99Ms)
      },
      closedEarly: [...runs.saturation.stream, ...runs.steady.stream].reduce((n, m) => n + m.closedEarly, 0),
      rounds: options.rounds
    }
  } finally {
    bare.child.disconnect()
    stream.child.disconnect()
  }
}

const RATIO_TARGET = 0.5

export const streamFanoutBenchmark: Benchmark = {
  name: "stream fan-out (1,000 WebSocket clients × 50 assets)",
  run: async (settings: BenchSettings) => {
    const r = await measureStreamFanout({ clients: 1000, perClient: 50, seconds: Math.max(2, settings.durationMs / 1500), rounds: Math.max(1, Math.min(settings.rounds, 2)) })
    const group = "stream fan-out, 1000 clients × 50 assets"
    return {
      rows: [
        { group, subject: "bare ws, saturation", rate: r.saturation.bare, unit: "updates/s", p99Ms: r.saturation.bareP99Ms },
        { group, subject: "stream hub, saturation", rate: r.saturation.stream, unit: "updates/s", p99Ms: r.saturation.streamP99Ms, ratio: r.saturation.ratio },
        { group, subject: "bare ws, 1 change/asset/s", rate: r.steady.bare, unit: "updates/s", p50Ms: r.steady.bareP50Ms, p99Ms: r.steady.bareP99Ms },
        { group, subject: "stream hub, 1 change/asset/s", rate: r.steady.stream, unit: "updates/s", p50Ms: r.steady.streamP50Ms, p99Ms: r.steady.streamP99Ms }
      ],
      checks: [
        { name: `stream fan-out >= ${RATIO_TARGET}x bare ws (updates/s at saturation)`, pass: r.saturation.ratio >= RATIO_TARGET, detail: `${r.saturation.ratio.toFixed(2)}x` },
        { name: "stream fan-out: no client closed during the runs", pass: r.closedEarly === 0, detail: `${r.closedEarly} closed` }
      ]
    }
  }
}

const arg = (argv: ReadonlyArray<string>, name: string, fallback: number): number => {
  const i = argv.indexOf(name)
  return i === -1 ? fallback : Number(argv[i + 1])
}

const main = async (argv: ReadonlyArray<string>): Promise<number> => {
  const serve = argv.indexOf("--serve")
  if (serve !== -1) {
    await runServerChild(argv[serve + 1] === "bare" ? "bare" : "stream")
    return -1
  }
  const options = { clients: arg(argv, "--clients", 1000), perClient: arg(argv, "--per-client", 50), seconds: arg(argv, "--seconds", 4), rounds: arg(argv, "--rounds", 2) }
  const r = await measureStreamFanout(options)
  if (argv.includes("--json")) console.log(JSON.stringify(r))
  else {
    const n = (x: number) => Math.round(x).toLocaleString("en-US")
    console.log(`stream fan-out: ${options.clients} clients × ${options.perClient} assets (${ASSET_COUNT} assets), ${options.seconds} s × ${options.rounds} rounds, medians`)
    console.log(`  saturation  bare ws ${n(r.saturation.bare)} updates/s (p99 ${r.saturation.bareP99Ms} ms)   stream ${n(r.saturation.stream)} updates/s (p99 ${r.saturation.streamP99Ms} ms)   ratio ${r.saturation.ratio.toFixed(2)}`)
    console.log(`  steady      bare ws ${n(r.steady.bare)} updates/s p50 ${r.steady.bareP50Ms} ms p99 ${r.steady.bareP99Ms} ms   stream ${n(r.steady.stream)} updates/s p50 ${r.steady.streamP50Ms} ms p99 ${r.steady.streamP99Ms} ms`)
    console.log(`  clients closed during the runs: ${r.closedEarly}; target ratio >= ${RATIO_TARGET}: ${r.saturation.ratio >= RATIO_TARGET ? "PASS" : "FAIL"}`)
  }
  return r.saturation.ratio >= RATIO_TARGET && r.closedEarly === 0 ? 0 : 1
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main(process.argv.slice(2)).then((code) => {
    if (code >= 0) process.exit(code)
  })
}
