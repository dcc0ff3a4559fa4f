/**
 * `npm run bench`: the real server (LPO) against bare node:http / dgram servers, side by side in
 * one run on this machine, with the load client of `tb stress`.
 *
 * Each comparison starts the bare server as a child process, stresses it and stops it, then does
 * the same with `tb serve`; after the real server's clean shutdown the usage rows it wrote are
 * counted and compared with the requests it says it served. The 1-process comparisons run the
 * real server twice: usage rows into the embedded database (the default) and to an SQS stand-in
 * in its own process (production's shape). Server CPU per request is read from /proc around each
 * measured window. Prints a table and PASS/FAIL per target; exits non-zero when any target fails
 * (including "server not available").
 *
 *   node dist/bench/run.js [--duration 6s] [--warmup 1.5s] [--only <part of a benchmark's name>]
 */
import { spawn, type ChildProcess } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as dgram from "node:dgram"
import { existsSync } from "node:fs"
import { mkdtemp, rm } from "node:fs/promises"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { parseDurationMs, stressHttp, stressUdp, type StressResult } from "../src/programs/stress.ts"
import { STAND_IN_AWS_ENV } from "../src/simulators/awsJsonProtocol.ts"
import { SQS_STATS_PATH } from "../src/simulators/sqsStandIn.ts"
import { feedIngestBenchmark } from "./feedIngest.ts"
import { queuedWriterBenchmark } from "./queuedWriter.ts"
import { streamFanoutBenchmark } from "./streamFanout.ts"
import { summaryBenchmark } from "./summary.ts"
import { syncBenchmark } from "./sync.ts"
import { webhookDeliveryBenchmark } from "./webhookDelivery.ts"
import { canMeasureCpu, cpuBetween, sampleCpu, type CpuSample } from "./processCpu.ts"
import { median } from "../src/domain/consensus.ts"
import { messageOf } from "../src/domain/errorMessage.ts"

// ---------------------------------------------------------------------------------------------
// What a benchmark reports

export interface BenchRow {
  readonly group: string
  readonly subject: string
  /** Throughput in `unit`; undefined when the subject could not be measured. */
  readonly rate?: number
  readonly unit: string
  readonly p50Ms?: number
  readonly p99Ms?: number
  readonly errors?: number
  /** This row's rate over its baseline's. */
  readonly ratio?: number
  /** CPU of the server's own processes (workers included) per request answered in the measured window. */
  readonly cpuUsPerRequest?: number
  /** cpuUsPerRequest over its baseline's. */
  readonly cpuRatio?: number
  /** CPU of the server's helper processes (embedded database, simulators, SQS stand-in) per request. */
  readonly helperCpuUsPerRequest?: number
  readonly note?: string
}

export interface TargetCheck {
  readonly name: string
  readonly pass: boolean
  readonly detail: string
}

export interface BenchReport {
  readonly rows: ReadonlyArray<BenchRow>
  readonly checks: ReadonlyArray<TargetCheck>
}

export interface BenchSettings {
  readonly durationMs: number
  readonly warmupMs: number
  readonly connections: number
  readonly cores: number
  /** Alternating rounds of baseline and real server measurements; figures are their medians. */
  readonly rounds: number
}

export interface Benchmark {
  readonly name: string
  readonly run: (settings: BenchSettings) => Promise<BenchReport>
}

const RATIO_TARGET = 0.6
const P99_TARGET_MS = 5
const READY_TIMEOUT_MS = 60_000
const CHILD_READY_TIMEOUT_MS = 10_000
/** SHUTDOWN_TIMEOUT_MS (10 s) plus room for the workers and the final flush. */
const SERVER_EXIT_TIMEOUT_MS = 25_000
const USAGE_COUNT_TIMEOUT_MS = 60_000
/** The SQS stand-in decodes every body it received when asked: allow for a few hundred thousand rows. */
const SQS_STATS_TIMEOUT_MS = 30_000
/** Lets requests abandoned at the end of a stress run finish before the counters are read. */
const SETTLE_MS = 500

const distBench = path.dirname(fileURLToPath(import.meta.url))
const CLI = path.resolve(distBench, "../src/programs/cli.js")
const BARE_HTTP = path.join(distBench, "bareHttp.js")
const BARE_UDP = path.join(distBench, "bareUdp.js")
const SQS_STAND_IN = path.resolve(distBench, "../src/simulators/sqsStandInMain.js")
const UDP_HANDLER = path.join(distBench, "udpHandler.js")
/** Metered like a sold tier (token bucket and quota on every request), with limits no run reaches. */
const BENCH_TIER = "loadtest"

// ---------------------------------------------------------------------------------------------
// Child processes

interface Child {
  readonly proc: ChildProcess
  /** Resolves with the exit code (or the signal's name) once the process has exited. */
  readonly exited: Promise<number | string>
  readonly tail: () => string
}

const children = new Set<ChildProcess>()

const startChild = (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv): Child => {
  const proc = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] })
  children.add(proc)
  const lines: Array<string> = []
  const keep = (chunk: Buffer): void => {
    lines.push(...chunk.toString("utf8").split("\n").filter((l) => l.trim() !== ""))
    if (lines.length > 40) lines.splice(0, lines.length - 40)
  }
  proc.stdout?.on("data", keep)
  proc.stderr?.on("data", keep)
  const exited = new Promise<number | string>((resolve) => {
    proc.on("error", (error) => {
      lines.push(String(error))
      children.delete(proc)
      resolve("spawn-error")
    })
    proc.on("exit", (code, signal) => {
      children.delete(proc)
      resolve(code ?? signal ?? "unknown")
    })
  })
  return { proc, exited, tail: () => lines.slice(-8).map((l) => `      | ${l}`).join("\n") }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

const withTimeout = <A>(promise: Promise<A>, ms: number): Promise<A | "timeout"> =>
  Promise.race([promise, sleep(ms).then(() => "timeout" as const)])

/** SIGTERM, then SIGKILL if it is still there after `timeoutMs`. */
const stopChild = async (
  child: Child,
  timeoutMs: number
): Promise<{ readonly exit: number | string; readonly killed: boolean }> => {
  child.proc.kill("SIGTERM")
  const exit = await withTimeout(child.exited, timeoutMs)
  if (exit !== "timeout") return { exit, killed: false }
  child.proc.kill("SIGKILL")
  return { exit: await child.exited, killed: true }
}

/** Waits for "ready <port> [rest]" on a helper's stdout (the bare servers, the SQS stand-in). */
const readyLine = (child: Child): Promise<{ readonly port: number; readonly rest: string }> =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no 'ready' line in time")), CHILD_READY_TIMEOUT_MS)
    let seen = ""
    child.proc.stdout?.on("data", (chunk: Buffer) => {
      seen += chunk.toString("utf8")
      const m = /ready (\d+)([^\n]*)\n/u.exec(seen)
      if (m !== null) {
        clearTimeout(timer)
        resolve({ port: Number(m[1]), rest: (m[2] ?? "").trim() })
      }
    })
    void child.exited.then((code) => {
      clearTimeout(timer)
      reject(new Error(`exited (${code}): ${child.tail()}`))
    })
  })

const freeTcpPort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })

const freeUdpPort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const socket = dgram.createSocket("udp4")
    socket.once("error", reject)
    socket.bind(0, "127.0.0.1", () => {
      const { port } = socket.address()
      socket.close(() => resolve(port))
    })
  })

// ---------------------------------------------------------------------------------------------
// Control requests to the real server (not part of the measurement)

interface Reply {
  readonly status: number
  readonly body: unknown
}

const call = (
  port: number,
  method: string,
  urlPath: string,
  headers: Record<string, string> = {},
  body?: unknown,
  timeoutMs = 5_000
): Promise<Reply> =>
  new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method,
        path: urlPath,
        // A fresh connection each time, so with node:cluster successive calls reach different workers.
        agent: false,
        timeout: timeoutMs,
        headers: payload === undefined ? headers : { ...headers, "content-type": "application/json" }
      },
      (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8")
          let parsed: unknown = text
          try {
            parsed = JSON.parse(text)
          } catch {
            // not JSON: keep the text for the error message
          }
          resolve({ status: res.statusCode ?? 0, body: parsed })
        })
        res.on("error", reject)
      }
    )
    req.on("timeout", () => req.destroy(new Error(`${method} ${urlPath}: timed out`)))
    req.on("error", reject)
    req.end(payload)
  })

const field = (value: unknown, ...keys: ReadonlyArray<string>): unknown =>
  keys.reduce<unknown>(
    (at, key) => (typeof at === "object" && at !== null ? (at as Record<string, unknown>)[key] : undefined),
    value
  )

// ---------------------------------------------------------------------------------------------
// The real server

interface Lpo {
  readonly child: Child
  readonly pid: number
  readonly workers: number
  readonly httpPort: number
  readonly udpPort: number
  readonly dataDir: string
  readonly env: NodeJS.ProcessEnv
  readonly adminToken: string
  readonly key: string
  /**
   * Answered /ready polls: requests_total counts them but they leave no usage row. (The bench's
   * admin calls do count and do leave rows, service ADMIN.)
   */
  readonly readyPolls: number
}

/**
 * Settings that would point the bench at real infrastructure: the bench runs embedded, or against
 * its own loopback stand-ins, whatever the shell says.
 */
const isExternalSetting = (name: string): boolean =>
  ["DATABASE_URL", "DATABASE_READER_URL", "VALKEY_URL", "CACHE_URL", "SQS_QUEUE_URL", "DB_SECRET_NAME"].includes(name) ||
  name.startsWith("FEED_URL_") ||
  name.startsWith("FEED_REST_URL_") ||
  name.startsWith("AWS_")

const lpoEnv = (vars: Record<string, string>): NodeJS.ProcessEnv => ({
  ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !isExternalSetting(name))),
  ...vars
})

const startLpo = async (workers: number, extraEnv: Record<string, string>): Promise<Lpo | string> => {
  if (!existsSync(CLI)) return `${CLI} not found (npm run build)`
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "tb-bench-"))
  const [httpPort, udpPort] = [await freeTcpPort(), await freeUdpPort()]
  const adminToken = randomBytes(24).toString("hex")
  const env = lpoEnv({
    SERVER_TYPE: "APP_SERVER",
    FEEDS: "simulated",
    LPO_HTTP_PORT: String(httpPort),
    LPO_UDP_PORT: String(udpPort),
    BIND_HOST: "127.0.0.1",
    DATA_DIR: dataDir,
    LPO_WORKERS: String(workers),
    ADMIN_TOKEN: adminToken,
    LOG_LEVEL: "Warn",
    // Any free port: a bench server never takes 9464 from a server already running here.
    METRICS_PORT: "0",
    ...extraEnv
  })
  const child = startChild([CLI, "serve"], env)
  const fail = async (reason: string): Promise<string> => {
    await stopChild(child, 5_000)
    await rm(dataDir, { recursive: true, force: true })
    const tail = child.tail()
    return tail === "" ? reason : `${reason}\n${tail}`
  }
  const pid = child.proc.pid
  if (pid === undefined) return fail("could not start the server process")
  let readyPolls = 0
  const deadline = Date.now() + READY_TIMEOUT_MS
  let exited: number | string | undefined
  void child.exited.then((code) => (exited = code))
  for (;;) {
    if (exited !== undefined) return fail(`server exited (${exited}) before it was ready`)
    if (Date.now() > deadline) return fail(`GET /ready did not answer 200 within ${READY_TIMEOUT_MS / 1000} s`)
    const ready = await call(httpPort, "GET", "/ready").catch(() => undefined)
    if (ready !== undefined) readyPolls++
    if (ready?.status === 200) break
    await sleep(250)
  }
  const created = await call(httpPort, "POST", "/admin/keys", { "x-admin-token": adminToken }, { tier: BENCH_TIER }).catch(
    (error: unknown) => ({ status: 0, body: String(error) })
  )
  const key = field(created.body, "data", "key")
  if (created.status !== 201 || typeof key !== "string") {
    return fail(`POST /admin/keys {"tier":"${BENCH_TIER}"} answered ${created.status}: ${JSON.stringify(created.body).slice(0, 200)}`)
  }
  return { child, pid, workers, httpPort, udpPort, dataDir, env, adminToken, key, readyPolls }
}

interface ServedCount {
  readonly requestsTotal: number
  readonly rowsRecorded: number
  /** Rows the usage thread reports written (it reports every 250 ms). */
  readonly rowsWritten: number
}

/**
 * Sums the runtime counters of every worker. Each call opens a fresh connection, so node:cluster
 * hands successive calls to different workers; a worker is known by the envelope's `node`.
 */
const servedCounts = async (lpo: Lpo): Promise<ServedCount | string> => {
  const latest = new Map<string, ServedCount>()
  for (let attempt = 0; attempt < 12 * lpo.workers && latest.size < lpo.workers; attempt++) {
    const reply = await call(lpo.httpPort, "GET", "/admin/stress-stats", { "x-admin-token": lpo.adminToken }).catch(
      () => undefined
    )
    if (reply === undefined) continue
    const node = field(reply.body, "node")
    const requestsTotal = field(reply.body, "data", "counters", "requests_total")
    const rowsRecorded = field(reply.body, "data", "counters", "usage_rows_recorded")
    const rowsWritten = field(reply.body, "data", "counters", "usage_rows_written")
    if (reply.status !== 200 || typeof node !== "string" || typeof requestsTotal !== "number") {
      return `GET /admin/stress-stats answered ${reply.status}: ${JSON.stringify(reply.body).slice(0, 200)}`
    }
    latest.set(node, {
      requestsTotal,
      rowsRecorded: typeof rowsRecorded === "number" ? rowsRecorded : Number.NaN,
      rowsWritten: typeof rowsWritten === "number" ? rowsWritten : Number.NaN
    })
  }
  if (latest.size < lpo.workers) return `GET /admin/stress-stats reached ${latest.size} of ${lpo.workers} workers`
  let requestsTotal = 0
  let rowsRecorded = 0
  let rowsWritten = 0
  for (const c of latest.values()) {
    requestsTotal += c.requestsTotal
    rowsRecorded += c.rowsRecorded
    rowsWritten += c.rowsWritten
  }
  return { requestsTotal, rowsRecorded, rowsWritten }
}

/** How long the bench waits for the usage rows of a measurement to be written before the next one. */
const BACKLOG_DRAIN_TIMEOUT_MS = 60_000
/** Rows recorded and not yet written, below which the writer counts as caught up (a batch or two in flight). */
const BACKLOG_CAUGHT_UP_ROWS = 5_000

interface Backlog {
  /** Rows recorded and not yet written when the load stopped. */
  readonly rowsAtEnd: number
  /** How long the writer then took to catch up (BACKLOG_CAUGHT_UP_ROWS), or the timeout. */
  readonly drainMs: number
}

/**
 * The usage rows still to be written when a load stops, and the time the writer needs to catch
 * up. A server whose usage writer falls behind would show a better rate than it can sustain, so
 * this is reported beside every real measurement, and the next measurement waits for the catch-up.
 */
const usageBacklog = async (lpo: Lpo): Promise<Backlog | undefined> => {
  const pending = async () => {
    const c = await servedCounts(lpo)
    return typeof c === "string" ? undefined : c.rowsRecorded - c.rowsWritten
  }
  const rowsAtEnd = await pending()
  if (rowsAtEnd === undefined || Number.isNaN(rowsAtEnd)) return undefined
  const started = performance.now()
  for (let left = rowsAtEnd; left > BACKLOG_CAUGHT_UP_ROWS && performance.now() - started < BACKLOG_DRAIN_TIMEOUT_MS;) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    left = (await pending()) ?? 0
  }
  return { rowsAtEnd, drainMs: performance.now() - started }
}

// ---------------------------------------------------------------------------------------------
// Where the usage rows go

interface RowCount {
  readonly rows: number
  /** Where they were counted, for the check's detail. */
  readonly where: string
}

interface OpenUsageDestination {
  /** Added to the server's environment. */
  readonly env: Record<string, string>
  /** Processes outside the server's tree doing work for it (billed as helpers). */
  readonly helperPids: ReadonlyArray<number>
  /** Rows that arrived; called once the server has stopped (its final flush done). */
  readonly countRows: (lpo: Lpo) => Promise<RowCount | string>
  readonly close: () => Promise<void>
}

interface UsageDestination {
  /** As shown in the table, e.g. "usage → SQS". */
  readonly label: string
  readonly open: () => Promise<OpenUsageDestination | string>
}

/** `tb usage-count --json` against the stopped server's DATA_DIR. */
const usageRows = async (lpo: Lpo): Promise<RowCount | string> => {
  const child = startChild([CLI, "usage-count", "--json"], lpo.env)
  let stdout = ""
  child.proc.stdout?.on("data", (c: Buffer) => (stdout += c.toString("utf8")))
  const exit = await withTimeout(child.exited, USAGE_COUNT_TIMEOUT_MS)
  if (exit === "timeout") {
    await stopChild(child, 2_000)
    return "usage-count timed out"
  }
  for (const line of stdout.split("\n").reverse()) {
    try {
      const rows = field(JSON.parse(line), "rows")
      if (typeof rows === "number") return { rows, where: "usage rows (tb usage-count)" }
    } catch {
      // log lines before the JSON
    }
  }
  return `usage-count exited ${exit} without {"rows": N}: ${child.tail()}`
}

/** The default: rows go straight into the embedded PostgreSQL, a child process of the server. */
const embeddedDatabase: UsageDestination = {
  label: "usage → embedded PG",
  open: () => Promise.resolve({ env: {}, helperPids: [], countRows: usageRows, close: () => Promise.resolve() })
}

/** What the SQS stand-in says it received (`GET /_stats`). */
const sqsStandInRows = async (port: number): Promise<RowCount | string> => {
  const reply = await call(port, "GET", SQS_STATS_PATH, {}, undefined, SQS_STATS_TIMEOUT_MS).catch((error: unknown) => String(error))
  if (typeof reply === "string") return `SQS stand-in GET ${SQS_STATS_PATH}: ${reply}`
  const [messages, rows, undecodable, violations] = ["messages", "rows", "undecodable", "violations"].map((k) => field(reply.body, k))
  if (reply.status !== 200 || typeof messages !== "number" || typeof rows !== "number" || typeof undecodable !== "number" || !Array.isArray(violations)) {
    return `SQS stand-in GET ${SQS_STATS_PATH} answered ${reply.status}: ${JSON.stringify(reply.body).slice(0, 200)}`
  }
  if (undecodable > 0) return `SQS stand-in received ${undecodable} bodies that are not a usage batch`
  if (violations.length > 0) return `SQS quota violations: ${violations.slice(0, 3).join("; ")}`
  return { rows, where: `usage rows in ${messages} SQS messages` }
}

/** Production's shape: rows to SQS (here the loopback stand-in, its own process); the database work happens elsewhere. */
const sqsQueue: UsageDestination = {
  label: "usage → SQS",
  open: async () => {
    if (!existsSync(SQS_STAND_IN)) return `${SQS_STAND_IN} not found (npm run build)`
    const child = startChild([SQS_STAND_IN, "0"], process.env)
    const ready = await readyLine(child).catch((error: unknown) => (messageOf(error)))
    if (typeof ready === "string" || ready.rest === "" || child.proc.pid === undefined) {
      await stopChild(child, 2_000)
      return `SQS stand-in did not start: ${typeof ready === "string" ? ready : "no queue URL on its ready line"}`
    }
    return {
      env: { ...STAND_IN_AWS_ENV, SQS_QUEUE_URL: ready.rest, AWS_ENDPOINT_URL_SQS: `http://127.0.0.1:${ready.port}` },
      helperPids: [child.proc.pid],
      countRows: () => sqsStandInRows(ready.port),
      close: async () => void (await stopChild(child, 5_000))
    }
  }
}

/** Reads the counters, shuts the server down cleanly, then counts the rows that arrived. */
const finishLpo = async (lpo: Lpo, label: string, destination: OpenUsageDestination): Promise<ReadonlyArray<TargetCheck>> => {
  await sleep(SETTLE_MS)
  const served = await servedCounts(lpo)
  const stopped = await stopChild(lpo.child, SERVER_EXIT_TIMEOUT_MS)
  const checks: Array<TargetCheck> = [
    {
      name: `${label}: clean shutdown on SIGTERM`,
      pass: stopped.exit === 0 && !stopped.killed,
      detail: stopped.killed ? `still running after ${SERVER_EXIT_TIMEOUT_MS / 1000} s, killed` : `exit ${stopped.exit}`
    }
  ]
  const rows = await destination.countRows(lpo)
  await rm(lpo.dataDir, { recursive: true, force: true })
  const name = `${label}: usage rows lost = 0`
  if (typeof served === "string") return [...checks, { name, pass: false, detail: served }]
  if (typeof rows === "string") return [...checks, { name, pass: false, detail: rows }]
  const servedWithRows = served.requestsTotal - lpo.readyPolls
  const lost = servedWithRows - rows.rows
  return [
    ...checks,
    {
      name,
      pass: lost === 0,
      detail:
        `rows-lost ${lost}: served ${servedWithRows} (requests_total ${served.requestsTotal} - ${lpo.readyPolls} /ready polls), ` +
        `${rows.where} ${rows.rows}; usage_rows_recorded ${served.rowsRecorded}`
    }
  ]
}

// ---------------------------------------------------------------------------------------------
// Measurements

const cpuAvailable = canMeasureCpu()

interface Measured {
  readonly result: StressResult
  /** CPU µs per request answered in the measured window, of the server's own processes; undefined without /proc. */
  readonly serverCpuUs?: number
  /** The same for its helper processes; undefined when it has none. */
  readonly helperCpuUs?: number
  /** Usage rows not yet written when the load stopped (real servers only). */
  readonly backlog?: Backlog
}

/**
 * Runs `load` and samples CPU at the start and end of its measured window, on timers set just
 * after the stress client's own (stress.ts `schedule`), so they fire right after them.
 */
const measure = async (s: BenchSettings, sample: () => CpuSample, load: () => Promise<StressResult>): Promise<Measured> => {
  const running = load()
  if (!cpuAvailable) return { result: await running }
  const window = new Promise<{ readonly before: CpuSample; readonly after: CpuSample }>((resolve) => {
    setTimeout(() => {
      const before = sample()
      setTimeout(() => resolve({ before, after: sample() }), s.durationMs)
    }, s.warmupMs)
  })
  const [result, { before, after }] = await Promise.all([running, window])
  if (result.requests === 0) return { result }
  const spent = cpuBetween(before, after)
  return {
    result,
    serverCpuUs: (spent.serverMs * 1000) / result.requests,
    ...(spent.helpers === 0 ? {} : { helperCpuUs: (spent.helperMs * 1000) / result.requests })
  }
}

const httpLoad = (port: number, s: BenchSettings, key?: string): Promise<StressResult> =>
  stressHttp({
    url: `http://127.0.0.1:${port}/price?asset=BTC`,
    ...(key === undefined ? {} : { headers: { "X-API-Key": key } }),
    connections: s.connections,
    durationMs: s.durationMs,
    warmupMs: s.warmupMs
  })

const udpLoad = (port: number, s: BenchSettings, key: string): Promise<StressResult> => {
  const prefix = `v1 price ${key} BTC `
  return stressUdp({
    host: "127.0.0.1",
    port,
    payload: (i) => Buffer.from(prefix + i, "latin1"),
    concurrency: s.connections,
    durationMs: s.durationMs,
    warmupMs: s.warmupMs
  })
}

const unavailableRow = (group: string, subject: string, reason: string): BenchRow => ({
  group,
  subject,
  unit: "req/s",
  note: reason.split("\n")[0] ?? reason
})

/** A bare server kept running for a whole benchmark, measured in turns with the real one. */
interface Bare {
  readonly port: number
  readonly pid: number
  readonly stop: () => Promise<void>
}

/** Starts a bare server as a child process; the reason if it would not start. */
const startBare = async (script: string, workers: number): Promise<Bare | string> => {
  const child = startChild([script, "0", String(workers)], process.env)
  try {
    const { port } = await readyLine(child)
    const pid = child.proc.pid
    if (pid === undefined) throw new Error("no pid")
    return { port, pid, stop: async () => void (await stopChild(child, 5_000)) }
  } catch (error) {
    await stopChild(child, 5_000)
    return `bare server failed: ${messageOf(error)}`
  }
}

const medianOf = (ms: ReadonlyArray<Measured>, pick: (m: Measured) => number | undefined): number | undefined => {
  const values = ms.map(pick).filter((v): v is number => v !== undefined)
  return values.length === 0 ? undefined : median(values)
}

/** One subject's rounds as one row: medians of each figure; answers and errors summed over the rounds. */
const roundsRow = (group: string, subject: string, ms: ReadonlyArray<Measured>, pairedRatios?: ReadonlyArray<number>, baseCpuUs?: number): BenchRow => {
  const statusTotals: Record<string, number> = {}
  for (const m of ms) for (const [status, n] of Object.entries(m.result.statusCounts)) statusTotals[status] = (statusTotals[status] ?? 0) + n
  const cpu = medianOf(ms, (m) => m.serverCpuUs)
  const helpers = medianOf(ms, (m) => m.helperCpuUs)
  const backlogs = ms.flatMap((m) => (m.backlog === undefined ? [] : [m.backlog]))
  const note = Object.entries(statusTotals).map(([status, n]) => `${status}:${n}`).join(" ") +
    (pairedRatios === undefined ? "" : `; per round ${pairedRatios.map((r) => r.toFixed(2)).join(" ")}`) +
    (backlogs.length === 0 ? "" : `; unwritten rows at end ${backlogs.map((b) => `${b.rowsAtEnd} (${(b.drainMs / 1000).toFixed(1)} s)`).join(" ")}`)
  return {
    group,
    subject,
    rate: median(ms.map((m) => m.result.rps)),
    unit: "req/s",
    p50Ms: median(ms.map((m) => m.result.p50Ms)),
    p99Ms: median(ms.map((m) => m.result.p99Ms)),
    errors: ms.reduce((n, m) => n + m.result.errors + m.result.timeouts, 0),
    ...(pairedRatios === undefined ? {} : { ratio: median(pairedRatios) }),
    ...(cpu === undefined ? {} : { cpuUsPerRequest: cpu }),
    ...(cpu === undefined || baseCpuUs === undefined || baseCpuUs === 0 ? {} : { cpuRatio: cpu / baseCpuUs }),
    ...(helpers === undefined ? {} : { helperCpuUsPerRequest: helpers }),
    note
  }
}

/** The targets for one real server over its rounds: the median paired ratio, the median p99, and every answer in every round. */
const targetChecks = (
  label: string, load: string, real: ReadonlyArray<Measured>, bare: ReadonlyArray<Measured>, ratios: ReadonlyArray<number>, okStatus: string
): Array<TargetCheck> => {
  const ratio = median(ratios)
  const p99 = median(real.map((m) => m.result.p99Ms))
  const bareP99 = bare.length === 0 ? undefined : median(bare.map((m) => m.result.p99Ms))
  const requests = real.reduce((n, m) => n + m.result.requests, 0)
  const ok = real.reduce((n, m) => n + (m.result.statusCounts[okStatus] ?? 0), 0)
  const errors = real.reduce((n, m) => n + m.result.errors, 0)
  const timeouts = real.reduce((n, m) => n + m.result.timeouts, 0)
  const firstRefusals = real.flatMap((m) => Object.entries(m.result.firstAnswers).filter(([status]) => status !== okStatus))
  return [
    {
      name: `${label}: >= ${RATIO_TARGET}x bare`,
      pass: ratios.length > 0 && ratio >= RATIO_TARGET,
      detail: ratios.length === 0 ? "no baseline" : `${ratio.toFixed(2)}x, median of ${ratios.length} rounds (${ratios.map((r) => r.toFixed(2)).join(", ")})`
    },
    {
      name: `${label}: p99 < ${P99_TARGET_MS} ms at ${load}`,
      pass: requests > 0 && p99 < P99_TARGET_MS,
      detail: `p99 ${p99.toFixed(2)} ms, median of ${real.length} rounds (${real.map((m) => m.result.p99Ms.toFixed(2)).join(", ")})` +
        (bareP99 === undefined ? "" : `; bare ${bareP99.toFixed(2)} ms`)
    },
    {
      name: `${label}: every answer ${okStatus}, no errors or timeouts`,
      pass: requests > 0 && ok === requests && errors === 0 && timeouts === 0,
      detail: `${ok} of ${requests} ${okStatus}; errors ${errors}, timeouts ${timeouts}` +
        firstRefusals.slice(0, 3).map(([status, answer]) => `; first ${status}: ${answer}`).join("")
    }
  ]
}

/** One protocol of one comparison: the bare server to measure against, and how to load a port. */
interface Comparison {
  readonly group: string
  readonly bare: Bare
  readonly bareSubject: string
  readonly load: (port: number, key: string | undefined) => Promise<StressResult>
  /** The real server's port for this protocol. */
  readonly portOf: (lpo: Lpo) => number
  readonly routeSubject: string
  readonly loadLabel: string
  readonly okStatus: string
}

/**
 * One real-server run: starts where its usage rows go, then `tb serve` with `workers`, and
 * measures it in `rounds` alternating with the bare servers (bare, real, for each comparison in
 * turn), so a change in the machine's speed during the run hits both sides of each pair. Then
 * checks the shutdown and the rows. Answers the rows, checks and the bare measurements taken.
 */
const lpoRun = async (
  s: BenchSettings,
  workers: number,
  destination: UsageDestination,
  comparisons: ReadonlyArray<Comparison>
): Promise<BenchReport & { readonly bareRounds: ReadonlyArray<ReadonlyArray<Measured>> }> => {
  const subject = `LPO (${destination.label})`
  const label = `LPO ${workers === 1 ? "1 process" : `${workers} workers`}, ${destination.label}`
  const rows: Array<BenchRow> = []
  const checks: Array<TargetCheck> = []
  const bareRounds = comparisons.map((): Array<Measured> => [])
  const unavailable = (reason: string) => {
    for (const c of comparisons) rows.push(unavailableRow(c.group, subject, `not available (${reason.split("\n")[0]})`))
    checks.push({ name: `${label}: server available`, pass: false, detail: reason })
    return { rows, checks, bareRounds }
  }
  const opened = await destination.open()
  if (typeof opened === "string") return unavailable(opened)
  try {
    const lpo = await startLpo(workers, opened.env)
    if (typeof lpo === "string") return unavailable(lpo)
    const sample = (): CpuSample => sampleCpu(lpo.pid, opened.helperPids)
    const realRounds = comparisons.map((): Array<Measured> => [])
    for (let round = 0; round < s.rounds; round++) {
      for (const [i, c] of comparisons.entries()) {
        bareRounds[i]!.push(await measure(s, () => sampleCpu(c.bare.pid), () => c.load(c.bare.port, undefined)))
        const measured = await measure(s, sample, () => c.load(c.portOf(lpo), lpo.key))
        const backlog = await usageBacklog(lpo)
        realRounds[i]!.push(backlog === undefined ? measured : { ...measured, backlog })
      }
    }
    for (const [i, c] of comparisons.entries()) {
      const real = realRounds[i]!
      const bare = bareRounds[i]!
      const ratios = real.map((m, r) => (bare[r]!.result.rps === 0 ? 0 : m.result.rps / bare[r]!.result.rps))
      rows.push(roundsRow(c.group, `${subject} ${c.routeSubject}`, real, ratios, medianOf(bare, (m) => m.serverCpuUs)))
      checks.push(...targetChecks(`${c.group}, ${destination.label}`, c.loadLabel, real, bare, ratios, c.okStatus))
    }
    checks.push(...(await finishLpo(lpo, label, opened)))
    return { rows, checks, bareRounds }
  } finally {
    await opened.close()
  }
}

const httpComparison = (group: string, bare: Bare, bareSubject: string, s: BenchSettings): Comparison => ({
  group, bare, bareSubject, load: (port, key) => httpLoad(port, s, key), portOf: (lpo) => lpo.httpPort,
  routeSubject: "GET /price", loadLabel: `${s.connections} connections`, okStatus: "200"
})

const udpComparison = (group: string, bare: Bare, s: BenchSettings): Comparison => ({
  group, bare, bareSubject: "bare dgram", load: (port, key) => udpLoad(port, s, key ?? "bench"), portOf: (lpo) => lpo.udpPort,
  routeSubject: "v1 price", loadLabel: `${s.connections} in flight`, okStatus: "ok"
})

/**
 * The real server against bare servers started once for the whole benchmark: for each place
 * usage rows can go, a server of its own measured in alternating rounds. The bare rows are the
 * medians of every bare measurement taken.
 */
const compareLpo = async (
  s: BenchSettings,
  workers: number,
  bares: ReadonlyArray<{ readonly script: string; readonly comparison: (bare: Bare) => Comparison }>
): Promise<BenchReport> => {
  const report = { rows: new Array<BenchRow>(), checks: new Array<TargetCheck>() }
  const started: Array<Bare> = []
  try {
    const comparisons: Array<Comparison> = []
    for (const b of bares) {
      const bare = await startBare(b.script, workers)
      if (typeof bare === "string") {
        report.checks.push({ name: `${path.basename(b.script)}: baseline`, pass: false, detail: bare })
        return report
      }
      started.push(bare)
      comparisons.push(b.comparison(bare))
    }
    const bareMeasured = comparisons.map((): Array<Measured> => [])
    const runRows: Array<BenchRow> = []
    for (const destination of [embeddedDatabase, sqsQueue]) {
      const run = await lpoRun(s, workers, destination, comparisons)
      runRows.push(...run.rows)
      report.checks.push(...run.checks)
      run.bareRounds.forEach((ms, i) => bareMeasured[i]!.push(...ms))
    }
    // Each protocol's rows together, baseline first.
    for (const [i, c] of comparisons.entries()) {
      if (bareMeasured[i]!.length > 0) report.rows.push(roundsRow(c.group, c.bareSubject, bareMeasured[i]!))
      report.rows.push(...runRows.filter((r) => r.group === c.group))
    }
    return report
  } finally {
    for (const bare of started) await bare.stop()
  }
}

const lpoSingleProcess: Benchmark = {
  name: "LPO, 1 process: HTTP /price and UDP v1 price, usage → embedded PG, then usage → SQS",
  run: (s) =>
    compareLpo(s, 1, [
      { script: BARE_HTTP, comparison: (bare) => httpComparison("HTTP 1 process", bare, "bare node:http", s) },
      { script: BARE_UDP, comparison: (bare) => udpComparison("UDP 1 process", bare, s) }
    ])
}

const lpoWorkerPerCore: Benchmark = {
  name: "LPO, one worker per core: HTTP /price, usage → embedded PG, then usage → SQS",
  run: (s) =>
    compareLpo(s, s.cores, [
      { script: BARE_HTTP, comparison: (bare) => httpComparison(`HTTP ${s.cores} workers`, bare, "bare node:http (cluster)", s) }
    ])
}

/**
 * The UDP price handler alone (bench/udpHandler.ts, its own process): the serving thread's CPU per
 * datagram without the kernel's send and receive, where the LPO's own code shows.
 */
const udpHandlerBenchmark: Benchmark = {
  name: "UDP price handler, serving-thread CPU per datagram (no socket)",
  run: async () => {
    const group = "UDP handler, no socket"
    const child = startChild([UDP_HANDLER, "--json"], lpoEnv({}))
    let stdout = ""
    child.proc.stdout?.on("data", (c: Buffer) => (stdout += c.toString("utf8")))
    const exit = await withTimeout(child.exited, 180_000)
    if (exit === "timeout") await stopChild(child, 2_000)
    const line = stdout.trim().split("\n").at(-1) ?? ""
    let parsed: unknown
    try {
      parsed = JSON.parse(line)
    } catch {
      parsed = undefined
    }
    const [cpuNs, datagrams, ok, rows] = ["cpuNsPerDatagram", "datagrams", "okReplies", "usageRows"].map((k) => field(parsed, k))
    if (typeof cpuNs !== "number" || typeof datagrams !== "number" || typeof ok !== "number" || typeof rows !== "number") {
      const reason = `udpHandler ${exit === "timeout" ? "timed out" : `exited ${exit}`} without a result: ${child.tail()}`
      return { rows: [unavailableRow(group, "makeUdpPriceHandler", reason)], checks: [{ name: `${group}: measured`, pass: false, detail: reason }] }
    }
    return {
      rows: [{ group, subject: "makeUdpPriceHandler (key, limits, price, reply, usage row)", rate: 1e9 / cpuNs, unit: "datagrams/s/core", cpuUsPerRequest: cpuNs / 1000, note: `${datagrams} datagrams` }],
      checks: [{ name: `${group}: every reply ok, every datagram a usage row`, pass: ok === datagrams && rows === datagrams, detail: `${datagrams} datagrams, ${ok} ok, ${rows} rows` }]
    }
  }
}

/**
 * Every benchmark `npm run bench` runs, in order: the extension point for new figures. A
 * Benchmark reports rows in its own unit (feed ingest: ticks/s through parser + price cache next to
 * a JSON.parse-only baseline) and the targets it checks.
 */
export const benchmarks: Array<Benchmark> = [lpoSingleProcess, lpoWorkerPerCore, udpHandlerBenchmark, feedIngestBenchmark, queuedWriterBenchmark, syncBenchmark, summaryBenchmark, streamFanoutBenchmark, webhookDeliveryBenchmark]

// ---------------------------------------------------------------------------------------------
// Report

const num = (value: number | undefined, digits: number): string =>
  value === undefined ? "-" : value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

const printTable = (rows: ReadonlyArray<BenchRow>): void => {
  const header = [
    "comparison", "subject", "rate", "unit", "p50 ms", "p99 ms", "err+to", "ratio", "cpu µs/req", "cpu ratio", "helpers µs/req", "answers"
  ]
  const leftAligned = new Set(["comparison", "subject", "unit", "answers"])
  const cells = rows.map((r) => [
    r.group,
    r.subject,
    num(r.rate, 0),
    r.unit,
    num(r.p50Ms, 2),
    num(r.p99Ms, 2),
    r.errors === undefined ? "-" : String(r.errors),
    r.ratio === undefined ? "" : `${r.ratio.toFixed(2)}x`,
    num(r.cpuUsPerRequest, 1),
    r.cpuRatio === undefined ? "" : `${r.cpuRatio.toFixed(2)}x`,
    num(r.helperCpuUsPerRequest, 1),
    r.note ?? ""
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)))
  const line = (c: ReadonlyArray<string>): string =>
    c.map((v, i) => (leftAligned.has(header[i]!) ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join("  ").trimEnd()
  console.log(line(header))
  console.log(widths.map((w) => "-".repeat(w)).join("  "))
  for (const c of cells) console.log(line(c))
  if (rows.some((r) => r.cpuUsPerRequest !== undefined)) {
    console.log(
      "\ncpu µs/req: user+system CPU (/proc) of the server's own processes (workers and primary) per request answered in the " +
        "measured window; cpu ratio: that over its baseline's (informational, no target); helpers µs/req: the same for the " +
        "server's helper processes (embedded database, exchange simulators, SQS stand-in)."
    )
  }
}

const main = async (argv: ReadonlyArray<string>): Promise<number> => {
  const option = (flag: string): string | undefined => {
    const at = argv.indexOf(flag)
    return at >= 0 ? argv[at + 1] : undefined
  }
  const durationMs = parseDurationMs(option("--duration") ?? "6s")
  const warmupMs = parseDurationMs(option("--warmup") ?? "1.5s")
  if (durationMs === undefined || warmupMs === undefined) {
    console.error("usage: node dist/bench/run.js [--duration 6s] [--warmup 1.5s] [--rounds 3] [--only <part of a benchmark's name>]")
    return 2
  }
  const rounds = Number(option("--rounds") ?? "3")
  if (!Number.isInteger(rounds) || rounds < 1) {
    console.error("--rounds takes a whole number of at least 1")
    return 2
  }
  const settings: BenchSettings = { durationMs, warmupMs, connections: 64, cores: os.availableParallelism(), rounds }
  console.log(
    `bench: ${settings.cores} cores, node ${process.version}, ${settings.connections} connections / datagrams in flight, ` +
      `${durationMs / 1000} s measured after ${warmupMs / 1000} s warm-up per run, ${rounds} alternating rounds (medians)` +
      (cpuAvailable ? "" : "; no /proc: CPU per request not measured")
  )
  const rows: Array<BenchRow> = []
  const checks: Array<TargetCheck> = []
  const only = option("--only")
  for (const benchmark of benchmarks.filter((b) => only === undefined || b.name.includes(only))) {
    console.log(`running: ${benchmark.name}`)
    const report = await benchmark.run(settings).catch(
      (error: unknown): BenchReport => ({
        rows: [],
        checks: [{ name: benchmark.name, pass: false, detail: messageOf(error) }]
      })
    )
    rows.push(...report.rows)
    checks.push(...report.checks)
  }
  console.log("")
  printTable(rows)
  console.log("")
  for (const c of checks) console.log(`${c.pass ? "PASS" : "FAIL"}  ${c.name}  (${c.detail})`)
  const failed = checks.filter((c) => !c.pass).length
  console.log(failed === 0 ? "\nall targets met" : `\n${failed} of ${checks.length} targets failed`)
  return failed === 0 ? 0 : 1
}

const killChildren = (): void => {
  for (const child of children) child.kill("SIGKILL")
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.on("SIGINT", () => {
    killChildren()
    process.exit(130)
  })
  process.on("exit", killChildren)
  void main(process.argv.slice(2)).then((code) => process.exit(code))
}
