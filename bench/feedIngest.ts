/**
 * Feed ingest on one core: realistic frames of all six exchanges (written by the simulators'
 * own session code, so each is byte-for-byte what that exchange's simulator sends) pushed
 * through what the feed engine does per frame (protocol.parseFrame, health accounting,
 * PriceCache.ingest), against JSON.parse alone on the same frames. Synchronous, no I/O.
 */
import { Effect } from "effect"
import type { MarketSymbol } from "../src/domain/exchanges/protocol.ts"
import { PROTOCOLS } from "../src/domain/exchanges/index.ts"
import { DEFAULT_PARAMS, type ParamName } from "../src/domain/params.ts"
import { EXCHANGES, type Exchange } from "../src/domain/price.ts"
import { ASSET_MAP_SEED } from "../src/domain/seedData.ts"
import { makeFeedHealth } from "../src/layers/feeds/FeedEngine.ts"
import { makePriceCacheMemory } from "../src/layers/PriceCacheMemory.ts"
import { Params } from "../src/services/Params.ts"
import { SIMULATORS } from "../src/simulators/index.ts"
import { makePriceBook } from "../src/simulators/randomWalk.ts"
import type { SessionIO } from "../src/simulators/simulatorServer.ts"
import type { Benchmark, BenchSettings } from "./run.ts"

export interface FeedIngestResult {
  /** Normalised ticks a second through parser and cache. */
  readonly ticksPerSec: number
  /** The same frames' ticks a second when each frame is only JSON.parse'd. */
  readonly baselinePerSec: number
  /** ticksPerSec / baselinePerSec. */
  readonly ratio: number
  readonly frames: number
  readonly ticksPerPass: number
  readonly ticksByExchange: Readonly<Record<Exchange, number>>
}

interface SampleFrame {
  readonly exchange: Exchange
  readonly raw: string
}

const SEED = 1_124
const STEP_MS = 250

/** Record `rounds` ticker pushes (and the heartbeats due meanwhile) from each exchange's simulator. */
export const sampleFrames = (rounds: number, marketsPerExchange: number): ReadonlyArray<SampleFrame> => {
  // Real time: Gate refuses a subscribe whose timestamp is a minute off the server clock.
  let clock = Date.now()
  const priceBook = makePriceBook({ seed: SEED, stepMs: STEP_MS, now: () => clock })
  const perExchange = EXCHANGES.map((exchange) => {
    const markets: ReadonlyArray<MarketSymbol> = ASSET_MAP_SEED.filter((m) => m.exchange === exchange).slice(0, marketsPerExchange)
    const bySymbol = new Map(markets.map((m) => [m.symbol, m]))
    const sent: Array<string> = []
    const protocol = PROTOCOLS[exchange]
    const url = new URL(protocol.connectUrl("ws://127.0.0.1/", markets))
    const io: SessionIO = {
      connectionId: 1,
      requestPath: `${url.pathname}${url.search}`,
      now: () => clock,
      send: (frame) => void sent.push(frame),
      close: () => {},
      after: () => () => {},
      market: (symbol) => bySymbol.get(symbol),
      markets,
      quote: (market) => priceBook.quote(exchange, market.asset, market.quote),
      heartbeatTimeoutMs: 5_000,
      record: { subscribe: () => {}, heartbeat: () => {}, heartbeatAnswer: () => {}, pingAnswered: () => {} }
    }
    const session = SIMULATORS[exchange].openSession(io)
    for (const frame of protocol.subscribeFrames(markets)) session.onFrame(frame)
    sent.length = 0 // acks and snapshots: the steady state is what is measured
    return { exchange, sent, session }
  })
  const frames: Array<SampleFrame> = []
  for (let round = 0; round < rounds; round++) {
    clock += STEP_MS
    for (const { exchange, sent, session } of perExchange) {
      session.onTick()
      if (round % 4 === 0) session.onHeartbeat?.()
      for (const raw of sent) frames.push({ exchange, raw })
      sent.length = 0
    }
  }
  return frames
}

const benchParams = Params.of({
  current: () => DEFAULT_PARAMS,
  int: (name: ParamName) => Number(DEFAULT_PARAMS[name]),
  bool: (name: ParamName) => DEFAULT_PARAMS[name] === "true",
  list: Effect.succeed([]),
  profiles: Effect.succeed({}),
  set: () => Effect.die("read-only parameters"),
  applyProfile: () => Effect.die("read-only parameters"),
  refresh: Effect.void
})

/** Run `pass` repeatedly for about `ms`; answers passes per second. */
const rate = (ms: number, pass: () => void): number => {
  let passes = 0
  const start = performance.now()
  let elapsed = 0
  while (elapsed < ms) {
    pass()
    passes++
    elapsed = performance.now() - start
  }
  return (passes * 1000) / elapsed
}

export const measureFeedIngest = (options: { readonly durationMs: number; readonly warmupMs?: number; readonly rounds?: number; readonly marketsPerExchange?: number }): FeedIngestResult => {
  const frames = sampleFrames(options.rounds ?? 20, options.marketsPerExchange ?? 50)
  const markets = new Map(EXCHANGES.map((e) => [e, new Map(ASSET_MAP_SEED.filter((m) => m.exchange === e).map((m) => [m.symbol, m] as const))]))
  const health = new Map(EXCHANGES.map((e) => [e, makeFeedHealth(e)]))
  const prices = makePriceCacheMemory(benchParams)
  prices.setMarkets(ASSET_MAP_SEED.map((m) => ({ exchange: m.exchange, asset: m.asset, quote: m.quote, usdEquivalent: m.usd_equivalent })))

  const ticksByExchange = Object.fromEntries(EXCHANGES.map((e) => [e, 0])) as Record<Exchange, number>
  let ticksPerPass = 0
  for (const f of frames) {
    const n = PROTOCOLS[f.exchange].parseFrame(f.raw, markets.get(f.exchange) ?? new Map(), Date.now()).ticks.length
    ticksByExchange[f.exchange] += n
    ticksPerPass += n
  }

  /** What the engine's message handler does per frame, minus the socket. */
  const ingestPass = () => {
    const now = Date.now()
    for (const f of frames) {
      const h = health.get(f.exchange)
      h?.recordFrame(now)
      const parsed = PROTOCOLS[f.exchange].parseFrame(f.raw, markets.get(f.exchange) ?? new Map(), now)
      for (const tick of parsed.ticks) {
        h?.recordTick(tick)
        prices.ingest(tick)
      }
    }
  }
  let sink = 0
  const baselinePass = () => {
    for (const f of frames) {
      try {
        if (JSON.parse(f.raw) !== null) sink++
      } catch {
        // Non-JSON frames (OKX's "pong") cost the baseline nothing further.
      }
    }
  }

  const warmupMs = options.warmupMs ?? Math.min(500, options.durationMs / 4)
  rate(warmupMs, ingestPass)
  rate(warmupMs, baselinePass)
  const ingestPasses = rate(options.durationMs, ingestPass)
  const baselinePasses = rate(options.durationMs, baselinePass)
  // Keep the baseline's result observable so it cannot be optimised away.
  if (sink < 0) console.log(sink)
  const ticksPerSec = ingestPasses * ticksPerPass
  const baselinePerSec = baselinePasses * ticksPerPass
  return { ticksPerSec, baselinePerSec, ratio: ticksPerSec / baselinePerSec, frames: frames.length, ticksPerPass, ticksByExchange }
}

export const feedIngestBenchmark: Benchmark = {
  name: "feed ingest (one core)",
  run: async (settings: BenchSettings) => {
    const r = measureFeedIngest({ durationMs: settings.durationMs / 2, warmupMs: settings.warmupMs })
    const group = "feed ingest, 1 core"
    const silent = EXCHANGES.filter((e) => r.ticksByExchange[e] === 0)
    return {
      rows: [
        { group, subject: "JSON.parse only", rate: r.baselinePerSec, unit: "ticks/s", note: `${r.frames} frames, ${r.ticksPerPass} ticks, 6 exchanges` },
        { group, subject: "parseFrame + PriceCache.ingest", rate: r.ticksPerSec, unit: "ticks/s", ratio: r.ratio }
      ],
      checks: [{ name: "feed ingest: every exchange's frames yield ticks", pass: silent.length === 0, detail: silent.length === 0 ? `${r.ticksPerPass} ticks per pass` : `none from ${silent.join(", ")}` }]
    }
  }
}
