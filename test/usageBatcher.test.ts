import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Exit, Layer, Logger, Option, Redacted, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { ParamName } from "../src/domain/params.ts"
import { USAGE_COLUMNS, UsageBatchJson, type UsageRow } from "../src/domain/usage.ts"
import { rowsOfChunk, type UsageFacts } from "../src/domain/usageChunk.ts"
import { migrate } from "../src/layers/migrations/index.ts"
import { UsageBatcherLive } from "../src/layers/UsageBatcherLive.ts"
import { makeSpool, usageSpoolDir } from "../src/layers/usageSpool.ts"
import { startEmbeddedPostgres } from "../src/layers/EmbeddedPostgres.ts"
import { UsageWriterDatabase } from "../src/layers/UsageWriterDatabase.ts"
import { Params } from "../src/services/Params.ts"
import { UsageBatcher, UsageWriteError, UsageWriter } from "../src/services/UsageSink.ts"
import { freshPgLayer } from "./support/services.ts"
import fc from "fast-check"
import { randomChunkOf, sameFactsArb, usageFactsArb, usageRow } from "./support/usageFacts.ts"
import { testAppConfig } from "./support/config.ts"
import { testParams } from "./support/params.ts"

const makeRow = (createdAt = Date.now()): UsageRow =>
  usageRow({ source: null, price: 97_000.125, latency_us: 42, client_ip: "127.0.0.1", node: "test-node", bytes_out: 512, created_at: createdAt })

/** How the fake writer answers: write, fail (typed error), die (a rejected promise) or never answer. */
type WriterMode = "ok" | "fail" | "reject" | "hang" | "slow"

/** A UsageWriter that records every successful batch and can be made to fail. */
const makeFakeWriter = () => {
  const batches: Array<ReadonlyArray<UsageRow>> = []
  let mode: WriterMode = "ok"
  let attempts = 0
  const writer = UsageWriter.of({
    kind: "database",
    write: (rows) =>
      Effect.suspend(() => {
        attempts++
        switch (mode) {
          case "fail":
            return Effect.fail(new UsageWriteError({ reason: "Database", message: "writer down (test)" }))
          case "reject":
            return Effect.promise(() => Promise.reject(new Error("writer bug (test)")))
          case "hang":
            return Effect.never
          case "slow": {
            // Like a network send: once started it lands after 150 ms, whether or not the
            // caller stops waiting for it (interruption does not take it back).
            const sent = [...rows]
            return Effect.promise(() => new Promise<void>((resolve) => setTimeout(() => {
              batches.push(sent)
              resolve()
            }, 150)))
          }
          case "ok":
            batches.push([...rows])
            return Effect.void
        }
      }),
    // The batcher writes rows only; chunks are the usage thread's forwarder's.
    writeChunks: () => Effect.die("the batcher does not write chunks")
  })
  return {
    layer: Layer.succeed(UsageWriter, writer),
    batches,
    attempts: () => attempts,
    setFailing: (f: boolean) => void (mode = f ? "fail" : "ok"),
    setMode: (m: WriterMode) => void (mode = m),
    writtenIds: () => batches.flatMap((b) => b.map((r) => r.id))
  }
}


interface BatcherOptions {
  readonly params?: Layer.Layer<Params>
  readonly shutdownTimeoutMs?: number
  readonly logs?: Array<{ readonly level: string; readonly text: string }>
}

/** Build a batcher in its own scope, so a test can shut it down (close the scope) when it chooses. */
const startBatcher = (writer: Layer.Layer<UsageWriter>, params: Partial<Record<ParamName, string>>, dataDir: string, options: BatcherOptions = {}) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const logs = options.logs
    const logger = logs === undefined
      ? Layer.empty
      : Logger.layer([Logger.make(({ logLevel, message }) => {
        const text = (Array.isArray(message) ? message : [message]).map((m) => typeof m === "string" ? m : JSON.stringify(m)).join(" ")
        logs.push({ level: logLevel, text })
      })])
    const config = testAppConfig(options.shutdownTimeoutMs === undefined ? { dataDir } : { dataDir, shutdownTimeoutMs: options.shutdownTimeoutMs })
    const layer = UsageBatcherLive.pipe(Layer.provide(Layer.mergeAll(writer, options.params ?? testParams(params), config, logger)))
    const context = yield* Layer.buildWithScope(layer, scope)
    return { batcher: Context.get(context, UsageBatcher), shutdown: Scope.close(scope, Exit.void) }
  })

const eventually = (check: () => boolean, timeoutMs = 5_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!check() && Date.now() < deadline) yield* Effect.sleep("10 millis")
    return check()
  })

const spoolDir = (dataDir: string) => join(dataDir, "spool")
const spoolFiles = (dataDir: string) => existsSync(spoolDir(dataDir)) ? readdirSync(spoolDir(dataDir)).filter((f) => f.endsWith(".json")) : []
const spooledIds = (dataDir: string) =>
  spoolFiles(dataDir).flatMap((f) => Schema.decodeUnknownSync(UsageBatchJson)(readFileSync(join(spoolDir(dataDir), f), "utf8")).rows.map((r) => r.id))

const newDataDir = () => mkdtempSync(join(tmpdir(), "tb-usage-batcher-"))

/** Every id written exactly once, and exactly the expected ones. */
const assertExactlyOnce = (written: ReadonlyArray<string>, expected: ReadonlyArray<string>) => {
  assert.strictEqual(new Set(written).size, written.length, "an id was written twice")
  assert.deepStrictEqual([...written].sort(), [...expected].sort())
}

describe("UsageBatcherLive", () => {
  it.live("writes a full batch as soon as usage_batch_size rows are buffered (size trigger)", () =>
    Effect.gen(function*() {
      const writer = makeFakeWriter()
      const dataDir = newDataDir()
      const { batcher, shutdown } = yield* startBatcher(writer.layer, { usage_batch_size: "100", usage_flush_ms: "60000", usage_buffer_max_rows: "1000" }, dataDir)
      const rows = Array.from({ length: 100 }, () => makeRow())
      for (const r of rows) batcher.add(r)
      assert.isTrue(yield* eventually(() => writer.batches.length === 1, 2_000), "the full batch was not written before the (one minute) timer")
      assert.deepStrictEqual(writer.batches.map((b) => b.length), [100])
      // Fewer than a batch: nothing is written while the timer has not fired.
      const rest = Array.from({ length: 30 }, () => makeRow())
      for (const r of rest) batcher.add(r)
      yield* Effect.sleep("300 millis")
      assert.deepStrictEqual(writer.batches.map((b) => b.length), [100])
      assert.strictEqual(batcher.stats().buffered, 30)
      // Shutdown flushes the partial batch.
      yield* shutdown
      assert.deepStrictEqual(writer.batches.map((b) => b.length), [100, 30])
      assertExactlyOnce(writer.writtenIds(), [...rows, ...rest].map((r) => r.id))
    }))

  it.live("writes fewer rows than a batch once usage_flush_ms has passed (timer trigger)", () =>
    Effect.gen(function*() {
      const writer = makeFakeWriter()
      const { batcher } = yield* startBatcher(writer.layer, { usage_batch_size: "1000", usage_flush_ms: "400", usage_buffer_max_rows: "5000" }, newDataDir())
      // Let the first timer cycle start, then record: the rows wait for the timer, not for a full batch.
      yield* Effect.sleep("50 millis")
      const rows = Array.from({ length: 25 }, () => makeRow())
      for (const r of rows) batcher.add(r)
      yield* Effect.sleep("100 millis")
      assert.strictEqual(writer.batches.length, 0, "written before usage_flush_ms")
      assert.isTrue(yield* eventually(() => writer.batches.length === 1, 2_000), "not written after usage_flush_ms")
      assert.deepStrictEqual(writer.batches.map((b) => b.length), [25])
      assertExactlyOnce(writer.writtenIds(), rows.map((r) => r.id))
      assert.strictEqual(batcher.stats().written, 25)
    }))

  it.live("holds rows while the writer fails, spills beyond usage_buffer_max_rows, then writes everything exactly once", () =>
    Effect.gen(function*() {
      const writer = makeFakeWriter()
      writer.setFailing(true)
      const dataDir = newDataDir()
      const { batcher, shutdown } = yield* startBatcher(writer.layer, { usage_batch_size: "100", usage_flush_ms: "20", usage_buffer_max_rows: "1000" }, dataDir)
      const rows = Array.from({ length: 600 }, () => makeRow())
      for (const r of rows) batcher.add(r)
      assert.isTrue(yield* eventually(() => writer.attempts() >= 2), "the writer was not retried")
      // Held in memory, not dropped and not yet spilled.
      assert.strictEqual(batcher.stats().buffered, 600)
      assert.deepStrictEqual(spoolFiles(dataDir), [])
      assert.strictEqual(writer.batches.length, 0)
      // Past the memory bound the oldest rows go to disk.
      const more = Array.from({ length: 900 }, () => makeRow())
      for (const r of more) batcher.add(r)
      const all = [...rows, ...more].map((r) => r.id)
      // The loop (not add) spills, as soon as it is woken.
      assert.isTrue(yield* eventually(() => spoolFiles(dataDir).length > 0, 2_000), "nothing spilled")
      assert.isBelow(batcher.stats().buffered, 1000)
      const spooled = spooledIds(dataDir)
      assert.strictEqual(batcher.stats().buffered + spooled.length, all.length)
      // The oldest rows are the ones spilled.
      assertExactlyOnce(spooled, all.slice(0, spooled.length))
      // The writer recovers: buffer and spool are both written, each row once, and the spool empties.
      writer.setFailing(false)
      assert.isTrue(yield* eventually(() => writer.writtenIds().length >= all.length, 10_000), `written ${writer.writtenIds().length} of ${all.length}`)
      assert.isTrue(yield* eventually(() => spoolFiles(dataDir).length === 0))
      yield* Effect.sleep("100 millis")
      assertExactlyOnce(writer.writtenIds(), all)
      assert.isTrue(writer.batches.every((b) => b.length <= 1000))
      const stats = batcher.stats()
      assert.strictEqual(stats.buffered, 0)
      assert.strictEqual(stats.replayed, stats.spooled)
      yield* shutdown
      assertExactlyOnce(writer.writtenIds(), all)
    }), 20_000)

  it.live("a shutdown with the writer down leaves every row in the spool; the next batcher replays them at start", () =>
    Effect.gen(function*() {
      const dataDir = newDataDir()
      const down = makeFakeWriter()
      down.setFailing(true)
      const first = yield* startBatcher(down.layer, { usage_batch_size: "50", usage_flush_ms: "20", usage_buffer_max_rows: "1000" }, dataDir)
      const rows = Array.from({ length: 175 }, () => makeRow())
      for (const r of rows) first.batcher.add(r)
      assert.isTrue(yield* eventually(() => down.attempts() >= 1))
      yield* first.shutdown
      assert.strictEqual(down.batches.length, 0)
      assertExactlyOnce(spooledIds(dataDir), rows.map((r) => r.id))

      const up = makeFakeWriter()
      const second = yield* startBatcher(up.layer, { usage_batch_size: "50", usage_flush_ms: "60000", usage_buffer_max_rows: "1000" }, dataDir)
      // Replayed by the loop's first pass, long before the (one minute) timer.
      assert.isTrue(yield* eventually(() => spoolFiles(dataDir).length === 0, 2_000), "spool not replayed")
      assertExactlyOnce(up.writtenIds(), rows.map((r) => r.id))
      assert.strictEqual(second.batcher.stats().replayed, rows.length)
      yield* second.shutdown
      assertExactlyOnce(up.writtenIds(), rows.map((r) => r.id))
    }))

  it.live("rows spooled during the run (by the usage thread after a failed write) are written at shutdown, not left for a next start", () =>
    Effect.gen(function*() {
      const dataDir = newDataDir()
      const writer = makeFakeWriter()
      // A long timer: between the first pass (which found the spool empty) and the shutdown, no pass replays.
      const { batcher, shutdown } = yield* startBatcher(writer.layer, { usage_batch_size: "50", usage_flush_ms: "60000", usage_buffer_max_rows: "1000" }, dataDir)
      yield* Effect.sleep("100 millis")
      const spooled = Array.from({ length: 120 }, () => makeRow())
      makeSpool(usageSpoolDir(dataDir)).put(spooled)
      const live = Array.from({ length: 30 }, () => makeRow())
      for (const r of live) batcher.add(r)
      yield* shutdown
      assertExactlyOnce(writer.writtenIds(), [...live, ...spooled].map((r) => r.id))
      assert.deepStrictEqual(spoolFiles(dataDir), [])
    }))

  it.live("add never throws when the spool cannot be written: rows stay in memory, one warning, nothing lost", () =>
    Effect.gen(function*() {
      const writer = makeFakeWriter()
      writer.setFailing(true)
      const dataDir = newDataDir()
      const logs: Array<{ level: string; text: string }> = []
      const { batcher, shutdown } = yield* startBatcher(writer.layer, { usage_batch_size: "100", usage_flush_ms: "20", usage_buffer_max_rows: "1000" }, dataDir, { logs })
      // A file where the spool directory should be: every spool write fails (also as root).
      rmSync(spoolDir(dataDir), { recursive: true, force: true })
      writeFileSync(spoolDir(dataDir), "not a directory")
      const rows = Array.from({ length: 1500 }, () => makeRow())
      for (const r of rows) assert.doesNotThrow(() => batcher.add(r))
      const spillWarnings = () => logs.filter((l) => l.level === "Warn" && l.text.includes("spool not writable"))
      assert.isTrue(yield* eventually(() => spillWarnings().length > 0, 2_000), "the failed spill was not logged")
      // More rows and more passes: every spill keeps failing, the warning is not repeated.
      const more = Array.from({ length: 500 }, () => makeRow())
      for (const r of more) assert.doesNotThrow(() => batcher.add(r))
      yield* Effect.sleep("300 millis")
      assert.strictEqual(spillWarnings().length, 1)
      const all = [...rows, ...more].map((r) => r.id)
      assert.strictEqual(batcher.stats().buffered, all.length, "rows were dropped")
      // Disk and writer back: every row is written exactly once.
      rmSync(spoolDir(dataDir), { force: true })
      writer.setFailing(false)
      assert.isTrue(yield* eventually(() => writer.writtenIds().length >= all.length && spoolFiles(dataDir).length === 0, 10_000))
      yield* shutdown
      assertExactlyOnce(writer.writtenIds(), all)
    }), 20_000)

  it.live("a spool file that does not decode is renamed to .bad and the other files are still replayed", () =>
    Effect.gen(function*() {
      const dataDir = newDataDir()
      mkdirSync(spoolDir(dataDir), { recursive: true })
      // Sorts first, so a replay that stops at it never reaches the others.
      writeFileSync(join(spoolDir(dataDir), "usage-0-corrupt.json"), "{\"rows\": [tru")
      const first = Array.from({ length: 30 }, () => makeRow())
      const second = Array.from({ length: 20 }, () => makeRow())
      writeFileSync(join(spoolDir(dataDir), "usage-1-a.json"), Schema.encodeSync(UsageBatchJson)({ rows: first }))
      writeFileSync(join(spoolDir(dataDir), "usage-2-b.json"), Schema.encodeSync(UsageBatchJson)({ rows: second }))
      const writer = makeFakeWriter()
      const logs: Array<{ level: string; text: string }> = []
      const { shutdown } = yield* startBatcher(writer.layer, { usage_batch_size: "100", usage_flush_ms: "20", usage_buffer_max_rows: "1000" }, dataDir, { logs })
      assert.isTrue(yield* eventually(() => spoolFiles(dataDir).length === 0, 3_000), `left: ${spoolFiles(dataDir).join(", ")}`)
      assertExactlyOnce(writer.writtenIds(), [...first, ...second].map((r) => r.id))
      assert.deepStrictEqual(readdirSync(spoolDir(dataDir)), ["usage-0-corrupt.json.bad"])
      assert.isTrue(logs.some((l) => l.text.includes("usage-0-corrupt.json")), "the bad file was not logged")
      yield* shutdown
    }))

  it.live("a writer defect (rejected promise) does not stop the loop: the rows are held and written later", () =>
    Effect.gen(function*() {
      const writer = makeFakeWriter()
      writer.setMode("reject")
      const { batcher, shutdown } = yield* startBatcher(writer.layer, { usage_batch_size: "50", usage_flush_ms: "20", usage_buffer_max_rows: "1000" }, newDataDir())
      const rows = Array.from({ length: 120 }, () => makeRow())
      for (const r of rows) batcher.add(r)
      assert.isTrue(yield* eventually(() => writer.attempts() >= 2, 3_000), "the writer was not retried after a defect")
      assert.strictEqual(batcher.stats().buffered, rows.length)
      writer.setMode("ok")
      assert.isTrue(yield* eventually(() => writer.writtenIds().length >= rows.length, 5_000), "rows not written after the defect")
      // The loop is still alive for new rows.
      const later = Array.from({ length: 50 }, () => makeRow())
      for (const r of later) batcher.add(r)
      assert.isTrue(yield* eventually(() => writer.writtenIds().length >= rows.length + later.length, 2_000))
      assert.isAtLeast(batcher.stats().failures, 1)
      yield* shutdown
      assertExactlyOnce(writer.writtenIds(), [...rows, ...later].map((r) => r.id))
    }), 15_000)

  it.live("a throwing spool listing does not stop the loop", () =>
    Effect.gen(function*() {
      const writer = makeFakeWriter()
      const dataDir = newDataDir()
      const { batcher, shutdown } = yield* startBatcher(writer.layer, { usage_batch_size: "10", usage_flush_ms: "20", usage_buffer_max_rows: "1000" }, dataDir)
      // readdir on a file throws ENOTDIR on every replay pass.
      rmSync(spoolDir(dataDir), { recursive: true, force: true })
      writeFileSync(spoolDir(dataDir), "not a directory")
      const rows = Array.from({ length: 10 }, () => makeRow())
      for (const r of rows) batcher.add(r)
      assert.isTrue(yield* eventually(() => writer.writtenIds().length === 10, 2_000))
      // Let several passes (and a replay attempt) run, then the loop must still write.
      yield* Effect.sleep("600 millis")
      const later = Array.from({ length: 10 }, () => makeRow())
      for (const r of later) batcher.add(r)
      assert.isTrue(yield* eventually(() => writer.writtenIds().length === 20, 2_000), "the loop died")
      yield* shutdown
      assertExactlyOnce(writer.writtenIds(), [...rows, ...later].map((r) => r.id))
    }))

  it.live("a hung writer at shutdown: the flush gives up after its deadline and spools every row, the in-flight batch included", () =>
    Effect.gen(function*() {
      const writer = makeFakeWriter()
      writer.setMode("hang")
      const dataDir = newDataDir()
      // Deadline: a third of 3 s = 1 s.
      const { batcher, shutdown } = yield* startBatcher(writer.layer, { usage_batch_size: "50", usage_flush_ms: "20", usage_buffer_max_rows: "1000" }, dataDir, { shutdownTimeoutMs: 3_000 })
      const rows = Array.from({ length: 120 }, () => makeRow())
      for (const r of rows) batcher.add(r)
      assert.isTrue(yield* eventually(() => writer.attempts() === 1, 2_000), "no batch in flight")
      assert.strictEqual(batcher.stats().buffered, rows.length)
      const started = Date.now()
      const closed = yield* shutdown.pipe(Effect.timeoutOption("4 seconds"))
      const tookMs = Date.now() - started
      assert.isTrue(Option.isSome(closed), "shutdown did not finish")
      assert.isAtLeast(tookMs, 900)
      assert.isBelow(tookMs, 2_000)
      assertExactlyOnce(spooledIds(dataDir), rows.map((r) => r.id))
      assert.strictEqual(writer.batches.length, 0)
    }), 10_000)

  it.live("start-up does not wait for the spool replay (hung writer, backlog on disk)", () =>
    Effect.gen(function*() {
      const dataDir = newDataDir()
      const backlog = Array.from({ length: 40 }, () => makeRow())
      mkdirSync(spoolDir(dataDir), { recursive: true })
      writeFileSync(join(spoolDir(dataDir), "usage-1-backlog.json"), Schema.encodeSync(UsageBatchJson)({ rows: backlog }))
      const writer = makeFakeWriter()
      writer.setMode("hang")
      const started = yield* startBatcher(writer.layer, { usage_batch_size: "100", usage_flush_ms: "20", usage_buffer_max_rows: "1000" }, dataDir, { shutdownTimeoutMs: 3_000 })
        .pipe(Effect.timeoutOption("500 millis"))
      assert.isTrue(Option.isSome(started), "start-up waited for the replay")
      if (Option.isNone(started)) return
      // The loop did try to replay; the interrupted replay leaves the file where it was.
      assert.isTrue(yield* eventually(() => writer.attempts() >= 1, 2_000), "the loop never replayed")
      yield* started.value.shutdown
      assertExactlyOnce(spooledIds(dataDir), backlog.map((r) => r.id))
    }), 10_000)

  it.live("add does not read (parse) params: limits are cached by the loop", () =>
    Effect.gen(function*() {
      const writer = makeFakeWriter()
      let intReads = 0
      const params = testParams({ usage_batch_size: "1000", usage_flush_ms: "20", usage_buffer_max_rows: "5000" }, () => void intReads++)
      const { batcher, shutdown } = yield* startBatcher(writer.layer, {}, newDataDir(), { params })
      const rows = Array.from({ length: 4000 }, () => makeRow())
      const before = intReads
      for (const r of rows) batcher.add(r)
      assert.strictEqual(intReads - before, 0)
      // The cached limits are the configured ones: four full batches.
      assert.isTrue(yield* eventually(() => writer.writtenIds().length === rows.length, 2_000))
      assert.deepStrictEqual(writer.batches.map((b) => b.length), [1000, 1000, 1000, 1000])
      yield* shutdown
    }))
})

/** Writes a batch, the same batch again, then duplicates beside one new row: every row lands once. */
const writesEachRowOnce = Effect.gen(function*() {
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
})

/**
 * Writes each group of facts as one insert of two chunks (its halves), so a field the group
 * shares is one value across chunks, and reads every field of every row back.
 */
const writesChunksAsTheirRows = (groups: ReadonlyArray<ReadonlyArray<UsageFacts>>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* migrate
    const writer = yield* UsageWriter
    const inserts = groups.map((facts) => {
      const half = Math.ceil(facts.length / 2)
      return [facts.slice(0, half), facts.slice(half)].filter((f) => f.length > 0).map((f) => randomChunkOf(f)!)
    })
    for (const chunks of inserts) yield* writer.writeChunks(chunks)
    const chunks = inserts.flat()
    // What PostgreSQL keeps of a JS string: UTF-8, so a lone surrogate becomes U+FFFD.
    const storable = (row: UsageRow) =>
      Object.fromEntries(USAGE_COLUMNS.map((c) => [c, typeof row[c] === "string" ? row[c].toWellFormed() : row[c]]))
    const stored = yield* sql.unsafe<Record<string, unknown>>(
      `SELECT ${USAGE_COLUMNS.map((c) => (c === "id" || c === "api_key_id" ? `${c}::text` : c === "created_at" ? "(extract(epoch FROM created_at) * 1000)::float8 AS created_at" : c)).join(", ")}
       FROM usage_logs WHERE id = ANY($1::uuid[])`,
      [`{${chunks.flatMap(rowsOfChunk).map((r) => r.id).join(",")}}`]
    )
    const byId = new Map(stored.map((r) => [r.id, { ...r, created_at: Math.round(Number(r.created_at)) }]))
    const expected = chunks.flatMap(rowsOfChunk).map(storable)
    assert.strictEqual(stored.length, expected.length)
    for (const row of expected) assert.deepStrictEqual(byId.get(row.id), row)
  })

describe("UsageWriterDatabase (real PostgreSQL)", () => {
  const PgLive = freshPgLayer("usage_writer", 2)

  it.live("inserts 5000 rows in one write, and the same batch again adds none", () =>
    writesEachRowOnce.pipe(Effect.provide(UsageWriterDatabase.pipe(Layer.provideMerge(PgLive)))), 30_000)

  it.live("chunks are written as the rows they hold, every field as the chunk's rows say", () =>
    writesChunksAsTheirRows(fc.sample(fc.array(usageFactsArb({ noNul: true }), { minLength: 1, maxLength: 40 }), 6))
      .pipe(Effect.provide(UsageWriterDatabase.pipe(Layer.provideMerge(PgLive)))), 30_000)

  it.live("fields every row of a batch shares (sent once, not as arrays) are stored in every row", () =>
    writesChunksAsTheirRows(fc.sample(sameFactsArb({ noNul: true }), 6))
      .pipe(Effect.provide(UsageWriterDatabase.pipe(Layer.provideMerge(PgLive)))), 30_000)

  it.live("the embedded database (PGlite behind its socket) reports duplicates the same way: each row once", () =>
    Effect.gen(function*() {
      const { url, password } = yield* startEmbeddedPostgres(newDataDir())
      yield* writesEachRowOnce.pipe(
        Effect.provide(UsageWriterDatabase.pipe(Layer.provideMerge(PgClient.layer({ url: Redacted.make(url), password, maxConnections: 2 }))))
      )
    }).pipe(Effect.scoped), 60_000)


  it.live("the embedded database stores shared fields (sent once) and the rest the same way", () =>
    Effect.gen(function*() {
      const { url, password } = yield* startEmbeddedPostgres(newDataDir())
      yield* writesChunksAsTheirRows([...fc.sample(sameFactsArb({ noNul: true }), 3), ...fc.sample(fc.array(usageFactsArb({ noNul: true }), { minLength: 1, maxLength: 20 }), 2)]).pipe(
        Effect.provide(UsageWriterDatabase.pipe(Layer.provideMerge(PgClient.layer({ url: Redacted.make(url), password, maxConnections: 2 }))))
      )
    }).pipe(Effect.scoped), 60_000)

  it.live("a shutdown during a send waits for it instead of sending the batch again", () =>
    Effect.gen(function*() {
      const writer = makeFakeWriter()
      writer.setMode("slow")
      const dataDir = newDataDir()
      const { batcher, shutdown } = yield* startBatcher(writer.layer, { usage_batch_size: "100", usage_flush_ms: "20", usage_buffer_max_rows: "5000" }, dataDir, { shutdownTimeoutMs: 6_000 })
      const rows = Array.from({ length: 250 }, () => makeRow())
      for (const r of rows) batcher.add(r)
      assert.isTrue(yield* eventually(() => writer.attempts() >= 1, 2_000), "no send started")
      yield* shutdown
      yield* Effect.sleep("400 millis") // anything sent twice would have landed by now
      assertExactlyOnce(writer.writtenIds(), rows.map((r) => r.id))
      assert.deepStrictEqual(spoolFiles(dataDir), [])
    }))
})
