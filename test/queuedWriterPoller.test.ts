import { PgClient } from "@effect/sql-pg"
import { spawn } from "node:child_process"
import { Effect, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { encodeUsageLogMessages } from "../src/domain/usageQueueMessage.ts"
import { decodeQueueMessage } from "../src/domain/usageQueueMessage.ts"
import { handleUsageMessages } from "../src/programs/queuedWriter/handler.ts"
import { AWS_TEST_ENV, type SqsStandIn, startSqsStandIn } from "./support/awsStandIns.ts"
import { deadPort, runCli } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"
import { eventually, postgresRelay, psqlRows, type RunningQueuedWriter, startQueuedWriter, usageRow } from "./queuedWriterSupport.ts"
import type { UsageRow } from "../src/domain/usage.ts"

/**
 * `tb queued-writer` as a process: the built CLI, the real SDK client against the SQS stand-in,
 * the machine's PostgreSQL (some tests through a relay that can be cut).
 */

const TYPE_ATTRIBUTE = { type: { DataType: "String", StringValue: "usage_log" } }

const enqueueRows = (standIn: SqsStandIn, rows: ReadonlyArray<UsageRow>, maxBytes: number) =>
  encodeUsageLogMessages(rows, maxBytes).map((body) => standIn.enqueue(body, TYPE_ATTRIBUTE))

const storedIds = (url: string) => psqlRows<{ readonly id: string }>(url, "SELECT id::text AS id FROM usage_logs ORDER BY id").map((r) => r.id)

const writerEnv = (standIn: SqsStandIn, databaseUrl: string, extra: Record<string, string> = {}) => ({
  ...AWS_TEST_ENV,
  AWS_ENDPOINT_URL_SQS: standIn.url,
  SQS_QUEUE_URL: standIn.queueUrl,
  DATABASE_URL: databaseUrl,
  ...extra
})

const started = (writer: RunningQueuedWriter) => eventually(() => writer.output().includes("long polls in flight"), 30_000)

const sortedIds = (rows: ReadonlyArray<UsageRow>) => rows.map((r) => r.id).sort()

describe("tb queued-writer", () => {
  const databases: Array<string> = []
  const standIns: Array<SqsStandIn> = []
  const writers: Array<RunningQueuedWriter> = []
  const database = (name: string) => {
    const url = freshDatabase(`queued_writer_${name}`)
    databases.push(url)
    return url
  }
  const standIn = async (options: Parameters<typeof startSqsStandIn>[0] = {}) => {
    const s = await startSqsStandIn(options)
    standIns.push(s)
    return s
  }
  const writer = (env: Record<string, string>) => {
    const w = startQueuedWriter(env)
    writers.push(w)
    return w
  }
  beforeAll(() => {
    Object.assign(process.env, AWS_TEST_ENV)
  })
  afterAll(async () => {
    await Promise.all(writers.map((w) => w.stop("SIGKILL")))
    await Promise.all(standIns.map((s) => s.close()))
    for (const url of databases) dropDatabase(url)
  })

  it("drains the queue: every row once (a message sent twice included), stored messages deleted, poison left for the redrive policy", async () => {
    const queue = await standIn({ maxReceiveCount: 2 })
    const db = database("drain")
    const rows = Array.from({ length: 300 }, () => usageRow())
    const ids = enqueueRows(queue, rows, 4 * 1024)
    expect(ids.length).toBeGreaterThan(10) // more than one receive's worth
    queue.enqueue(queue.acceptedBodies[0]!, TYPE_ATTRIBUTE) // the producer sent one message twice
    const poisonId = queue.enqueue(JSON.stringify({ type: "usage_log", v: 99, rows: [] }), TYPE_ATTRIBUTE)
    const w = writer(writerEnv(queue, db, { QUEUED_WRITER_VISIBILITY_TIMEOUT_SECONDS: "1" }))
    expect(await eventually(() => queue.deleted() === ids.length + 1), w.output()).toBe(true)
    expect(storedIds(db)).toEqual(sortedIds(rows))
    // Poison: received, logged by id, never deleted; after maxReceiveCount receives the stand-in's redrive moves it.
    expect(await eventually(() => queue.deadLetters().length === 1, 10_000), w.output()).toBe(true)
    expect(queue.deadLetters()[0]!.messageId).toBe(poisonId)
    expect(w.output()).toMatch(new RegExp(`poison message ${poisonId}: unknown usage_log version 99`))
    expect(await w.stop("SIGTERM")).toBe(0)
    expect(queue.violations).toEqual([])
  }, 60_000)

  it("holds its batches while the database is down, keeps them hidden, and resumes on its own when it is back: nothing lost, nothing doubled", async () => {
    // maxReceiveCount 1: a batch received a second time (its visibility not renewed while held) would go to the dead letters.
    const queue = await standIn({ maxReceiveCount: 1 })
    const db = database("outage")
    const relay = await postgresRelay()
    try {
      const w = writer(writerEnv(queue, relay.via(db), { QUEUED_WRITER_VISIBILITY_TIMEOUT_SECONDS: "2" }))
      expect(await started(w), w.output()).toBe(true)
      relay.cut()
      const rows = Array.from({ length: 200 }, () => usageRow())
      const ids = enqueueRows(queue, rows, 4 * 1024)
      expect(await eventually(() => w.output().includes("database unavailable")), w.output()).toBe(true)
      // Past the visibility timeout, the batches in hand are still hidden (their visibility renewed), none deleted.
      await new Promise((r) => setTimeout(r, 3_000))
      expect(queue.deleted()).toBe(0)
      expect(queue.inFlight()).toBe(Math.min(ids.length, 4 * 10))
      relay.restore()
      expect(await eventually(() => queue.deleted() === ids.length, 30_000), w.output()).toBe(true)
      expect(storedIds(db)).toEqual(sortedIds(rows))
      expect(queue.deadLetters()).toEqual([])
      expect(await w.stop("SIGTERM")).toBe(0)
    } finally {
      await relay.close()
    }
  }, 60_000)

  it("SIGTERM while long polling exits 0 at once; SIGTERM while a batch waits for the database gives it back and exits 0", async () => {
    const queue = await standIn()
    const db = database("sigterm")
    const idle = writer(writerEnv(queue, db))
    expect(await started(idle), idle.output()).toBe(true)
    expect(await idle.stop("SIGTERM")).toBe(0)

    const relay = await postgresRelay()
    try {
      const holding = writer(writerEnv(queue, relay.via(db), { QUEUED_WRITER_RECEIVERS: "1" }))
      expect(await started(holding), holding.output()).toBe(true)
      relay.cut()
      const ids = enqueueRows(queue, Array.from({ length: 20 }, () => usageRow()), 4 * 1024)
      expect(await eventually(() => holding.output().includes("database unavailable")), holding.output()).toBe(true)
      expect(queue.inFlight()).toBe(Math.min(ids.length, 10))
      expect(await holding.stop("SIGTERM")).toBe(0)
      // Given back at once (visibility 0), not after the 30 s timeout.
      expect(queue.visible()).toBe(ids.length)
      expect(queue.deleted()).toBe(0)
      expect(holding.output()).toMatch(/returned to the queue/)
    } finally {
      await relay.close()
    }
  }, 60_000)

  it("SIGTERM during a write lets the write finish, deletes its messages, and exits 0", async () => {
    const queue = await standIn()
    const db = database("sigterm_write")
    expect((await runCli(["migrate"], { DATABASE_URL: db })).code).toBe(0)
    const rows = Array.from({ length: 60 }, () => usageRow())
    const ids = enqueueRows(queue, rows, 4 * 1024)
    expect(ids.length).toBeLessThanOrEqual(10) // one receive's worth: one batch
    // Another session holds the counters table for 4 s: the batch's statement waits for it.
    const locker = spawn("psql", [db, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", "BEGIN; LOCK TABLE api_key_usage_monthly IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;"], { stdio: "ignore" })
    const unlocked = new Promise((resolve) => locker.once("exit", resolve))
    const locked = () => psqlRows(db, `SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
      WHERE c.relname = 'api_key_usage_monthly' AND l.mode = 'AccessExclusiveLock' AND l.granted`).length === 1
    expect(await eventually(locked)).toBe(true)
    const w = writer(writerEnv(queue, db, { QUEUED_WRITER_RECEIVERS: "1" }))
    expect(await eventually(() => queue.inFlight() === ids.length), w.output()).toBe(true)
    await new Promise((r) => setTimeout(r, 200))
    expect(queue.deleted()).toBe(0)
    w.process.kill("SIGTERM")
    expect(await w.exited, w.output()).toBe(0)
    await unlocked
    expect(queue.deleted()).toBe(ids.length)
    expect(storedIds(db)).toEqual(sortedIds(rows))
  }, 60_000)

  it("killed (SIGKILL) mid-batch and restarted: the batches come back and are written, rows a dead writer stored already are not doubled", async () => {
    const queue = await standIn()
    const db = database("sigkill")
    const relay = await postgresRelay()
    try {
      const dying = writer(writerEnv(queue, relay.via(db), { QUEUED_WRITER_VISIBILITY_TIMEOUT_SECONDS: "2" }))
      expect(await started(dying), dying.output()).toBe(true)
      relay.cut()
      const rows = Array.from({ length: 120 }, () => usageRow())
      const ids = enqueueRows(queue, rows, 4 * 1024)
      // As if a writer had stored the first message's rows and died before deleting it.
      await Effect.runPromise(handleUsageMessages([{ id: "stored-before-the-crash", body: queue.acceptedBodies[0]! }], decodeQueueMessage).pipe(
        Effect.provide(PgClient.layer({ url: Redacted.make(db), maxConnections: 1 }))
      ))
      expect(await eventually(() => dying.output().includes("database unavailable")), dying.output()).toBe(true)
      expect(await dying.stop("SIGKILL")).toBe(null)
      relay.restore()
      const restarted = writer(writerEnv(queue, relay.via(db)))
      // The killed writer's batches reappear once their visibility (2 s) ends.
      expect(await eventually(() => queue.deleted() === ids.length, 30_000), restarted.output()).toBe(true)
      expect(storedIds(db)).toEqual(sortedIds(rows))
      expect(await restarted.stop("SIGTERM")).toBe(0)
    } finally {
      await relay.close()
    }
  }, 60_000)

  it("a queue that cannot be reached at start: one line naming SQS_QUEUE_URL and the cause, exit 1", async () => {
    const queue = await standIn()
    const db = database("unreachable_queue")
    const missing = writer(writerEnv(queue, db, { SQS_QUEUE_URL: `${queue.url}/000000000000/no-such-queue` }))
    expect(await missing.exited, missing.output()).toBe(1)
    expect(missing.output()).toMatch(/^SQS_QUEUE_URL: cannot receive from http:\/\/127\.0\.0\.1:\d+\/000000000000\/no-such-queue \(.*queue does not exist.*\)$/m)
    const refused = await deadPort()
    try {
      const down = writer(writerEnv(queue, db, { AWS_ENDPOINT_URL_SQS: `http://127.0.0.1:${refused.port}`, SQS_QUEUE_URL: `http://127.0.0.1:${refused.port}/000000000000/usage-logs` }))
      expect(await down.exited, down.output()).toBe(1)
      expect(down.output()).toMatch(/^SQS_QUEUE_URL: cannot receive from /m)
    } finally {
      await refused.close()
    }
  }, 60_000)

  it("without SQS_QUEUE_URL: one line naming it, exit 2", async () => {
    const w = writer({ SQS_QUEUE_URL: "", DATABASE_URL: "postgres://postgres@127.0.0.1:5432/postgres" })
    expect(await w.exited).toBe(2)
    expect(w.output().trim()).toBe("configuration error: SQS_QUEUE_URL: required by tb queued-writer (the usage-log queue's URL)")
  })
})
