import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Exit, Layer, Redacted, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"
import { mkdtempSync, readdirSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import { DEFAULT_PARAMS, type ParamName, type ParamValues } from "../src/domain/params.ts"
import { UsageBatchJson, type UsageRow } from "../src/domain/usage.ts"
import { migrate } from "../src/layers/migrations/index.ts"
import { UsageSinkLive } from "../src/layers/UsageSinkLive.ts"
import { UsageWriterDatabase } from "../src/layers/UsageWriterDatabase.ts"
import { Params } from "../src/services/Params.ts"
import { UsageSink, UsageWriteError, UsageWriter } from "../src/services/UsageSink.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"
import { testAppConfig } from "./support/config.ts"

const makeRow = (createdAt = Date.now()): UsageRow => ({
  id: randomUUID(),
  request_id: `req-${randomUUID()}`,
  api_key_id: randomUUID(),
  service: "LPO",
  protocol: "http",
  endpoint: "/price",
  asset: "BTC",
  quote: "USD",
  source: null,
  price: 97_000.125,
  status_code: 200,
  error_code: null,
  latency_us: 42,
  client_ip: "127.0.0.1",
  node: "test-node",
  region: "local",
  bytes_out: 512,
  created_at: createdAt
})

/** A UsageWriter that records every successful batch and can be made to fail. */
const makeFakeWriter = () => {
  const batches: Array<ReadonlyArray<UsageRow>> = []
  let failing = false
  let attempts = 0
  const writer = UsageWriter.of({
    kind: "database",
    write: (rows) =>
      Effect.suspend(() => {
        attempts++
        if (failing) return Effect.fail(new UsageWriteError({ reason: "Database", message: "writer down (test)" }))
        batches.push([...rows])
        return Effect.void
      })
  })
  return {
    layer: Layer.succeed(UsageWriter, writer),
    batches,
    attempts: () => attempts,
    setFailing: (f: boolean) => void (failing = f),
    writtenIds: () => batches.flatMap((b) => b.map((r) => r.id))
  }
}

const testParams = (overrides: Partial<Record<ParamName, string>>) => {
  const values: ParamValues = { ...DEFAULT_PARAMS, ...overrides }
  return Layer.succeed(Params, Params.of({
    current: () => values,
    int: (name) => Number(values[name]),
    bool: (name) => values[name] === "true",
    list: Effect.succeed([]),
    profiles: Effect.succeed({}),
    set: () => Effect.succeed(values),
    applyProfile: () => Effect.succeed(values),
    refresh: Effect.void
  }))
}

const testConfig = (dataDir: string) => testAppConfig({ dataDir })

/** Build a sink in its own scope, so a test can shut it down (close the scope) when it chooses. */
const startSink = (writer: Layer.Layer<UsageWriter>, params: Partial<Record<ParamName, string>>, dataDir: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const layer = UsageSinkLive.pipe(Layer.provide(Layer.mergeAll(writer, testParams(params), testConfig(dataDir))))
    const context = yield* Layer.buildWithScope(layer, scope)
    return { sink: Context.get(context, UsageSink), shutdown: Scope.close(scope, Exit.void) }
  })

const eventually = (check: () => boolean, timeoutMs = 5_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!check() && Date.now() < deadline) yield* Effect.sleep("10 millis")
    return check()
  })

const spoolDir = (dataDir: string) => join(dataDir, "spool")
const spoolFiles = (dataDir: string) => readdirSync(spoolDir(dataDir)).filter((f) => f.endsWith(".json"))
const spooledIds = (dataDir: string) =>
  spoolFiles(dataDir).flatMap((f) => Schema.decodeUnknownSync(UsageBatchJson)(readFileSync(join(spoolDir(dataDir), f), "utf8")).rows.map((r) => r.id))

const newDataDir = () => mkdtempSync(join(tmpdir(), "tb-usage-sink-"))

/** Every id written exactly once, and exactly the expected ones. */
const assertExactlyOnce = (written: ReadonlyArray<string>, expected: ReadonlyArray<string>) => {
  assert.strictEqual(new Set(written).size, written.length, "an id was written twice")
  assert.deepStrictEqual([...written].sort(), [...expected].sort())
}

describe("UsageSinkLive", () => {
  it.live("writes a full batch as soon as usage_batch_size rows are buffered (size trigger)", () =>
    Effect.gen(function*() {
      const writer = makeFakeWriter()
      const dataDir = newDataDir()
      const { sink, shutdown } = yield* startSink(writer.layer, { usage_batch_size: "100", usage_flush_ms: "60000", usage_buffer_max_rows: "1000" }, dataDir)
      const rows = Array.from({ length: 100 }, () => makeRow())
      for (const r of rows) sink.record(r)
      assert.isTrue(yield* eventually(() => writer.batches.length === 1, 2_000), "the full batch was not written before the (one minute) timer")
      assert.deepStrictEqual(writer.batches.map((b) => b.length), [100])
      // Fewer than a batch: nothing is written while the timer has not fired.
      const rest = Array.from({ length: 30 }, () => makeRow())
      for (const r of rest) sink.record(r)
      yield* Effect.sleep("300 millis")
      assert.deepStrictEqual(writer.batches.map((b) => b.length), [100])
      assert.strictEqual(sink.stats().buffered, 30)
      // Shutdown flushes the partial batch.
      yield* shutdown
      assert.deepStrictEqual(writer.batches.map((b) => b.length), [100, 30])
      assertExactlyOnce(writer.writtenIds(), [...rows, ...rest].map((r) => r.id))
    }))

  it.live("writes fewer rows than a batch once usage_flush_ms has passed (timer trigger)", () =>
    Effect.gen(function*() {
      const writer = makeFakeWriter()
      const { sink } = yield* startSink(writer.layer, { usage_batch_size: "1000", usage_flush_ms: "400", usage_buffer_max_rows: "5000" }, newDataDir())
      // Let the first timer cycle start, then record: the rows wait for the timer, not for a full batch.
      yield* Effect.sleep("50 millis")
      const rows = Array.from({ length: 25 }, () => makeRow())
      for (const r of rows) sink.record(r)
      yield* Effect.sleep("100 millis")
      assert.strictEqual(writer.batches.length, 0, "written before usage_flush_ms")
      assert.isTrue(yield* eventually(() => writer.batches.length === 1, 2_000), "not written after usage_flush_ms")
      assert.deepStrictEqual(writer.batches.map((b) => b.length), [25])
      assertExactlyOnce(writer.writtenIds(), rows.map((r) => r.id))
      assert.strictEqual(sink.stats().written, 25)
    }))

  it.live("holds rows while the writer fails, spills beyond usage_buffer_max_rows, then writes everything exactly once", () =>
    Effect.gen(function*() {
      const writer = makeFakeWriter()
      writer.setFailing(true)
      const dataDir = newDataDir()
      const { sink, shutdown } = yield* startSink(writer.layer, { usage_batch_size: "100", usage_flush_ms: "20", usage_buffer_max_rows: "1000" }, dataDir)
      const rows = Array.from({ length: 600 }, () => makeRow())
      for (const r of rows) sink.record(r)
      assert.isTrue(yield* eventually(() => writer.attempts() >= 2), "the writer was not retried")
      // Held in memory, not dropped and not yet spilled.
      assert.strictEqual(sink.stats().buffered, 600)
      assert.deepStrictEqual(spoolFiles(dataDir), [])
      assert.strictEqual(writer.batches.length, 0)
      // Past the memory bound the oldest rows go to disk.
      const more = Array.from({ length: 900 }, () => makeRow())
      for (const r of more) sink.record(r)
      const all = [...rows, ...more].map((r) => r.id)
      assert.isAbove(spoolFiles(dataDir).length, 0)
      assert.isBelow(sink.stats().buffered, 1000)
      const spooled = spooledIds(dataDir)
      assert.strictEqual(sink.stats().buffered + spooled.length, all.length)
      // The oldest rows are the ones spilled.
      assertExactlyOnce(spooled, all.slice(0, spooled.length))
      // The writer recovers: buffer and spool are both written, each row once, and the spool empties.
      writer.setFailing(false)
      assert.isTrue(yield* eventually(() => writer.writtenIds().length >= all.length, 10_000), `written ${writer.writtenIds().length} of ${all.length}`)
      assert.isTrue(yield* eventually(() => spoolFiles(dataDir).length === 0))
      yield* Effect.sleep("100 millis")
      assertExactlyOnce(writer.writtenIds(), all)
      assert.isTrue(writer.batches.every((b) => b.length <= 1000))
      const stats = sink.stats()
      assert.strictEqual(stats.buffered, 0)
      assert.strictEqual(stats.replayed, stats.spooled)
      yield* shutdown
      assertExactlyOnce(writer.writtenIds(), all)
    }), 20_000)

  it.live("a shutdown with the writer down leaves every row in the spool; the next sink replays them at start", () =>
    Effect.gen(function*() {
      const dataDir = newDataDir()
      const down = makeFakeWriter()
      down.setFailing(true)
      const first = yield* startSink(down.layer, { usage_batch_size: "50", usage_flush_ms: "20", usage_buffer_max_rows: "1000" }, dataDir)
      const rows = Array.from({ length: 175 }, () => makeRow())
      for (const r of rows) first.sink.record(r)
      assert.isTrue(yield* eventually(() => down.attempts() >= 1))
      yield* first.shutdown
      assert.strictEqual(down.batches.length, 0)
      assertExactlyOnce(spooledIds(dataDir), rows.map((r) => r.id))

      const up = makeFakeWriter()
      const second = yield* startSink(up.layer, { usage_batch_size: "50", usage_flush_ms: "60000", usage_buffer_max_rows: "1000" }, dataDir)
      // Replayed during start-up, before the timer could have fired.
      assertExactlyOnce(up.writtenIds(), rows.map((r) => r.id))
      assert.deepStrictEqual(spoolFiles(dataDir), [])
      assert.strictEqual(second.sink.stats().replayed, rows.length)
      yield* second.shutdown
      assertExactlyOnce(up.writtenIds(), rows.map((r) => r.id))
    }))
})

describe("UsageWriterDatabase (real PostgreSQL)", () => {
  const dbUrl = freshDatabase("usage_writer")
  afterAll(() => dropDatabase(dbUrl))
  const PgLive = PgClient.layer({ url: Redacted.make(dbUrl), maxConnections: 2 })

  it.live("inserts 5000 rows in one write, and the same batch again adds none", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* migrate
      const writer = yield* UsageWriter
      const count = sql<{ n: number }>`SELECT count(*)::int AS n FROM usage_logs`.pipe(Effect.map((r) => r[0]?.n ?? -1))
      // Mostly today, a few far in the past (the default partition).
      const rows = Array.from({ length: 5000 }, (_, i) => makeRow(i % 1000 === 0 ? Date.UTC(2020, 0, 1) : Date.now() - i))
      assert.strictEqual(yield* count, 0)
      yield* writer.write(rows)
      assert.strictEqual(yield* count, 5000)
      yield* writer.write(rows)
      assert.strictEqual(yield* count, 5000)
      // One more new row next to the duplicates is still added.
      const extra = makeRow()
      yield* writer.write([...rows.slice(0, 10), extra])
      assert.strictEqual(yield* count, 5001)
      const sample = rows[1234]!
      const stored = yield* sql<{ id: string; request_id: string; price: number; created_at: Date; latency_us: number }>`
        SELECT id::text AS id, request_id, price, created_at, latency_us FROM usage_logs WHERE id = ${sample.id}`
      assert.strictEqual(stored.length, 1)
      assert.strictEqual(stored[0]?.request_id, sample.request_id)
      assert.strictEqual(stored[0]?.price, sample.price)
      assert.strictEqual(stored[0]?.latency_us, sample.latency_us)
      assert.strictEqual(stored[0]?.created_at.getTime(), sample.created_at)
    }).pipe(Effect.provide(UsageWriterDatabase.pipe(Layer.provideMerge(PgLive)))), 30_000)
})
