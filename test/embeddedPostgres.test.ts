import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Exit, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { startEmbeddedPostgres } from "../src/layers/EmbeddedPostgres.ts"
import { bindExecuteSync, connectWire, describeThenFlush, extendedCycle, simpleQuery } from "./support/pgWire.ts"

/**
 * The embedded PostgreSQL is one PGlite session shared by every connection of its socket. These
 * tests hold it to what a real PostgreSQL promises each connection: its own statements, its own
 * results, its own transaction.
 */
const withEmbedded = <A, E>(use: Effect.Effect<A, E, SqlClient.SqlClient>) =>
  Effect.gen(function*() {
    const { url } = yield* startEmbeddedPostgres(mkdtempSync(join(tmpdir(), "tb-embedded-pg-")))
    return yield* use.pipe(Effect.provide(Layer.orDie(PgClient.layer({ url: Redacted.make(url), maxConnections: 8 }))))
  }).pipe(Effect.scoped)

/** `clients` separate one-connection clients, as separate processes (server, workers, CLI) hold. */
const withEmbeddedClients = <A, E>(clients: number, use: (sqls: ReadonlyArray<SqlClient.SqlClient>) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const { url } = yield* startEmbeddedPostgres(mkdtempSync(join(tmpdir(), "tb-embedded-pg-")))
    const sqls = yield* Effect.forEach(Array.from({ length: clients }), () =>
      Layer.build(Layer.orDie(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 }))).pipe(Effect.map((ctx) => Context.get(ctx, SqlClient.SqlClient))))
    return yield* use(sqls)
  }).pipe(Effect.scoped)

/** The embedded database's port, for bare wire-protocol clients. */
const withEmbeddedPort = <A>(use: (port: number) => Promise<A>) =>
  Effect.gen(function*() {
    const { url } = yield* startEmbeddedPostgres(mkdtempSync(join(tmpdir(), "tb-embedded-pg-")))
    return yield* Effect.promise(() => use(Number(new URL(url).port)))
  }).pipe(Effect.scoped)

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe("embedded PostgreSQL (PGlite behind its socket), many connections at once", () => {
  it.live("a cycle that reaches the server in two reads is not broken into by another client's cycle", () =>
    withEmbeddedPort(async (port) => {
      const [a, b] = [await connectWire(port), await connectWire(port)]
      const [cycleA, cycleB] = [extendedCycle("SELECT 'from A'"), extendedCycle("SELECT 'from B'")]
      // Each sends Parse and Bind; the server has read them before the rest of either cycle arrives.
      a.write(cycleA.head)
      await pause(30)
      b.write(cycleB.head)
      await pause(30)
      a.write(cycleA.tail)
      b.write(cycleB.tail)
      const [replyA, replyB] = await Promise.all([a.nextReply(), b.nextReply()])
      a.destroy()
      b.destroy()
      assert.deepStrictEqual({ a: replyA.values, b: replyB.values }, { a: ["from A"], b: ["from B"] })
      assert.notInclude(replyA.types + replyB.types, "E", "an ErrorResponse")
    }), 60_000)

  it.live("a Flush gets its answers at once and keeps the session for that client until its Sync", () =>
    withEmbeddedPort(async (port) => {
      const [a, b] = [await connectWire(port), await connectWire(port)]
      a.write(describeThenFlush("SELECT 'from A'"))
      const described = await a.nextUpTo("T")
      // B's whole cycle must not run between A's Parse and A's Bind of the same unnamed statement.
      b.write(Buffer.concat([extendedCycle("SELECT 'from B'").head, extendedCycle("SELECT 'from B'").tail]))
      await pause(100)
      a.write(bindExecuteSync())
      const [replyA, replyB] = await Promise.all([a.nextReply(), b.nextReply()])
      a.destroy()
      b.destroy()
      assert.deepStrictEqual({ described: described.types, a: replyA.values, b: replyB.values }, { described: "1tT", a: ["from A"], b: ["from B"] })
    }), 60_000)

  it.live("a client that fails after a Flush and leaves without its Sync does not swallow the next client's cycle", () =>
    withEmbeddedPort(async (port) => {
      const [a, b] = [await connectWire(port), await connectWire(port)]
      a.write(describeThenFlush("SELECT * FROM no_such_table"))
      const failed = await a.nextUpTo("E")
      a.destroy()
      await pause(100)
      b.write(Buffer.concat([extendedCycle("SELECT 'from B'").head, extendedCycle("SELECT 'from B'").tail]))
      const replyB = await b.nextReply()
      b.destroy()
      assert.deepStrictEqual({ failed: failed.types, b: replyB.values }, { failed: "E", b: ["from B"] })
    }), 60_000)

  it.live("a client that leaves inside a transaction block has it rolled back, and the others go on", () =>
    withEmbeddedPort(async (port) => {
      const [a, b] = [await connectWire(port), await connectWire(port)]
      a.write(simpleQuery("CREATE TABLE w (n int)"))
      await a.nextReply()
      a.write(simpleQuery("BEGIN"))
      await a.nextReply()
      a.write(simpleQuery("INSERT INTO w VALUES (1)"))
      await a.nextReply()
      // B's query waits for A's block to end: it must not run inside A's transaction.
      b.write(simpleQuery("SELECT count(*) FROM w"))
      const early = await b.nextReply(300).then((r) => r.values, () => "no answer yet")
      a.destroy()
      const counted = await b.nextReply()
      b.destroy()
      assert.deepStrictEqual({ early, counted: counted.values }, { early: "no answer yet", counted: ["0"] })
    }), 60_000)

  it.live("each client gets its own rows, with 4 one-connection clients querying at once", () =>
    withEmbeddedClients(4, (sqls) => Effect.gen(function*() {
      const wrong: Array<string> = []
      const one = (i: number) => {
        const sql = sqls[i % sqls.length]!
        return i % 2 === 0
          ? sql<{ a: number }>`SELECT ${i}::int AS a`.pipe(Effect.map((rows) => rows[0]?.a === i ? undefined : `query ${i}: ${JSON.stringify(rows)}`))
          : sql<{ b: string; c: number }>`SELECT ${`x${i}`}::text AS b, 7 AS c`.pipe(
            Effect.map((rows) => rows[0]?.b === `x${i}` && rows[0]?.c === 7 ? undefined : `query ${i}: ${JSON.stringify(rows)}`)
          )
      }
      for (let round = 0; round < 40; round++) {
        const results = yield* Effect.forEach(Array.from({ length: 64 }, (_, k) => round * 64 + k), (i) => Effect.result(one(i)), { concurrency: "unbounded" })
        for (const r of results) {
          if (r._tag === "Failure") wrong.push(String(r.failure))
          else if (r.success !== undefined) wrong.push(r.success)
        }
      }
      assert.deepStrictEqual(wrong.slice(0, 5), [], `${wrong.length} of 2560 queries got another query's answer or failed`)
    })), 120_000)

  it.live("each query gets its own rows, with 64 queries of two shapes in flight over 8 connections", () =>
    withEmbedded(Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const wrong: Array<string> = []
      const one = (i: number) =>
        i % 2 === 0
          ? sql<{ a: number }>`SELECT ${i}::int AS a`.pipe(Effect.map((rows) => rows[0]?.a === i ? undefined : `query ${i}: ${JSON.stringify(rows)}`))
          : sql<{ b: string; c: number }>`SELECT ${`x${i}`}::text AS b, 7 AS c`.pipe(
            Effect.map((rows) => rows[0]?.b === `x${i}` && rows[0]?.c === 7 ? undefined : `query ${i}: ${JSON.stringify(rows)}`)
          )
      for (let round = 0; round < 40; round++) {
        const results = yield* Effect.forEach(Array.from({ length: 64 }, (_, k) => round * 64 + k), (i) => Effect.result(one(i)), { concurrency: "unbounded" })
        for (const r of results) {
          if (r._tag === "Failure") wrong.push(String(r.failure))
          else if (r.success !== undefined) wrong.push(r.success)
        }
      }
      assert.deepStrictEqual(wrong.slice(0, 5), [], `${wrong.length} of 2560 queries got another query's answer or failed`)
    })), 120_000)

  it.live("a statement that fails on one connection leaves the others' queries and results in order", () =>
    withEmbedded(Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const failing = sql`SELECT 1 / ${0}::int AS never`
      const results = yield* Effect.forEach(Array.from({ length: 300 }, (_, i) => i), (i) =>
        i % 3 === 0
          ? Effect.exit(failing).pipe(Effect.map((exit) => Exit.isFailure(exit) ? undefined : `division ${i} succeeded`))
          : sql<{ n: number }>`SELECT ${i}::int AS n`.pipe(
            Effect.map((rows) => rows[0]?.n === i ? undefined : `query ${i}: ${JSON.stringify(rows)}`),
            Effect.catch((e) => Effect.succeed(`query ${i} failed: ${String(e)}`))
          ), { concurrency: 32 })
      assert.deepStrictEqual(results.filter((r) => r !== undefined).slice(0, 5), [])
    })), 120_000)

  it.live("a transaction is its connection's alone: a rollback takes back only its own rows", () =>
    withEmbedded(Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE t (writer text NOT NULL, n int NOT NULL)`
      const rolledBack = sql.withTransaction(Effect.gen(function*() {
        for (let n = 0; n < 20; n++) {
          yield* sql`INSERT INTO t VALUES ('tx', ${n})`
          yield* Effect.sleep("2 millis")
        }
        return yield* Effect.fail("roll back")
      }))
      const outside = Effect.forEach(Array.from({ length: 40 }, (_, n) => n), (n) => sql`INSERT INTO t VALUES ('outside', ${n})`, { concurrency: 4, discard: true })
      yield* Effect.all([Effect.exit(rolledBack), outside], { concurrency: "unbounded" })
      const counts = yield* sql<{ writer: string; rows: number }>`SELECT writer, count(*)::int AS rows FROM t GROUP BY writer ORDER BY writer`
      assert.deepStrictEqual(counts.map((r) => ({ ...r })), [{ writer: "outside", rows: 40 }])
    })), 120_000)
})
