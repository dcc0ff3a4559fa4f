/**
 * The UDP price handler's own cost on the serving thread, without the kernel: the real handler
 * (makeUdpPriceHandler) over the real services of `tb serve` (API keys in the embedded PostgreSQL,
 * the rate limiter with a metered `loadtest` key, the price cache, the threaded usage sink writing
 * every row), fed prebuilt datagrams in a loop, answering into a socket stand-in that only checks
 * the reply. Run as its own process (it sets its own environment):
 *
 *   node dist/bench/udpHandler.js [--rounds 30] [--datagrams 20000] [--json]
 *
 * Prints the serving thread's CPU time per datagram (median over the rounds; the other threads'
 * work is not in it), and checks that every reply was `ok` and every datagram became a usage row
 * in the database.
 */
import { Effect, Layer } from "effect"
import type { RemoteInfo } from "node:dgram"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { pathToFileURL } from "node:url"
import { median } from "../src/domain/consensus.ts"

export interface UdpHandlerResult {
  /** CPU time of the serving thread per datagram, median over the rounds (other threads' work does not count). */
  readonly cpuNsPerDatagram: number
  /** Wall time per datagram, median over the rounds: the serving thread shares the cores with the usage thread and the database. */
  readonly wallNsPerDatagram: number
  readonly datagrams: number
  readonly okReplies: number
  readonly usageRows: number
}

const argValue = (argv: ReadonlyArray<string>, flag: string, fallback: number): number => {
  const at = argv.indexOf(flag)
  const value = at >= 0 ? Number(argv[at + 1]) : fallback
  return Number.isInteger(value) && value > 0 ? value : fallback
}

const OK_PREFIX = Buffer.from('{"ok":true')
const SOURCES = 8
const MESSAGES = 4_096

export const measureUdpHandler = async (rounds: number, perRound: number): Promise<UdpHandlerResult> => {
  const dataDir = mkdtempSync(join(tmpdir(), "tb-bench-udp-handler-"))
  for (const name of ["DATABASE_URL", "DATABASE_READER_URL", "VALKEY_URL", "CACHE_URL", "SQS_QUEUE_URL", "DB_SECRET_NAME"]) delete process.env[name]
  Object.assign(process.env, { DATA_DIR: dataDir, LOG_LEVEL: "Warn", NODE_ID: "bench-udp-handler", FEEDS: "simulated" })
  // Imported after the environment is set: the layers read it when built.
  const { KeysLive, ServerInfoLive } = await import("../src/programs/layers.ts")
  const { RateLimiterLive } = await import("../src/layers/RateLimiterLive.ts")
  const { PriceCacheMemory } = await import("../src/layers/PriceCacheMemory.ts")
  const { UsageSinkThreaded } = await import("../src/layers/usage/UsageSinkThreaded.ts")
  const { ApiKeys } = await import("../src/services/ApiKeys.ts")
  const { Params } = await import("../src/services/Params.ts")
  const { PriceCache } = await import("../src/services/PriceCache.ts")
  const { RateLimiter } = await import("../src/services/RateLimiter.ts")
  const { RuntimeStats } = await import("../src/services/RuntimeStats.ts")
  const { RuntimeStatsLive } = await import("../src/layers/RuntimeStatsLive.ts")
  const { UsageSink } = await import("../src/services/UsageSink.ts")
  const { COUNTER } = await import("../src/domain/runtimeCounters.ts")
  const { makeUdpPriceHandler } = await import("../src/programs/lpo/udpPriceHandler.ts")
  const { SqlClient } = await import("effect/sql")

  const live = UsageSinkThreaded.pipe(
    Layer.provideMerge(Layer.mergeAll(RateLimiterLive, PriceCacheMemory, RuntimeStatsLive, ServerInfoLive)),
    Layer.provideMerge(KeysLive)
  )
  const program = Effect.gen(function*() {
    const apiKeys = yield* ApiKeys
    const prices = yield* PriceCache
    const stats = yield* RuntimeStats
    const created = yield* apiKeys.create({ tier: "loadtest" })
    yield* apiKeys.reload
    const exchanges = ["coinbase", "kraken", "gemini"] as const
    prices.setMarkets(exchanges.map((exchange) => ({ exchange, asset: "BTC", quote: "USD", usdEquivalent: false })))
    const freshTicks = () => {
      const now = Date.now()
      exchanges.forEach((exchange, i) =>
        prices.ingest({ exchange, asset: "BTC", quote: "USD", last: 97_000 + i, bid: 96_999 + i, ask: 97_001 + i, exchangeTs: now, receivedAt: now })
      )
    }
    const handler = makeUdpPriceHandler({
      apiKeys, limiter: yield* RateLimiter, prices, params: yield* Params, stats, usage: yield* UsageSink
    })
    const messages = Array.from({ length: MESSAGES }, (_, i) => Buffer.from(`v1 price ${created.key} BTC ${i}`, "latin1"))
    // Distinct string objects, as dgram makes a new address string for every datagram.
    const addresses = Array.from({ length: MESSAGES }, () => ["127", "0", "0", "1"].join("."))
    let ok = 0
    const socket = { send: (reply: Uint8Array) => void (OK_PREFIX.equals(reply.subarray(0, OK_PREFIX.length)) && ok++) }
    let sent = 0
    const round = (): { readonly cpu: number; readonly wall: number } => {
      freshTicks()
      const start = process.hrtime.bigint()
      const cpuStart = process.threadCpuUsage()
      for (let i = 0; i < perRound; i++, sent++) {
        const k = sent % MESSAGES
        const rinfo: RemoteInfo = { address: addresses[k]!, family: "IPv4", port: 40_000 + (sent % SOURCES), size: messages[k]!.length }
        handler.onMessage(socket, messages[k]!, rinfo)
      }
      const cpu = process.threadCpuUsage(cpuStart)
      return { cpu: ((cpu.user + cpu.system) * 1000) / perRound, wall: Number(process.hrtime.bigint() - start) / perRound }
    }
    round() // warm-up: JIT and the first key lookup
    const cpuTimes: Array<number> = []
    const wallTimes: Array<number> = []
    for (let r = 0; r < rounds; r++) {
      const { cpu, wall } = round()
      cpuTimes.push(cpu)
      wallTimes.push(wall)
      // Between rounds the usage thread catches up, so a round measures serving, not the spill
      // of a backlog (rows the writer cannot take in time go to the spool, on this thread).
      const usage = yield* UsageSink
      for (let waited = 0; usage.stats().buffered > perRound && waited < 10_000; waited += 5) yield* Effect.sleep("5 millis")
    }
    // Every row written before the sink stops (rows left at shutdown would go to the spool).
    const usage = yield* UsageSink
    for (let waited = 0; usage.stats().buffered > 0 && waited < 120_000; waited += 50) yield* Effect.sleep("50 millis")
    return { cpuTimes, wallTimes, sent, ok, recorded: stats.values[COUNTER.usage_rows_recorded] ?? 0 }
  })
  try {
    const measured = await Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(live)))
    // The sink flushed when its scope closed: count the rows in the database.
    const counted = await Effect.runPromise(
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql<{ n: string }>`SELECT count(*) AS n FROM usage_logs WHERE node = 'bench-udp-handler'`
        return Number(rows[0]?.n ?? 0)
      }).pipe(Effect.scoped, Effect.provide(KeysLive))
    )
    return {
      cpuNsPerDatagram: median(measured.cpuTimes),
      wallNsPerDatagram: median(measured.wallTimes),
      datagrams: measured.sent,
      okReplies: measured.ok,
      usageRows: counted
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true })
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const argv = process.argv.slice(2)
  const result = await measureUdpHandler(argValue(argv, "--rounds", 30), argValue(argv, "--datagrams", 5_000))
  if (argv.includes("--json")) console.log(JSON.stringify(result))
  else {
    console.log(`UDP handler: ${result.cpuNsPerDatagram.toFixed(0)} ns of serving-thread CPU per datagram (median; wall ${result.wallNsPerDatagram.toFixed(0)} ns)`)
    console.log(`${result.datagrams} datagrams, ${result.okReplies} ok replies, ${result.usageRows} usage rows`)
  }
  process.exit(0)
}
