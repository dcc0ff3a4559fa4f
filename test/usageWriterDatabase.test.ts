import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import fc from "fast-check"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { USAGE_COLUMNS, type UsageRow } from "../src/domain/usage.ts"
import { rowsOfChunk, type UsageFacts } from "../src/domain/usageChunk.ts"
import { encodeUsageLogMessages, encodeUsageLogMessagesOfChunks } from "../src/domain/usageQueueMessage.ts"
import { startEmbeddedPostgres } from "../src/layers/EmbeddedPostgres.ts"
import { migrate } from "../src/layers/migrations/index.ts"
import { UsageWriterDatabase } from "../src/layers/usage/UsageWriterDatabase.ts"
import { UsageWriter } from "../src/services/UsageSink.ts"
import { freshPgLayer } from "./support/services.ts"
import { randomChunkOf, sameFactsArb, usageFactsArb, usageRow } from "./support/usageFacts.ts"

const MAX_BODY = 256 * 1024
const bodiesOf = (rows: ReadonlyArray<UsageRow>) => encodeUsageLogMessages(rows, MAX_BODY)

const makeRow = (createdAt = Date.now()): UsageRow =>
  usageRow({ source: null, price: 97_000.125, latency_us: 42, client_ip: "127.0.0.1", node: "test-node", bytes_out: 512, created_at: createdAt })

const newDataDir = () => mkdtempSync(join(tmpdir(), "tb-usage-writer-"))

/** Writes a batch, the same batch again, then duplicates beside one new row: every row lands once. */
const writesEachRowOnce = Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* migrate
      const writer = yield* UsageWriter
      const count = sql<{ n: number }>`SELECT count(*)::int AS n FROM usage_logs`.pipe(Effect.map((r) => r[0]?.n ?? -1))
      // Mostly today, a few far in the past (the default partition).
      const rows = Array.from({ length: 5000 }, (_, i) => makeRow(i % 1000 === 0 ? Date.UTC(2020, 0, 1) : Date.now() - i))
      assert.strictEqual(yield* count, 0)
      yield* writer.write(bodiesOf(rows))
      assert.strictEqual(yield* count, 5000)
      yield* writer.write(bodiesOf(rows))
      assert.strictEqual(yield* count, 5000)
      // One more new row next to the duplicates is still added.
      const extra = makeRow()
      yield* writer.write(bodiesOf([...rows.slice(0, 10), extra]))
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
    for (const chunks of inserts) yield* writer.write(encodeUsageLogMessagesOfChunks(chunks, MAX_BODY))
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

  it.live("counts the rows in the per-key monthly counters as the queued writer does, once, and answers a body that does not decode as refused", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* migrate
      const writer = yield* UsageWriter
      const key = "0193a1b2-0000-7000-8000-00000000c0de"
      const rows = Array.from({ length: 3 }, () => ({ ...makeRow(Date.UTC(2026, 10, 15)), api_key_id: key, service: "LPO" as const, endpoint: "/price", status_code: 200 }))
      const refused = yield* writer.write([...bodiesOf(rows), "{not a usage_log"])
      assert.deepStrictEqual(refused.map((r) => r.body), ["{not a usage_log"])
      assert.match(refused[0]!.reason, /not JSON/)
      yield* writer.write(bodiesOf(rows))
      const counters = yield* sql<{ month: string; requests: number; queries: number }>`
        SELECT month::text AS month, requests::int AS requests, queries::int AS queries FROM api_key_usage_monthly WHERE api_key_id = ${key}`
      assert.deepStrictEqual(counters, [{ month: "2026-11-01", requests: 3, queries: 3 }])
    }).pipe(Effect.provide(UsageWriterDatabase.pipe(Layer.provideMerge(PgLive)))), 30_000)
})
