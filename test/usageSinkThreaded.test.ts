import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Exit, Layer, Option, Redacted, Scope } from "effect"
import { execFileSync, spawn } from "node:child_process"
import { randomFillSync, randomUUID } from "node:crypto"
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Worker } from "node:worker_threads"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { COUNTER } from "../src/domain/runtimeCounters.ts"
import { makeUsageChunkBuilder, type UsageChunk, type UsageFacts } from "../src/domain/usageChunk.ts"
import { migrate } from "../src/layers/migrations/index.ts"
import { UsageSinkThreaded } from "../src/layers/usage/UsageSinkThreaded.ts"
import { DatabaseInfo } from "../src/services/Database.ts"
import { Params } from "../src/services/Params.ts"
import { RuntimeStatsLive } from "../src/layers/RuntimeStatsLive.ts"
import { RuntimeStats } from "../src/services/RuntimeStats.ts"
import { ServerInfo } from "../src/services/ServerInfo.ts"
import { UsageSink } from "../src/services/UsageSink.ts"
import { testAppConfig } from "./support/config.ts"
import { changeableParams, testParams } from "./support/params.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"

const dbUrl = freshDatabase("usage_thread")
/** A database without the tables: every insert into it fails. */
const emptyDbUrl = freshDatabase("usage_thread_no_tables")
const dataDir = mkdtempSync(join(tmpdir(), "tb-usage-thread-"))

const countRows = (node: string) =>
  Number(execFileSync("psql", [dbUrl, "-qAt", "-c", `SELECT count(*) FROM usage_logs WHERE node = '${node}'`], { encoding: "utf8" }).trim())

/** Rows of one key: rows without one are capped per client address (see the anonymous-row tests). */
const KEY_ID = randomUUID()

const facts = (i: number): UsageFacts => ({
  requestId: randomUUID(), apiKeyId: KEY_ID, service: "LPO", protocol: i % 2 === 0 ? "http" : "udp",
  endpoint: "/price", asset: i % 5 === 0 ? "NOT\"A\nCOIN" : "BTC", quote: "USD", price: i % 5 === 0 ? undefined : 97_000 + i,
  code: i % 5 === 0 ? "UNKNOWN_ASSET" : "OK", latencyUs: i, clientIp: "127.0.0.1", bytesOut: 600, createdAt: Date.now()
})

/** The serving side of the sink of node `node`, its thread writing to the test database. */
const startSink = (node: string, params = testParams({ usage_flush_ms: "50" })) => Effect.gen(function*() {
  const scope = yield* Scope.make()
  const layer = UsageSinkThreaded.pipe(Layer.provideMerge(Layer.mergeAll(
    testAppConfig({ dataDir, databaseUrl: Option.some(Redacted.make(dbUrl)) }),
    params,
    RuntimeStatsLive,
    Layer.succeed(DatabaseInfo, DatabaseInfo.of({ kind: "postgres" })),
    Layer.succeed(ServerInfo, ServerInfo.of({ node, region: "local", version: "test" }))
  )))
  const context = yield* Layer.buildWithScope(layer, scope)
  return {
    sink: Context.get(context, UsageSink),
    params: Context.get(context, Params),
    counters: Context.get(context, RuntimeStats),
    shutdown: Scope.close(scope, Exit.void)
  }
})

beforeAll(async () => {
  await Effect.runPromise(migrate.pipe(Effect.provide(PgClient.layer({ url: Redacted.make(dbUrl) })), Effect.scoped))
}, 60_000)

afterAll(() => {
  dropDatabase(dbUrl)
  dropDatabase(emptyDbUrl)
  rmSync(dataDir, { recursive: true, force: true })
})

/** A usage thread writing to `databaseUrl` with its spool in `dataDir`; it is sent `chunk` as seq 7. */
const startUsageThread = async (databaseUrl: string, dataDir: string, chunk: UsageChunk | undefined) => {
  const thread = new Worker(new URL("../src/programs/usageThread.ts", import.meta.url), {
    workerData: { params: { usage_flush_ms: "20" } },
    env: { ...process.env, DATABASE_URL: databaseUrl, DATA_DIR: dataDir }
  })
  const acks: Array<number> = []
  thread.on("message", (m: { type: string; seq?: number }) => void (m.type === "ack" && m.seq !== undefined && acks.push(m.seq)))
  await new Promise<void>((resolve) => thread.on("message", (m: { type: string }) => m.type === "ready" && resolve()))
  if (chunk !== undefined) thread.postMessage({ type: "rows", seq: 7, chunk })
  return { thread, acks }
}

const chunkOfNode = (node: string, rows: number) => {
  const builder = makeUsageChunkBuilder({ capacity: rows, node, region: "local", requestTag: "t", fillRandom: randomFillSync })
  for (let i = 0; i < rows; i++) builder.record(facts(i))
  return builder.take()
}

describe("UsageSinkThreaded (usage thread, real PostgreSQL)", () => {
  it("every row recorded reaches the database, the last ones through the shutdown flush", async () => {
    const node = "thread-a"
    const written = await Effect.runPromise(Effect.gen(function*() {
      const { sink, shutdown } = yield* startSink(node)
      for (let i = 0; i < 3_000; i++) sink.record(facts(i))
      yield* Effect.sleep("300 millis")
      // Written while serving, not only at the end; then more rows, and stop at once.
      const whileServing = sink.stats().written
      for (let i = 3_000; i < 3_700; i++) sink.record(facts(i))
      yield* shutdown
      return whileServing
    }))
    expect(written).toBeGreaterThan(0)
    expect(countRows(node)).toBe(3_700)
  }, 60_000)

  // (PostgreSQL text cannot hold NUL; the HTTP and UDP parsers refuse it before a row exists.)
  it("rows with hostile text survive the trip between threads", async () => {
    const node = "thread-b"
    await Effect.runPromise(Effect.gen(function*() {
      const { sink, shutdown } = yield* startSink(node)
      sink.record({ ...facts(0), endpoint: "/\u2028\"'\\\n", asset: "é\u{1F600}" })
      yield* shutdown
    }))
    const asset = execFileSync("psql", [dbUrl, "-qAt", "-c", `SELECT asset FROM usage_logs WHERE node = '${node}'`], { encoding: "utf8" }).trim()
    expect(asset).toBe("é\u{1F600}")
  }, 60_000)

  it("the usage thread acknowledges a chunk only once its rows are in the database, so a thread that dies before loses none", async () => {
    const node = "thread-c"
    const chunk = chunkOfNode(node, 300)
    // A transaction holding usage_logs: the thread's insert waits behind it.
    const locker = spawn("psql", [dbUrl, "-qAt"], { stdio: ["pipe", "ignore", "ignore"] })
    locker.stdin.write("BEGIN; LOCK TABLE usage_logs IN ACCESS EXCLUSIVE MODE; SELECT 1;\n")
    const startThread = () => startUsageThread(dbUrl, mkdtempSync(join(tmpdir(), "tb-usage-thread-c-")), chunk)
    const first = await startThread()
    await new Promise((r) => setTimeout(r, 1_000))
    const ackedWhileLocked = [...first.acks]
    // The thread dies with the rows in hand; the serving thread still holds the chunk and sends it again.
    await first.thread.terminate()
    locker.stdin.end("ROLLBACK;\n")
    const second = await startThread()
    for (let waited = 0; second.acks.length === 0 && waited < 10_000; waited += 50) await new Promise((r) => setTimeout(r, 50))
    await second.thread.terminate()
    expect({ ackedWhileLocked, ackedAfter: second.acks, rows: countRows(node) }).toEqual({ ackedWhileLocked: [], ackedAfter: [7], rows: 300 })
  }, 60_000)

  it("a chunk the writer refuses is in the spool before it is acknowledged, so a thread that dies after the acknowledgement loses none", async () => {
    const node = "thread-d"
    const threadDataDir = mkdtempSync(join(tmpdir(), "tb-usage-thread-d-"))
    // The insert fails (no usage_logs there): the chunk goes to the fallback and is acknowledged.
    const first = await startUsageThread(emptyDbUrl, threadDataDir, chunkOfNode(node, 300))
    for (let waited = 0; first.acks.length === 0 && waited < 10_000; waited += 50) await new Promise((r) => setTimeout(r, 50))
    const ackedByFailingThread = [...first.acks]
    // The serving thread has let the chunk go; this thread dies before writing it anywhere else.
    await first.thread.terminate()
    const spoolDir = join(threadDataDir, "spool")
    const spooledFiles = existsSync(spoolDir) ? readdirSync(spoolDir).filter((f) => f.endsWith(".ndjson")).length : 0
    // A new thread on a working database replays the spool.
    const second = await startUsageThread(dbUrl, threadDataDir, undefined)
    for (let waited = 0; countRows(node) < 300 && waited < 15_000; waited += 100) await new Promise((r) => setTimeout(r, 100))
    await second.thread.terminate()
    expect({ ackedByFailingThread, spooledFiles, rows: countRows(node) }).toEqual({ ackedByFailingThread: [7], spooledFiles: 1, rows: 300 })
    rmSync(threadDataDir, { recursive: true, force: true })
  }, 60_000)

  it("writes rows without a valid key up to anonymous_rows_per_ip_per_s per client address per second, read live; counts the rest; keyed and served admin rows always", async () => {
    const node = "thread-e"
    const second = Math.floor(Date.now() / 1000) * 1000
    const anonymous = (clientIp: string, createdAt: number): UsageFacts => ({ ...facts(1), apiKeyId: undefined, price: undefined, code: "INVALID_API_KEY", clientIp, createdAt })
    const dropped = await Effect.runPromise(Effect.gen(function*() {
      const { sink, params, counters, shutdown } = yield* startSink(node, changeableParams({ usage_flush_ms: "50", anonymous_rows_per_ip_per_s: "3" }).layer)
      for (let i = 0; i < 20; i++) {
        sink.record(anonymous("10.0.0.1", second + i))
        sink.record(anonymous("10.0.0.2", second + i))
        sink.record({ ...anonymous("10.0.0.1", second + i), service: "ADMIN", endpoint: "/admin/keys", code: "OK" })
        sink.record({ ...facts(i), clientIp: "10.0.0.1", createdAt: second + i })
      }
      for (let i = 0; i < 20; i++) sink.record(anonymous("10.0.0.1", second + 1000 + i))
      yield* params.set({ anonymous_rows_per_ip_per_s: "5" })
      for (let i = 0; i < 20; i++) sink.record(anonymous("10.0.0.3", second + 2000 + i))
      yield* shutdown
      return counters.values[COUNTER.anonymous_rows_dropped]
    }))
    const rows = execFileSync("psql", [dbUrl, "-qAt", "-F", " ", "-c", `
      SELECT client_ip, service, api_key_id IS NOT NULL, floor(extract(epoch FROM created_at))::bigint - ${second / 1000}, count(*)
      FROM usage_logs WHERE node = '${node}' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4`], { encoding: "utf8" }).trim().split("\n")
    expect({ rows, dropped }).toEqual({
      rows: ["10.0.0.1 ADMIN f 0 20", "10.0.0.1 LPO f 0 3", "10.0.0.1 LPO f 1 3", "10.0.0.1 LPO t 0 20", "10.0.0.2 LPO f 0 3", "10.0.0.3 LPO f 2 5"],
      dropped: 17 + 17 + 17 + 15
    })
  }, 60_000)
})
