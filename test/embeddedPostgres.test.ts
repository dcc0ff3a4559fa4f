import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Exit, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { chmodSync, lstatSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import { connect, type Socket } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Reactivity } from "effect/reactivity"
import { connectFailure } from "../src/layers/DatabaseLive.ts"
import { startEmbeddedPostgres } from "../src/layers/EmbeddedPostgres.ts"
import { type PgliteServerOptions, type PgliteSession, servePglite } from "../src/layers/embedded/pgliteServer.ts"
import { createKey, priceWith, startServer, usageCount } from "./support/server.ts"
import { bindExecuteSync, connectWire, describeThenFlush, extendedCycle, simpleQuery, startupMessage, wireMessage } from "./support/pgWire.ts"

/**
 * The embedded PostgreSQL is one PGlite session shared by every connection of its socket. These
 * tests hold it to what a real PostgreSQL promises each connection: its own statements, its own
 * results, its own transaction.
 */
const withEmbedded = <A, E>(use: Effect.Effect<A, E, SqlClient.SqlClient>) =>
  Effect.gen(function*() {
    const { url, password } = yield* startEmbeddedPostgres(mkdtempSync(join(tmpdir(), "tb-embedded-pg-")))
    return yield* use.pipe(Effect.provide(Layer.orDie(PgClient.layer({ url: Redacted.make(url), password, maxConnections: 8 }))))
  }).pipe(Effect.scoped)

/** `clients` separate one-connection clients, as separate processes (server, workers, CLI) hold. */
const withEmbeddedClients = <A, E>(clients: number, use: (sqls: ReadonlyArray<SqlClient.SqlClient>) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const { url, password } = yield* startEmbeddedPostgres(mkdtempSync(join(tmpdir(), "tb-embedded-pg-")))
    const sqls = yield* Effect.forEach(Array.from({ length: clients }), () =>
      Layer.build(Layer.orDie(PgClient.layer({ url: Redacted.make(url), password, maxConnections: 1 }))).pipe(Effect.map((ctx) => Context.get(ctx, SqlClient.SqlClient))))
    return yield* use(sqls)
  }).pipe(Effect.scoped)

/** The embedded database's port and password, for bare wire-protocol clients. */
const withEmbeddedPort = <A>(use: (port: number, password: string) => Promise<A>) =>
  Effect.gen(function*() {
    const { url, password } = yield* startEmbeddedPostgres(mkdtempSync(join(tmpdir(), "tb-embedded-pg-")))
    return yield* Effect.promise(() => use(Number(new URL(url).port), Redacted.value(password)))
  }).pipe(Effect.scoped)

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe("embedded PostgreSQL (PGlite behind its socket), many connections at once", () => {
  it.live("a cycle that reaches the server in two reads is not broken into by another client's cycle", () =>
    withEmbeddedPort(async (port, password) => {
      const [a, b] = [await connectWire(port, password), await connectWire(port, password)]
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
    withEmbeddedPort(async (port, password) => {
      const [a, b] = [await connectWire(port, password), await connectWire(port, password)]
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
    withEmbeddedPort(async (port, password) => {
      const [a, b] = [await connectWire(port, password), await connectWire(port, password)]
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
    withEmbeddedPort(async (port, password) => {
      const [a, b] = [await connectWire(port, password), await connectWire(port, password)]
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

/** Send `bytes` on a fresh connection and collect what comes back until the server hangs up (or 5 s). */
const exchangeRaw = (port: number, bytes: ReadonlyArray<Buffer>) =>
  new Promise<{ readonly reply: Buffer; readonly hungUp: boolean }>((resolve) => {
    const socket = connect(port, "127.0.0.1")
    let reply = Buffer.alloc(0)
    const timer = setTimeout(() => {
      socket.destroy()
      resolve({ reply, hungUp: false })
    }, 5_000)
    socket.on("data", (d: Buffer) => void (reply = Buffer.concat([reply, d])))
    socket.on("error", () => {})
    socket.on("close", () => {
      clearTimeout(timer)
      resolve({ reply, hungUp: true })
    })
    socket.on("connect", () => {
      // The startup message first; the rest once the server has answered it.
      socket.write(startupMessage())
      socket.once("data", () => {
        for (const b of bytes) socket.write(b)
      })
    })
  })

/** The backend message types of `reply`, e.g. "RE". */
const typesOf = (reply: Buffer) => {
  let types = ""
  for (let offset = 0; offset + 5 <= reply.length; offset += 1 + reply.readInt32BE(offset + 1)) types += String.fromCharCode(reply[offset]!)
  return types
}

/** One query through @effect/sql-pg with `password` (none when undefined): the rows, or why it failed (as start-up reports it). */
const queryWith = (url: string, password: string | undefined) =>
  Effect.gen(function*() {
    const sql = yield* PgClient.make({ url: Redacted.make(url), maxConnections: 1, ...(password === undefined ? {} : { password: Redacted.make(password) }) })
    const rows = yield* sql<{ one: number }>`SELECT 1 AS one`
    return rows.map((r) => r.one)
  }).pipe(Effect.scoped, Effect.provide(Reactivity.layer), Effect.catch((e) => Effect.succeed(connectFailure(e))))

const modeOf = (path: string) => statSync(path).mode & 0o777

describe("embedded PostgreSQL's password", () => {
  it.live("refuses a client that skips the password exchange or sends its password in the clear", () =>
    Effect.gen(function*() {
      const dataDir = mkdtempSync(join(tmpdir(), "tb-embedded-pg-"))
      const { url, password } = yield* startEmbeddedPostgres(dataDir)
      const port = Number(new URL(url).port)
      const skipped = yield* Effect.promise(() => exchangeRaw(port, [simpleQuery("SELECT 'reached the database'")]))
      const cleartext = yield* Effect.promise(() =>
        exchangeRaw(port, [wireMessage("p", Buffer.from(`${Redacted.value(password)}\0`)), simpleQuery("SELECT 'reached the database'")]))
      for (const { reply, hungUp } of [skipped, cleartext]) {
        // AuthenticationSASL, then a FATAL ErrorResponse 28P01, and the connection is closed.
        assert.strictEqual(typesOf(reply), "RE")
        assert.include(reply.toString("latin1"), "28P01")
        assert.notInclude(reply.toString("latin1"), "reached the database")
        assert.isTrue(hungUp)
      }
    }).pipe(Effect.scoped), 60_000)

  it.live("refuses a wrong or absent password through the driver, and accepts the right one (SCRAM-SHA-256)", () =>
    Effect.gen(function*() {
      const { url, password } = yield* startEmbeddedPostgres(mkdtempSync(join(tmpdir(), "tb-embedded-pg-")))
      assert.match(String(yield* queryWith(url, "not-the-password")), /password authentication failed/)
      assert.match(String(yield* queryWith(url, undefined)), /password/i)
      assert.deepStrictEqual(yield* queryWith(url, Redacted.value(password)), [1])
    }).pipe(Effect.scoped), 60_000)

  it.live("keeps its password and port files mode 0600 (a stale wider one included) and the password across restarts", () =>
    Effect.gen(function*() {
      const dataDir = mkdtempSync(join(tmpdir(), "tb-embedded-pg-"))
      const portFile = join(dataDir, "embedded-postgres.json")
      const passwordFile = join(dataDir, "embedded-postgres-password")
      // Left by an older build or a crash, readable by everyone.
      writeFileSync(portFile, "{}", { mode: 0o644 })
      const first = yield* Effect.scoped(Effect.gen(function*() {
        const { password } = yield* startEmbeddedPostgres(dataDir)
        assert.strictEqual(modeOf(portFile).toString(8), "600")
        assert.strictEqual(modeOf(passwordFile).toString(8), "600")
        assert.strictEqual(modeOf(join(dataDir, "pgdata")).toString(8), "700")
        assert.strictEqual(readFileSync(passwordFile, "utf8").trim(), Redacted.value(password))
        return Redacted.value(password)
      }))
      const { url, password } = yield* startEmbeddedPostgres(dataDir)
      assert.strictEqual(Redacted.value(password), first)
      assert.deepStrictEqual(yield* queryWith(url, first), [1])
    }).pipe(Effect.scoped), 120_000)

  it.live("does not follow a symbolic link planted at its password file: the target keeps its mode and content, and is not the password", () =>
    Effect.gen(function*() {
      const dataDir = mkdtempSync(join(tmpdir(), "tb-embedded-pg-"))
      const passwordFile = join(dataDir, "embedded-postgres-password")
      // A password the planter knows, in the shape of ours, readable by everyone.
      const known = "k".repeat(43)
      const target = join(mkdtempSync(join(tmpdir(), "tb-planted-")), "known-file")
      writeFileSync(target, `${known}\n`)
      chmodSync(target, 0o644)
      symlinkSync(target, passwordFile)
      const { url, password } = yield* startEmbeddedPostgres(dataDir)
      assert.notStrictEqual(Redacted.value(password), known)
      assert.strictEqual(readFileSync(target, "utf8"), `${known}\n`)
      assert.strictEqual(modeOf(target).toString(8), "644")
      assert.isFalse(lstatSync(passwordFile).isSymbolicLink())
      assert.strictEqual(modeOf(passwordFile).toString(8), "600")
      assert.match(String(yield* queryWith(url, known)), /password authentication failed/)
      assert.deepStrictEqual(yield* queryWith(url, Redacted.value(password)), [1])
    }).pipe(Effect.scoped), 60_000)
})

/** A connection that never proves the password: silent, or stopped after its startup message. */
interface Stranger {
  readonly socket: Socket
  readonly closed: Promise<void>
  readonly isClosed: () => boolean
}
const openStranger = (port: number, sendsStartup: boolean) =>
  new Promise<Stranger>((resolve, reject) => {
    const socket = connect(port, "127.0.0.1")
    let isClosed = false
    const closed = new Promise<void>((done) =>
      socket.once("close", () => {
        isClosed = true
        done()
      }))
    socket.once("error", reject)
    socket.once("connect", () => {
      socket.off("error", reject)
      socket.on("error", () => {}) // reset when the server hangs up
      socket.resume() // what the server sends is dropped, so its hang-up is seen
      if (sendsStartup) socket.write(startupMessage())
      resolve({ socket, closed, isClosed: () => isClosed })
    })
  })
const openStrangers = async (port: number, count: number) => {
  const strangers: Array<Stranger> = []
  // One after another, so the server accepts them in this order.
  for (let i = 0; i < count; i++) strangers.push(await openStranger(port, i % 2 === 1))
  return strangers
}

const backend = (type: string, body: Buffer) => Buffer.concat([Buffer.from(type, "latin1"), Buffer.from([0, 0, 0, body.length + 4]), body])
/** AuthenticationOk and ReadyForQuery for the startup message, EmptyQueryResponse and ReadyForQuery for anything else. */
const stubSession: PgliteSession = {
  runExclusive: (fn) => fn(),
  execProtocolRawStream: async (message, { onRawData }) => {
    const startup = message[0] === 0
    onRawData(Buffer.concat([startup ? backend("R", Buffer.alloc(4)) : backend("I", Buffer.alloc(0)), backend("Z", Buffer.from("I"))]))
  },
  isInTransaction: () => false,
  exec: async () => undefined
}
const PASSWORD = "the-password-of-the-stub-server"
/** The socket server alone, in front of a stub session: what happens before any client reaches PGlite. */
const withStubServer = async <A>(options: Partial<PgliteServerOptions>, use: (port: number) => Promise<A>) => {
  const server = await servePglite(stubSession, { host: "127.0.0.1", port: 0, maxConnections: 64, password: PASSWORD, ...options })
  try {
    return await use(server.port)
  } finally {
    await server.close()
  }
}

describe("embedded PostgreSQL against connections that never prove the password", () => {
  it.live("70 of them (silent, or stopped after their startup message) do not lock out a client that knows the password", () =>
    Effect.gen(function*() {
      const { url, password } = yield* startEmbeddedPostgres(mkdtempSync(join(tmpdir(), "tb-embedded-pg-")))
      const strangers = yield* Effect.promise(() => openStrangers(Number(new URL(url).port), 70))
      const rows = yield* queryWith(url, Redacted.value(password))
      for (const s of strangers) s.socket.destroy()
      assert.deepStrictEqual(rows, [1])
    }).pipe(Effect.scoped), 60_000)

  it("one is closed after the authentication timeout; an authenticated client is not", async () => {
    await withStubServer({ authenticationTimeoutMs: 200 }, async (port) => {
      const known = await connectWire(port, PASSWORD)
      const strangers = await openStrangers(port, 2)
      // Both strangers connected after the client, so its time limit would have passed before theirs.
      await Promise.all(strangers.map((s) => s.closed))
      known.write(simpleQuery(""))
      assert.strictEqual((await known.nextReply()).types, "IZ")
      known.destroy()
    })
  }, 30_000)

  it("past maxPendingAuthentications a new one closes the longest-waiting one, and a client with the password still gets in", async () => {
    await withStubServer({ authenticationTimeoutMs: 600_000, maxPendingAuthentications: 4 }, async (port) => {
      const strangers = await openStrangers(port, 10)
      await Promise.all(strangers.slice(0, 6).map((s) => s.closed))
      assert.deepStrictEqual(strangers.map((s) => s.isClosed()), [true, true, true, true, true, true, false, false, false, false])
      const known = await connectWire(port, PASSWORD)
      known.write(simpleQuery(""))
      assert.strictEqual((await known.nextReply()).types, "IZ")
      await strangers[6]!.closed
      known.destroy()
      for (const s of strangers) s.socket.destroy()
    })
  }, 30_000)

  it("only authenticated clients count toward maxConnections: one more gets 'too many clients' (53300)", async () => {
    await withStubServer({ authenticationTimeoutMs: 600_000, maxConnections: 2 }, async (port) => {
      const strangers = await openStrangers(port, 5)
      const clients = [await connectWire(port, PASSWORD), await connectWire(port, PASSWORD)]
      const third = await Effect.runPromise(queryWith(`postgres://postgres@127.0.0.1:${port}/postgres`, PASSWORD))
      assert.match(String(third), /too many clients/)
      for (const c of clients) c.destroy()
      for (const s of strangers) s.socket.destroy()
    })
  }, 30_000)
})

describe("clients of a running server's embedded database", () => {
  it("its usage thread writes rows and the CLI counts them, both with the password from DATA_DIR", async () => {
    const server = await startServer({})
    try {
      const { key } = await createKey(server, "associate")
      for (let i = 0; i < 5; i++) assert.strictEqual((await priceWith(server, key)).status, 200)
      const sameStorage = { DATA_DIR: server.dataDir, LOG_LEVEL: "Warn" }
      let rows = 0
      for (let attempt = 0; attempt < 50 && rows < 5; attempt++) {
        rows = await usageCount(sameStorage)
        if (rows < 5) await new Promise((r) => setTimeout(r, 200))
      }
      assert.isAtLeast(rows, 5)
    } finally {
      assert.strictEqual(await server.stop(), 0)
    }
  }, 120_000)
})
