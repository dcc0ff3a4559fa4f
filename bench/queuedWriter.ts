/**
 * The queued writer's consumer against this machine's own ceilings, on the machine's real
 * PostgreSQL (127.0.0.1:5432, user postgres), in a fresh database migrated with the project's
 * migrations, created and dropped by the benchmark:
 * - COPY: the same rows as CSV through `COPY usage_logs … FROM STDIN` (psql: @effect/sql-pg
 *   answers COPY with "COPY is not supported"), the fastest way rows get into PostgreSQL;
 * - INSERT: the project's plain usage insert (`usageInsertSql`, one multi-row statement of unnest
 *   arrays per batch) on batches as large as the queued writer's, one statement at a time;
 * - queued writer: `handleUsageMessages` (the handler `tb queued-writer` and the Lambda share) on
 *   the bodies the producer's encoder makes, 10 messages a call as a receive hands them over: decode,
 *   the insert and the per-key monthly counters in one statement. Once one call at a time (one
 *   receiver), once with 4 calls in flight (`QUEUED_WRITER_RECEIVERS` default). No SQS: this is
 *   the consumer's own work.
 * Rounds alternate the subjects; the tables are truncated before each measurement. Rates are rows
 * per second of wall time; CPU is this process's (`process.cpuUsage`: decode, parameters, the
 * driver) and the database backends' (/proc) per row.
 */
import { SendMessageBatchCommand, SQSClient } from "@aws-sdk/client-sqs"
import { processCpuMs } from "./processCpu.ts"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, ManagedRuntime, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { median } from "../src/domain/consensus.ts"
import { messageOf } from "../src/domain/errorMessage.ts"
import { ERROR_STATUS, type ResponseCode } from "../src/domain/errorCodes.ts"
import { USAGE_COLUMNS, type UsageRow } from "../src/domain/usage.ts"
import { makeUsageChunkBuilder, rowsOfChunk, type UsageChunk, type UsageFacts } from "../src/domain/usageChunk.ts"
import { usageRowsInsertParams } from "../src/domain/usageInsertParams.ts"
import { decodeQueueMessage, encodeUsageLogMessagesOfChunks } from "../src/domain/usageQueueMessage.ts"
import { migrateLocked } from "../src/layers/MigrationsLive.ts"
import { usageInsertSql } from "../src/layers/usage/usageStore.ts"
import { requestsOf, TYPE_ATTRIBUTE, TYPE_ATTRIBUTE_BYTES, USAGE_LOG_MAX_BODY_BYTES } from "../src/layers/usage/UsageWriterSqs.ts"
import { STAND_IN_AWS_ENV } from "../src/simulators/awsJsonProtocol.ts"
import type { QueuedMessage } from "../src/layers/usage/usageStore.ts"
import { handleUsageMessages } from "../src/programs/queuedWriter/handler.ts"
import type { BenchReport, BenchRow, Benchmark, BenchSettings, TargetCheck } from "./run.ts"

const ROWS = 150_000
/** The usage thread's batches: 4 chunks of 256 rows (`usage_batch_size` 1000), as bench/usageMessage.ts. */
const CHUNK_ROWS = 256
const CHUNKS_PER_BATCH = 4
/** What one ReceiveMessage hands the poller. */
const MESSAGES_PER_RECEIVE = 10
/** The poller's receives in flight by default (QUEUED_WRITER_RECEIVERS). */
const RECEIVERS = 4
const RATIO_TARGET = 0.5
const KEYS = 2_000
const DATABASE = "tb_bench_queued_writer"
const ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
const DATABASE_URL = `postgres://postgres@127.0.0.1:5432/${DATABASE}`
const GROUP = "usage → PostgreSQL"
const distBench = path.dirname(fileURLToPath(import.meta.url))
const CLI = path.resolve(distBench, "../src/programs/cli.js")
const SQS_STAND_IN = path.resolve(distBench, "../src/simulators/sqsStandInMain.js")
/** How long the whole `tb queued-writer` run may take to start and drain the queue. */
const PROCESS_TIMEOUT_MS = 120_000

// ---------------------------------------------------------------------------------------------
// Realistic rows, deterministic (a fixed LCG, no fast-check): many keys (a few heavy ones), a few
// assets, HTTP and UDP, /price and /prices, a little LRS, ~3% refusals, ~40 rows a millisecond
// from now on (today's day partition).

const makeChunks = (rows: number, startMs: number): ReadonlyArray<UsageChunk> => {
  let seed = 1_414
  const next = (): number => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31
  const pick = <A>(values: ReadonlyArray<A>): A => values[Math.floor(next() * values.length)]!
  const hex = (digits: number): string => Array.from({ length: digits }, () => Math.floor(next() * 16).toString(16)).join("")
  const keys = Array.from({ length: KEYS }, () => `${hex(8)}-${hex(4)}-4${hex(3)}-${pick(["8", "9", "a", "b"])}${hex(3)}-${hex(12)}`)
  const clientOf = keys.map((_, k) => `10.${(k >> 8) & 255}.${k & 255}.${1 + (k % 7)}`)
  const assets = ["BTC", "ETH", "SOL", "XRP", "DOGE"]
  const errors: ReadonlyArray<ResponseCode> = ["RATE_LIMITED", "UNKNOWN_ASSET", "NO_FRESH_PRICE", "QUOTA_EXCEEDED"]
  const facts = (i: number): UsageFacts => {
    // A tenth of the keys make half the traffic.
    const key = next() < 0.5 ? Math.floor(next() * (KEYS / 10)) : Math.floor(next() * KEYS)
    const r = next()
    const lrs = r < 0.03
    const http = r < 0.6
    const multi = http && !lrs && next() < 0.1
    const code: ResponseCode = next() < 0.03 ? pick(errors) : "OK"
    const asset = multi ? "BTC,ETH,SOL" : pick(assets)
    return {
      requestSeq: 1_000_000 + i, apiKeyId: keys[key], service: lrs ? "LRS" : "LPO", protocol: http ? "http" : "udp",
      endpoint: lrs ? "/report" : multi ? "/prices" : http ? "/price" : "price", asset, quote: "USD",
      source: code === "OK" && !lrs ? "consensus" : undefined, price: code === "OK" && !multi && !lrs ? 100 + next() * 90_000 : undefined,
      code, status: ERROR_STATUS[code], latencyUs: Math.floor(50 + next() * 900), clientIp: clientOf[key]!,
      bytesOut: code === "OK" ? 560 + Math.floor(next() * 80) : 180, createdAt: startMs + Math.floor(i / 40)
    }
  }
  const fillRandom = (bytes: Uint8Array): void => {
    for (let b = 0; b < bytes.length; b++) bytes[b] = Math.floor(next() * 256)
  }
  const chunks: Array<UsageChunk> = []
  for (let at = 0; at < rows; at += CHUNK_ROWS) {
    const builder = makeUsageChunkBuilder({ capacity: CHUNK_ROWS, node: "ip-10-0-1-23", region: "us-east-1", requestTag: "9f3a61c2", fillRandom })
    for (let r = at; r < Math.min(rows, at + CHUNK_ROWS); r++) builder.record(facts(r))
    chunks.push(builder.take()!)
  }
  return chunks
}

/** The bodies the producer sends: each usage-thread batch through the real encoder. */
const bodiesOf = (chunks: ReadonlyArray<UsageChunk>): ReadonlyArray<string> => {
  const bodies: Array<string> = []
  for (let i = 0; i < chunks.length; i += CHUNKS_PER_BATCH) {
    bodies.push(...encodeUsageLogMessagesOfChunks(chunks.slice(i, i + CHUNKS_PER_BATCH), USAGE_LOG_MAX_BODY_BYTES))
  }
  return bodies
}

/** CSV for COPY, USAGE_COLUMNS order: text quoted, NULL unquoted and empty, created_at ISO 8601. */
const csvOf = (rows: ReadonlyArray<UsageRow>): Buffer => {
  const field = (v: string | number | null): string =>
    v === null ? "" : typeof v === "number" ? String(v) : `"${v.replaceAll("\"", "\"\"")}"`
  const lines = rows.map((r) =>
    USAGE_COLUMNS.map((c) => (c === "created_at" ? new Date(r.created_at).toISOString() : field(r[c]))).join(","))
  return Buffer.from(lines.join("\n") + "\n", "utf8")
}

// ---------------------------------------------------------------------------------------------
// The database

const psqlAdmin = (sql: string): string =>
  execFileSync("psql", [ADMIN_URL, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], {
    encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, PGOPTIONS: "-c client_min_messages=warning" }
  })

interface CopyDone {
  /** psql's CPU when the COPY had committed. */
  readonly psqlMs: number | undefined
  /** The database backends' CPU then, while its backend is still connected. */
  readonly backends: ReadonlyMap<number, number> | undefined
}

/**
 * `COPY … FROM STDIN` of `csv` in one psql, fed on its stdin. Resolves once psql prints the
 * COPY's command tag (committed: psql runs in autocommit); the `pg_sleep` after it keeps its
 * backend connected for that moment, so its CPU can be read.
 */
const copyIn = (csv: Buffer, expectedRows: number): { readonly done: Promise<CopyDone>; readonly exited: Promise<void> } => {
  let exited: Promise<void> = Promise.resolve()
  const done = new Promise<CopyDone>((resolve, reject) => {
    const child = spawn(
      "psql",
      [DATABASE_URL, "-v", "ON_ERROR_STOP=1", "-At", "-c", `COPY usage_logs (${USAGE_COLUMNS.join(",")}) FROM STDIN WITH (FORMAT csv)`, "-c", "SELECT pg_sleep(0.3)"],
      { stdio: ["pipe", "pipe", "pipe"] }
    )
    let stdout = ""
    let stderr = ""
    let done = false
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString("utf8")
      if (!done && stdout.includes(`COPY ${expectedRows}\n`)) {
        done = true
        resolve({ psqlMs: child.pid === undefined ? undefined : processCpuMs(child.pid), backends: backendCpu() })
      }
    })
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")))
    child.on("error", reject)
    exited = new Promise((whenExited) =>
      child.on("exit", (code) => {
        if (!done) reject(new Error(`psql COPY exited ${code} before "COPY ${expectedRows}": ${stderr.trim()} ${stdout.trim()}`))
        whenExited()
      }))
    child.stdin.end(csv)
  })
  return { done, exited }
}

/**
 * COPY of `parts` (CSV), each by its own psql, all at once: the wall time until the last one
 * committed, psql's CPU as the client's, and the backends' CPU (each pid's latest reading).
 */
const copyMeasured = async (parts: ReadonlyArray<{ readonly csv: Buffer; readonly rows: number }>): Promise<Measured> => {
  const backendsBefore = backendCpu()
  const start = performance.now()
  const copies = parts.map((p) => copyIn(p.csv, p.rows))
  const done = await Promise.all(copies.map((c) => c.done))
  const seconds = (performance.now() - start) / 1000
  await Promise.all(copies.map((c) => c.exited))
  const rows = parts.reduce((n, p) => n + p.rows, 0)
  const latest = new Map<number, number>()
  for (const d of done) for (const [pid, ms] of d.backends ?? []) latest.set(pid, Math.max(ms, latest.get(pid) ?? 0))
  const databaseMs = backendCpuBetween(backendsBefore, latest)
  const psqlMs = done.every((d) => d.psqlMs !== undefined) ? done.reduce((n, d) => n + d.psqlMs!, 0) : undefined
  return {
    rowsPerSec: rows / seconds,
    clientUs: psqlMs === undefined ? Number.NaN : (psqlMs * 1000) / rows,
    databaseUs: databaseMs === undefined ? undefined : (databaseMs * 1000) / rows
  }
}

/**
 * CPU ms (user + system) of the live PostgreSQL backends connected to the bench's database (their
 * process title names it), by pid. Undefined without /proc.
 */
const backendCpu = (): ReadonlyMap<number, number> | undefined => {
  try {
    const out = new Map<number, number>()
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/u.test(entry)) continue
      try {
        const title = readFileSync(`/proc/${entry}/cmdline`, "latin1")
        if (!title.startsWith("postgres:") || !title.includes(` ${DATABASE} `)) continue
        const ms = processCpuMs(Number(entry))
        if (ms !== undefined) out.set(Number(entry), ms)
      } catch {
        // gone meanwhile, or not ours to read
      }
    }
    return out
  } catch {
    return undefined
  }
}

const backendCpuBetween = (before: ReadonlyMap<number, number> | undefined, after: ReadonlyMap<number, number> | undefined): number | undefined => {
  if (before === undefined || after === undefined || after.size === 0) return undefined
  let ms = 0
  for (const [pid, cpu] of after) ms += cpu - (before.get(pid) ?? 0)
  return ms
}

// ---------------------------------------------------------------------------------------------
// Measuring

interface Measured {
  readonly rowsPerSec: number
  /** This process's CPU per row (µs). */
  readonly clientUs: number
  /** The database backends' CPU per row (µs), where it could be read. */
  readonly databaseUs: number | undefined
  /** The whole process only: the SQS stand-in's CPU per row (µs), and the writer's exit after SIGTERM. */
  readonly standInUs?: number | undefined
  readonly exit?: number | string
}

const timed = async (rows: number, work: () => Promise<void>): Promise<Measured> => {
  const backendsBefore = backendCpu()
  const cpuBefore = process.cpuUsage()
  const start = performance.now()
  await work()
  const seconds = (performance.now() - start) / 1000
  const cpu = process.cpuUsage(cpuBefore)
  const databaseMs = backendCpuBetween(backendsBefore, backendCpu())
  return {
    rowsPerSec: rows / seconds,
    clientUs: (cpu.user + cpu.system) / rows,
    databaseUs: databaseMs === undefined ? undefined : (databaseMs * 1000) / rows
  }
}

// ---------------------------------------------------------------------------------------------
// The whole `tb queued-writer` process against the SQS stand-in

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves with the first `pattern` match in the child's output (stdout and stderr), or rejects when it exits first. */
const waitForOutput = (child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> =>
  new Promise((resolve, reject) => {
    let seen = ""
    const timer = setTimeout(() => reject(new Error(`no ${pattern} in ${timeoutMs} ms: ${seen.slice(-400)}`)), timeoutMs)
    const look = (chunk: Buffer) => {
      seen += chunk.toString("utf8")
      const m = pattern.exec(seen)
      if (m !== null) {
        clearTimeout(timer)
        resolve(m)
      }
    }
    child.stdout?.on("data", look)
    child.stderr?.on("data", look)
    child.once("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`exited (${code}) before ${pattern}: ${seen.slice(-400)}`))
    })
  })

const exitOf = (child: ChildProcess): Promise<number | string> =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve(child.exitCode ?? child.signalCode ?? "unknown")
    : new Promise((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown")))

/** Settings that would point a child at real infrastructure are dropped (as bench/run.ts does for `tb serve`). */
const isExternalSetting = (name: string): boolean =>
  ["DATABASE_URL", "DATABASE_READER_URL", "VALKEY_URL", "CACHE_URL", "SQS_QUEUE_URL", "DB_SECRET_NAME"].includes(name) || name.startsWith("AWS_")

interface SqsStandInChild {
  readonly pid: number | undefined
  readonly queueUrl: string
  readonly endpoint: string
  readonly stop: () => Promise<void>
}

const startStandIn = async (): Promise<SqsStandInChild> => {
  const child = spawn(process.execPath, [SQS_STAND_IN, "0"], { stdio: ["ignore", "pipe", "pipe"] })
  try {
    const m = await waitForOutput(child, /ready (\d+) (\S+)\n/u, 10_000)
    return {
      pid: child.pid, queueUrl: m[2]!, endpoint: `http://127.0.0.1:${m[1]}`,
      stop: async () => {
        child.kill("SIGTERM")
        await exitOf(child)
      }
    }
  } catch (error) {
    child.kill("SIGKILL")
    throw error
  }
}

/** The bodies sent as the producer sends them (SendMessageBatch requests of `requestsOf`), with the `type` attribute. */
const sendAll = async (standIn: SqsStandInChild, bodies: ReadonlyArray<string>): Promise<void> => {
  const client = new SQSClient({ endpoint: standIn.endpoint, region: STAND_IN_AWS_ENV.AWS_REGION, credentials: {
    accessKeyId: STAND_IN_AWS_ENV.AWS_ACCESS_KEY_ID, secretAccessKey: STAND_IN_AWS_ENV.AWS_SECRET_ACCESS_KEY
  } })
  try {
    for (const request of requestsOf(bodies)) {
      const out = await client.send(new SendMessageBatchCommand({
        QueueUrl: standIn.queueUrl,
        Entries: request.map((body, i) => ({ Id: String(i), MessageBody: body, MessageAttributes: TYPE_ATTRIBUTE }))
      }))
      if ((out.Failed ?? []).length > 0) throw new Error(`SendMessageBatch: ${out.Failed?.length} entries failed (${out.Failed?.[0]?.Message})`)
    }
  } finally {
    client.destroy()
  }
}

/**
 * The queue filled first; then `tb queued-writer` (default settings) started on it. Measured from
 * its "receiving with" line (started, migrated, the queue answered) until the monthly counters,
 * written in the same statement as the rows, hold every keyed row; polled every 50 ms. CPU: the
 * writer process's (/proc), the database backends', and the stand-in's apart.
 */
const measureProcess = async (
  bodies: ReadonlyArray<string>,
  rows: number,
  countedRequests: () => Promise<number>,
  expectedRequests: number
): Promise<Measured> => {
  const standIn = await startStandIn()
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "tb-bench-queued-writer-"))
  let writer: ChildProcess | undefined
  try {
    await sendAll(standIn, bodies)
    const env = {
      ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !isExternalSetting(name))),
      ...STAND_IN_AWS_ENV, DATABASE_URL, SQS_QUEUE_URL: standIn.queueUrl, AWS_ENDPOINT_URL_SQS: standIn.endpoint, DATA_DIR: dataDir, LOG_LEVEL: "Info",
      METRICS_PORT: "0"
    }
    writer = spawn(process.execPath, [CLI, "queued-writer"], { env, stdio: ["ignore", "pipe", "pipe"] })
    const pid = writer.pid
    await waitForOutput(writer, /receiving with/u, 30_000)
    const backendsBefore = backendCpu()
    const writerBefore = pid === undefined ? undefined : processCpuMs(pid)
    const standInBefore = standIn.pid === undefined ? undefined : processCpuMs(standIn.pid)
    const start = performance.now()
    const deadline = Date.now() + PROCESS_TIMEOUT_MS
    while ((await countedRequests()) < expectedRequests) {
      if (Date.now() > deadline) throw new Error(`tb queued-writer did not store the rows in ${PROCESS_TIMEOUT_MS / 1000} s`)
      if (writer.exitCode !== null) throw new Error(`tb queued-writer exited (${writer.exitCode})`)
      await sleep(50)
    }
    const seconds = (performance.now() - start) / 1000
    const writerAfter = pid === undefined ? undefined : processCpuMs(pid)
    const standInAfter = standIn.pid === undefined ? undefined : processCpuMs(standIn.pid)
    const databaseMs = backendCpuBetween(backendsBefore, backendCpu())
    writer.kill("SIGTERM")
    const exit = await exitOf(writer)
    return {
      rowsPerSec: rows / seconds,
      clientUs: writerBefore === undefined || writerAfter === undefined ? Number.NaN : ((writerAfter - writerBefore) * 1000) / rows,
      databaseUs: databaseMs === undefined ? undefined : (databaseMs * 1000) / rows,
      standInUs: standInBefore === undefined || standInAfter === undefined ? undefined : ((standInAfter - standInBefore) * 1000) / rows,
      exit
    }
  } finally {
    if (writer !== undefined && writer.exitCode === null && writer.signalCode === null) {
      writer.kill("SIGKILL")
      await exitOf(writer)
    }
    await standIn.stop()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

/** This thread's CPU (µs) per row of ROWS while `work` runs. */
const threadCpuUsPerRow = (work: () => void): number => {
  const before = process.threadCpuUsage()
  work()
  const used = process.threadCpuUsage(before)
  return (used.user + used.system) / ROWS
}

const inGroupsOf = <A>(items: ReadonlyArray<A>, size: number): ReadonlyArray<ReadonlyArray<A>> =>
  Array.from({ length: Math.ceil(items.length / size) }, (_, i) => items.slice(i * size, (i + 1) * size))

const medianOrUndefined = (values: ReadonlyArray<number | undefined>): number | undefined => {
  const known = values.filter((v): v is number => v !== undefined)
  return known.length === 0 ? undefined : median(known)
}

interface Subject {
  readonly subject: string
  readonly measure: () => Promise<Measured>
  /** What the tables must hold after it (and what it measured); a reason when they do not. */
  readonly check: (measured: Measured) => Promise<string | undefined>
}

const runQueuedWriterBenchmark = async (s: BenchSettings): Promise<BenchReport> => {
  const startMs = Date.now()
  const chunks = makeChunks(ROWS, startMs)
  const rows = chunks.flatMap(rowsOfChunk)
  const bodies = bodiesOf(chunks)
  const queueBytes = bodies.reduce((n, b) => n + Buffer.byteLength(b) + TYPE_ATTRIBUTE_BYTES, 0)
  const messages: ReadonlyArray<QueuedMessage> = bodies.map((body, i) => ({ id: `m${i}`, body }))
  const receives = inGroupsOf(messages, MESSAGES_PER_RECEIVE)
  const insertBatchRows = Math.round((ROWS / bodies.length) * MESSAGES_PER_RECEIVE)
  const insertBatches = inGroupsOf(rows, insertBatchRows)
  const csv = csvOf(rows)
  const csvParts = inGroupsOf(rows, Math.ceil(ROWS / RECEIVERS)).map((part) => ({ csv: csvOf(part), rows: part.length }))
  const keyedRows = rows.filter((r) => r.api_key_id !== null).length

  psqlAdmin(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`)
  psqlAdmin(`CREATE DATABASE ${DATABASE}`)
  const runtime = ManagedRuntime.make(PgClient.layer({ url: Redacted.make(DATABASE_URL), maxConnections: RECEIVERS }).pipe(Layer.orDie))
  try {
    const run = <A, E>(effect: Effect.Effect<A, E, SqlClient.SqlClient>): Promise<A> => runtime.runPromise(effect)
    await run(migrateLocked)
    const query = <A extends object>(text: string) =>
      run(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        return yield* sql.unsafe<A>(text)
      }))
    const truncate = () => query("TRUNCATE usage_logs, api_key_usage_monthly")
    const storedRows = async () => (await query<{ readonly n: number }>("SELECT count(*)::int AS n FROM usage_logs"))[0]?.n ?? 0
    const rowsStored = async (): Promise<string | undefined> => {
      const n = await storedRows()
      return n === ROWS ? undefined : `${n} rows in usage_logs, expected ${ROWS}`
    }
    const countedRequests = async () =>
      (await query<{ readonly n: number }>("SELECT coalesce(sum(requests), 0)::int AS n FROM api_key_usage_monthly"))[0]?.n ?? 0
    const countedToo = async (): Promise<string | undefined> => {
      const missing = await rowsStored()
      if (missing !== undefined) return missing
      const counted = await countedRequests()
      return counted === keyedRows ? undefined : `monthly counters hold ${counted} requests, expected ${keyedRows}`
    }
    const store = (receive: ReadonlyArray<QueuedMessage>) =>
      handleUsageMessages(receive).pipe(
        Effect.flatMap((b) => (b.poison.length > 0 || b.inserted !== b.rows ? Effect.die(new Error(`batch: ${b.poison.length} poison, ${b.inserted} of ${b.rows} new`)) : Effect.void))
      )
    const subjects: ReadonlyArray<Subject> = [
      {
        subject: "COPY FROM STDIN (one psql, CSV)",
        measure: () => copyMeasured([{ csv, rows: ROWS }]),
        check: rowsStored
      },
      {
        subject: `COPY FROM STDIN, ${RECEIVERS} psql at once (a quarter each)`,
        measure: () => copyMeasured(csvParts),
        check: rowsStored
      },
      {
        subject: `INSERT … unnest, ${insertBatches.length} statements of ${insertBatchRows} rows`,
        measure: () =>
          timed(ROWS, () =>
            run(Effect.gen(function*() {
              const sql = yield* SqlClient.SqlClient
              for (const batch of insertBatches) {
                const params = usageRowsInsertParams(batch)
                yield* sql.unsafe(usageInsertSql(params, "fail"), params.values)
              }
            }))),
        check: rowsStored
      },
      {
        subject: `queued writer handler, 1 receiver (${MESSAGES_PER_RECEIVE} messages a call)`,
        measure: () => timed(ROWS, () => run(Effect.forEach(receives, store, { discard: true }))),
        check: countedToo
      },
      {
        subject: `queued writer handler, ${RECEIVERS} receivers in flight`,
        measure: () => timed(ROWS, () => run(Effect.forEach(receives, store, { discard: true, concurrency: RECEIVERS }))),
        check: countedToo
      },
      {
        subject: `tb queued-writer process (${RECEIVERS} receivers) ← SQS stand-in`,
        measure: () => measureProcess(bodies, ROWS, countedRequests, keyedRows),
        check: async (m) => (m.exit === 0 ? countedToo() : `tb queued-writer exited ${m.exit} on SIGTERM`)
      }
    ]
    const measured = subjects.map((): Array<Measured> => [])
    const failures = subjects.map((): Array<string> => [])
    // The handler's own steps without the database, on this thread: where its client CPU goes.
    const decodeUs: Array<number> = []
    const paramsUs: Array<number> = []
    const receivedRows = receives.map((receive) => receive.flatMap((m) => {
      const decoded = decodeQueueMessage(m.body)
      return decoded._tag === "UsageLog" ? decoded.rows : []
    }))
    for (let round = 0; round < s.rounds; round++) {
      for (const [i, subject] of subjects.entries()) {
        await truncate()
        measured[i]!.push(await subject.measure())
        const wrong = await subject.check(measured[i]!.at(-1)!)
        if (wrong !== undefined) failures[i]!.push(`round ${round + 1}: ${wrong}`)
      }
      decodeUs.push(threadCpuUsPerRow(() => {
        for (const m of messages) decodeQueueMessage(m.body)
      }))
      paramsUs.push(threadCpuUsPerRow(() => {
        for (const batch of receivedRows) usageRowsInsertParams([...batch].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)))
      }))
    }
    // Subjects by place: 0 COPY, 1 COPY in parallel, 2 INSERT, 3 and 4 the queued writer's handler, 5 the whole process.
    const ratiosTo = (i: number, base: number): ReadonlyArray<number> => measured[i]!.map((m, r) => m.rowsPerSec / measured[base]![r]!.rowsPerSec)
    const byRound = (ratios: ReadonlyArray<number>): string => ratios.map((r) => r.toFixed(2)).join(", ")
    const isQueued = (i: number): boolean => i >= 3
    const rowsOut: Array<BenchRow> = subjects.map((subject, i) => {
      const ms = measured[i]!
      const databaseUs = medianOrUndefined(ms.map((m) => m.databaseUs))
      const clientUs = medianOrUndefined(ms.map((m) => (Number.isNaN(m.clientUs) ? undefined : m.clientUs)))
      const notes = [
        i === 0 ? `${ROWS} rows, ${KEYS} keys; rows/s by round ${ms.map((m) => Math.round(m.rowsPerSec)).join(", ")}` : `vs COPY by round ${byRound(ratiosTo(i, 0))}`,
        ...(i >= 4 ? [`vs ${RECEIVERS} COPYs ${median(ratiosTo(i, 1)).toFixed(2)}x`] : []),
        ...(i === 5 ? [`cpu: the process's; SQS stand-in ${(medianOrUndefined(ms.map((m) => m.standInUs)) ?? Number.NaN).toFixed(1)} µs/row`] : []),
        ...(i <= 1 ? ["cpu: psql's"] : []),
        ...(isQueued(i) ? [`${(queueBytes / ROWS).toFixed(0)} B/row on the queue (${messages.length} messages)`] : [])
      ]
      return {
        group: GROUP,
        subject: subject.subject,
        rate: median(ms.map((m) => m.rowsPerSec)),
        unit: "rows/s",
        ...(i === 0 ? {} : { ratio: median(ratiosTo(i, 0)) }),
        ...(clientUs === undefined ? {} : { cpuUsPerRequest: clientUs }),
        ...(databaseUs === undefined ? {} : { helperCpuUsPerRequest: databaseUs }),
        note: notes.join("; ")
      }
    })
    rowsOut.push(
      { group: GROUP, subject: "  of which: decodeQueueMessage (no database)", rate: 1e6 / median(decodeUs), unit: "rows/s/core", cpuUsPerRequest: median(decodeUs), note: "this thread's CPU" },
      {
        group: GROUP, subject: "  of which: sort by id + usageRowsInsertParams (no database)", rate: 1e6 / median(paramsUs), unit: "rows/s/core",
        cpuUsPerRequest: median(paramsUs), note: "this thread's CPU"
      }
    )
    const checks: Array<TargetCheck> = subjects.map((subject, i) => ({
      name: `${GROUP}: ${subject.subject}: every row stored${isQueued(i) ? ", counted once" : ""}`,
      pass: failures[i]!.length === 0,
      detail: failures[i]!.length === 0 ? `${ROWS} rows in each of ${s.rounds} rounds` : failures[i]!.join("; ")
    }))
    // The target: the queued writer as it runs by default (RECEIVERS receives in flight) against one COPY,
    // its handler alone and the whole process.
    for (const i of [4, 5]) {
      const ratios = ratiosTo(i, 0)
      checks.push({
        name: `${GROUP}: ${subjects[i]!.subject} >= ${RATIO_TARGET}x COPY`,
        pass: median(ratios) >= RATIO_TARGET,
        detail: `${median(ratios).toFixed(2)}x, median of ${s.rounds} rounds (${byRound(ratios)})`
      })
    }
    return { rows: rowsOut, checks }
  } finally {
    await runtime.dispose()
    try {
      psqlAdmin(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`)
    } catch (error) {
      console.error(`could not drop ${DATABASE}: ${messageOf(error)}`)
    }
  }
}

/**
 * The queued writer (decode, insert, counters) in rows/s against COPY and the plain multi-row
 * INSERT of the same rows on this machine's PostgreSQL; `--only queued`.
 */
export const queuedWriterBenchmark: Benchmark = {
  name: "queued writer consumer: rows/s into PostgreSQL against COPY and a multi-row INSERT",
  run: runQueuedWriterBenchmark
}
