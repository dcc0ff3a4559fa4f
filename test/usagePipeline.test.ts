import { assert, describe, it } from "@effect/vitest"
import { type Duration, Effect, Exit, Logger, Scope } from "effect"
import { existsSync, mkdtempSync, readdirSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { ParamName } from "../src/domain/params.ts"
import { makeUsageChunkBuilder, rowsOfChunk, type UsageChunk } from "../src/domain/usageChunk.ts"
import { decodeQueueMessage, encodeUsageLogMessagesOfChunks } from "../src/domain/usageQueueMessage.ts"
import { makeUsagePipeline } from "../src/layers/usage/pipeline.ts"
import { makeUsageSpool, type UsageSpool } from "../src/layers/usage/spool.ts"
import { type RefusedBody, UsageWriteError, UsageWriter } from "../src/services/UsageSink.ts"
import { changeableParams } from "./support/params.ts"
import { CHUNK_META, randomChunkOf, usageRow } from "./support/usageFacts.ts"
import { randomFillSync, randomUUID } from "node:crypto"

/** `rows` rows of one key, in one chunk. */
const chunkOfRows = (rows: number): UsageChunk => {
  const builder = makeUsageChunkBuilder({ capacity: rows, ...CHUNK_META, fillRandom: randomFillSync })
  for (let i = 0; i < rows; i++) {
    builder.record({
      requestId: randomUUID(), apiKeyId: "0193a1b2-0000-7000-8000-000000000001", service: "LPO", protocol: "http", endpoint: "/price",
      asset: "BTC", quote: "USD", price: 97_000 + i, code: "OK", latencyUs: 40 + i, clientIp: "127.0.0.1", bytesOut: 600, createdAt: Date.now()
    })
  }
  return builder.take()!
}

const idsOf = (chunks: ReadonlyArray<UsageChunk>) => chunks.flatMap(rowsOfChunk).map((r) => r.id)

const idsOfBodies = (bodies: ReadonlyArray<string>) =>
  bodies.flatMap((body) => {
    const message = decodeQueueMessage(body)
    return message._tag === "UsageLog" ? message.rows.map((r) => r.id) : []
  })

type WriterMode = "ok" | "fail" | "defect" | "hang" | "refuse"

/** A UsageWriter that keeps every batch of bodies it takes and can be made to fail. */
const makeFakeWriter = () => {
  const batches: Array<ReadonlyArray<string>> = []
  let mode: WriterMode = "ok"
  let attempts = 0
  const writer = UsageWriter.of({
    kind: "database",
    write: (bodies) =>
      Effect.suspend((): Effect.Effect<ReadonlyArray<RefusedBody>, UsageWriteError> => {
        attempts++
        switch (mode) {
          case "fail":
            return Effect.fail(new UsageWriteError({ reason: "Database", message: "writer down (test)" }))
          case "defect":
            return Effect.promise(() => Promise.reject(new Error("writer bug (test)")))
          case "hang":
            return Effect.never
          case "refuse":
            return Effect.succeed(bodies.map((body) => ({ body, reason: "refused (test)" })))
          case "ok":
            batches.push(bodies)
            return Effect.succeed([])
        }
      })
  })
  return {
    writer,
    batches,
    attempts: () => attempts,
    setMode: (m: WriterMode) => void (mode = m),
    writtenIds: () => idsOfBodies(batches.flat()),
    rowsPerBatch: () => batches.map((b) => idsOfBodies(b).length)
  }
}

/** The real spool, whose writes can be made to fail. */
const breakableSpool = (dir: string) => {
  const real = makeUsageSpool(dir)
  let broken = false
  const guard = <A extends ReadonlyArray<unknown>, B>(f: (...a: A) => B) => (...a: A): B => {
    if (broken) throw new Error("disk full (test)")
    return f(...a)
  }
  const spool: UsageSpool = { ...real, put: guard(real.put), putRefused: guard(real.putRefused) }
  return { spool, setBroken: (b: boolean) => void (broken = b) }
}

const newSpoolDir = () => join(mkdtempSync(join(tmpdir(), "tb-usage-pipeline-")), "spool")
const spoolFiles = (dir: string, suffix = ".ndjson") => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(suffix)) : [])
const spooledIds = (dir: string, suffix = ".ndjson") =>
  spoolFiles(dir, suffix).flatMap((f) => idsOfBodies(readFileSync(join(dir, f), "utf8").split("\n").filter((l) => l !== "")))

interface StartOptions {
  readonly params?: Partial<Record<ParamName, string>>
  readonly spoolDir?: string
  readonly spool?: UsageSpool
  readonly stopWithinMs?: number
  readonly logs?: Array<string>
  readonly replayEvery?: Duration.Input
}

const start = (writer: UsageWriter["Service"], options: StartOptions = {}) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const params = changeableParams({ usage_batch_size: "512", usage_flush_ms: "20", ...options.params })
    const spoolDir = options.spoolDir ?? newSpoolDir()
    const acks: Array<number> = []
    const logs = options.logs
    const logger = Logger.make(({ message }) => {
      logs?.push((Array.isArray(message) ? message : [message]).map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join(" "))
    })
    const pipeline = yield* makeUsagePipeline({
      writer,
      spool: options.spool ?? makeUsageSpool(spoolDir),
      params: params.service,
      ack: (seq) => void acks.push(seq),
      stopWithinMs: options.stopWithinMs ?? 2_000,
      bypassMs: 300,
      replayEvery: options.replayEvery ?? "100 millis"
    }).pipe(Scope.provide(scope), Effect.provide(Logger.layer([logger])))
    return { pipeline, acks, params, spoolDir, stop: pipeline.stop.pipe(Effect.andThen(Scope.close(scope, Exit.void))) }
  })

const eventually = (check: () => boolean, timeoutMs = 5_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!check() && Date.now() < deadline) yield* Effect.sleep("10 millis")
    return check()
  })

const assertExactlyOnce = (written: ReadonlyArray<string>, expected: ReadonlyArray<string>) => {
  assert.strictEqual(new Set(written).size, written.length, "an id was written twice")
  assert.deepStrictEqual([...written].sort(), [...expected].sort())
}

describe("usage pipeline (usage thread: chunks → batches of usage_log bodies → writer, spool)", () => {
  it.live("writes a batch as soon as it holds usage_batch_size rows, and acknowledges each chunk only after the write", () =>
    Effect.gen(function*() {
      const fake = makeFakeWriter()
      fake.setMode("hang")
      const { pipeline, acks, stop } = yield* start(fake.writer, { params: { usage_flush_ms: "60000" }, stopWithinMs: 300 })
      const chunks = [chunkOfRows(256), chunkOfRows(256)]
      chunks.forEach((c, i) => pipeline.add(i, c))
      assert.isTrue(yield* eventually(() => fake.attempts() === 1, 2_000), "the full batch was not written at once")
      assert.deepStrictEqual(acks, [], "acknowledged before the write ended")
      fake.setMode("ok")
      // The hung attempt never ends: a new pipeline with the same chunks writes them.
      const second = yield* start(fake.writer, { params: { usage_flush_ms: "60000" } })
      chunks.forEach((c, i) => second.pipeline.add(i, c))
      assert.isTrue(yield* eventually(() => second.acks.length === 2, 2_000))
      assert.deepStrictEqual(fake.rowsPerBatch(), [512])
      assertExactlyOnce(fake.writtenIds(), idsOf(chunks))
      yield* second.stop
      yield* stop.pipe(Effect.timeout("5 seconds"), Effect.ignore)
    }))

  it.live("writes a smaller batch usage_flush_ms after its first chunk; a live change of usage_batch_size applies to the next batch", () =>
    Effect.gen(function*() {
      const fake = makeFakeWriter()
      const { pipeline, acks, params, stop } = yield* start(fake.writer, { params: { usage_flush_ms: "50" } })
      pipeline.add(0, chunkOfRows(100))
      assert.isTrue(yield* eventually(() => acks.length === 1, 2_000))
      params.set({ usage_batch_size: "200", usage_flush_ms: "60000" })
      const more = [chunkOfRows(100), chunkOfRows(100)]
      more.forEach((c, i) => pipeline.add(i + 1, c))
      assert.isTrue(yield* eventually(() => acks.length === 3, 2_000), "a batch of usage_batch_size rows waited for the timer")
      assert.deepStrictEqual(fake.rowsPerBatch(), [100, 200])
      yield* stop
    }))

  it.live("a batch the writer keeps failing goes to the spool as usage_log bodies and is acknowledged; replayed once the writer works, each row once", () =>
    Effect.gen(function*() {
      const fake = makeFakeWriter()
      fake.setMode("fail")
      const { pipeline, acks, spoolDir, stop } = yield* start(fake.writer)
      const chunks = [chunkOfRows(300), chunkOfRows(300), chunkOfRows(300)]
      chunks.forEach((c, i) => pipeline.add(i, c))
      assert.isTrue(yield* eventually(() => acks.length === 3, 5_000), "failed chunks were not acknowledged")
      assertExactlyOnce(spooledIds(spoolDir), idsOf(chunks))
      // Retried on the schedule (1 + 3 tries), then batches bypass the failing writer for a while.
      assert.isAtLeast(fake.attempts(), 4)
      assert.isBelow(fake.attempts(), 12)
      fake.setMode("ok")
      assert.isTrue(yield* eventually(() => fake.writtenIds().length === 900, 5_000), "the spool was not replayed")
      assert.deepStrictEqual(spoolFiles(spoolDir), [])
      assertExactlyOnce(fake.writtenIds(), idsOf(chunks))
      assert.strictEqual(pipeline.stats().replayed, 900)
      yield* stop
    }))

  it.live("a writer defect counts as a failed write: the rows are spooled, not lost", () =>
    Effect.gen(function*() {
      const fake = makeFakeWriter()
      fake.setMode("defect")
      const { pipeline, acks, spoolDir, stop } = yield* start(fake.writer)
      const chunk = chunkOfRows(50)
      pipeline.add(0, chunk)
      assert.isTrue(yield* eventually(() => acks.length === 1, 5_000))
      assertExactlyOnce(spooledIds(spoolDir), idsOf([chunk]))
      yield* stop
    }))

  it.live("while a write hangs, chunks past usage_buffer_max_rows waiting go straight to the spool, acknowledged", () =>
    Effect.gen(function*() {
      const fake = makeFakeWriter()
      fake.setMode("hang")
      const { pipeline, acks, spoolDir, stop } = yield* start(fake.writer, { params: { usage_buffer_max_rows: "1000" }, stopWithinMs: 300 })
      const chunks = Array.from({ length: 8 }, () => chunkOfRows(256))
      chunks.forEach((c, i) => pipeline.add(i, c))
      // 1000 rows may wait: the first three chunks (768); the rest are spooled as they come.
      assert.deepStrictEqual(acks, [3, 4, 5, 6, 7])
      assertExactlyOnce(spooledIds(spoolDir), idsOf(chunks.slice(3)))
      assert.strictEqual(pipeline.stats().buffered, 768)
      yield* stop
    }))

  it.live("bodies the writer refuses are kept as a .bad spool file and said in the log; their chunks are acknowledged", () =>
    Effect.gen(function*() {
      const fake = makeFakeWriter()
      fake.setMode("refuse")
      const logs: Array<string> = []
      const { pipeline, acks, spoolDir, stop } = yield* start(fake.writer, { logs })
      const chunk = chunkOfRows(20)
      pipeline.add(0, chunk)
      assert.isTrue(yield* eventually(() => acks.length === 1, 2_000))
      assertExactlyOnce(spooledIds(spoolDir, ".ndjson.bad"), idsOf([chunk]))
      assert.isTrue(logs.some((l) => l.includes("refused by the writer") && l.includes("refused (test)")), logs.join("\n"))
      yield* stop
    }))

  it.live("a spool file that holds no usage_log body is renamed to .bad; the other files are still replayed", () =>
    Effect.gen(function*() {
      const fake = makeFakeWriter()
      const spoolDir = newSpoolDir()
      const good = chunkOfRows(10)
      const spool = makeUsageSpool(spoolDir)
      spool.put(["{not json"])
      spool.put(encodeUsageLogMessagesOfChunks([good], 256 * 1024))
      const { stop } = yield* start(fake.writer, { spoolDir })
      assert.isTrue(yield* eventually(() => fake.writtenIds().length === 10, 3_000))
      assert.deepStrictEqual(spoolFiles(spoolDir), [])
      assert.strictEqual(spoolFiles(spoolDir, ".bad").length, 1)
      yield* stop
    }))

  it.live("writer down and disk full: the batch is held, not acknowledged, and written once both work again", () =>
    Effect.gen(function*() {
      const fake = makeFakeWriter()
      fake.setMode("fail")
      const spoolDir = newSpoolDir()
      const disk = breakableSpool(spoolDir)
      disk.setBroken(true)
      const { pipeline, acks, stop } = yield* start(fake.writer, { spool: disk.spool })
      const chunk = chunkOfRows(40)
      pipeline.add(0, chunk)
      yield* Effect.sleep("1500 millis")
      assert.deepStrictEqual(acks, [])
      fake.setMode("ok")
      disk.setBroken(false)
      assert.isTrue(yield* eventually(() => acks.length === 1, 5_000))
      assertExactlyOnce(fake.writtenIds(), idsOf([chunk]))
      yield* stop
    }))

  it.live("stop writes what waits, and replays the spool before it ends", () =>
    Effect.gen(function*() {
      const fake = makeFakeWriter()
      const spoolDir = newSpoolDir()
      const backlog = chunkOfRows(30)
      const { pipeline, acks, stop } = yield* start(fake.writer, { spoolDir, params: { usage_flush_ms: "60000" }, replayEvery: "1 hour" })
      // After the replay at start: only the one at stop can write it.
      yield* Effect.sleep("100 millis")
      makeUsageSpool(spoolDir).put(encodeUsageLogMessagesOfChunks([backlog], 256 * 1024))
      const waiting = chunkOfRows(30)
      pipeline.add(0, waiting)
      yield* stop
      assert.deepStrictEqual(acks, [0])
      assertExactlyOnce(fake.writtenIds(), idsOf([backlog, waiting]))
      assert.deepStrictEqual(spoolFiles(spoolDir), [])
    }))

  it.live("stop with a hung writer gives up after stopWithinMs and leaves the chunk unacknowledged (the serving thread keeps it)", () =>
    Effect.gen(function*() {
      const fake = makeFakeWriter()
      fake.setMode("hang")
      const { pipeline, acks, stop } = yield* start(fake.writer, { stopWithinMs: 400 })
      pipeline.add(0, chunkOfRows(10))
      assert.isTrue(yield* eventually(() => fake.attempts() === 1, 2_000))
      const started = Date.now()
      yield* stop
      assert.isBelow(Date.now() - started, 2_000)
      assert.deepStrictEqual(acks, [])
    }))
})

describe("usage spool", () => {
  it("keeps the bodies it is given, one per line, byte for byte", () => {
    const dir = newSpoolDir()
    const spool = makeUsageSpool(dir)
    const bodies = encodeUsageLogMessagesOfChunks([randomChunkOf([{ ...usageFactsOf(), endpoint: "line\nbreak\u2028" }])!], 256 * 1024)
    spool.put(bodies)
    assert.deepStrictEqual(spool.files().map((f) => spool.read(f)), [bodies])
  })
})

const usageFactsOf = () => {
  const row = usageRow()
  return {
    requestId: row.request_id, apiKeyId: row.api_key_id ?? undefined, service: row.service, protocol: row.protocol, endpoint: row.endpoint,
    code: "OK" as const, latencyUs: row.latency_us, clientIp: row.client_ip, bytesOut: row.bytes_out, createdAt: row.created_at
  }
}
