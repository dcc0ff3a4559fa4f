/**
 * `npm run bench`: the real server (LPO) against bare node:http / dgram servers, side by side in
 * one run on this machine, with the load client of `tb stress`.
 *
 * Each comparison starts the bare server as a child process, stresses it and stops it, then does
 * the same with `tb serve`; after the real server's clean shutdown the usage rows it wrote are
 * counted and compared with the requests it says it served. Prints a table and PASS/FAIL per
 * target; exits non-zero when any target fails (including "server not available").
 *
 *   node dist/bench/run.js [--duration 8s] [--warmup 1.5s]
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
import { feedIngestBenchmark } from "./feedIngest.ts"

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
/** Lets requests abandoned at the end of a stress run finish before the counters are read. */
const SETTLE_MS = 500

const distBench = path.dirname(fileURLToPath(import.meta.url))
const CLI = path.resolve(distBench, "../src/programs/cli.js")
const BARE_HTTP = path.join(distBench, "bareHttp.js")
const BARE_UDP = path.join(distBench, "bareUdp.js")

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

/** Waits for "ready <port>" on a bare server's stdout. */
const readyPort = (child: Child): Promise<number> =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no 'ready' line in time")), CHILD_READY_TIMEOUT_MS)
    let seen = ""
    child.proc.stdout?.on("data", (chunk: Buffer) => {
      seen += chunk.toString("utf8")
      const m = /ready (\d+)/u.exec(seen)
      if (m !== null) {
        clearTimeout(timer)
        resolve(Number(m[1]))
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
  body?: unknown
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
        timeout: 5_000,
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

/** Settings that would point the bench at real infrastructure: the bench always runs embedded. */
const isExternalSetting = (name: string): boolean =>
  ["DATABASE_URL", "DATABASE_READER_URL", "VALKEY_URL", "CACHE_URL", "SQS_QUEUE_URL", "DB_SECRET_NAME"].includes(name) ||
  name.startsWith("FEED_URL_") ||
  name.startsWith("FEED_REST_URL_")

const lpoEnv = (vars: Record<string, string>): NodeJS.ProcessEnv => ({
  ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !isExternalSetting(name))),
  ...vars
})

const startLpo = async (workers: number): Promise<Lpo | string> => {
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
    LOG_LEVEL: "Warn"
  })
  const child = startChild([CLI, "serve"], env)
  const fail = async (reason: string): Promise<string> => {
    await stopChild(child, 5_000)
    await rm(dataDir, { recursive: true, force: true })
    const tail = child.tail()
    return tail === "" ? reason : `${reason}\n${tail}`
  }
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
  const created = await call(httpPort, "POST", "/admin/keys", { "x-admin-token": adminToken }, { tier: "unmetered" }).catch(
    (error: unknown) => ({ status: 0, body: String(error) })
  )
  const key = field(created.body, "data", "key")
  if (created.status !== 201 || typeof key !== "string") {
    return fail(`POST /admin/keys {"tier":"unmetered"} answered ${created.status}: ${JSON.stringify(created.body).slice(0, 200)}`)
  }
  return { child, workers, httpPort, udpPort, dataDir, env, adminToken, key, readyPolls }
}

interface ServedCount {
  readonly requestsTotal: number
  readonly rowsRecorded: number
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
    if (reply.status !== 200 || typeof node !== "string" || typeof requestsTotal !== "number") {
      return `GET /admin/stress-stats answered ${reply.status}: ${JSON.stringify(reply.body).slice(0, 200)}`
    }
    latest.set(node, { requestsTotal, rowsRecorded: typeof rowsRecorded === "number" ? rowsRecorded : Number.NaN })
  }
  if (latest.size < lpo.workers) return `GET /admin/stress-stats reached ${latest.size} of ${lpo.workers} workers`
  let requestsTotal = 0
  let rowsRecorded = 0
  for (const c of latest.values()) {
    requestsTotal += c.requestsTotal
    rowsRecorded += c.rowsRecorded
  }
  return { requestsTotal, rowsRecorded }
}

/** `tb usage-count --json` against the stopped server's DATA_DIR. */
const usageRows = async (lpo: Lpo): Promise<number | string> => {
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
      if (typeof rows === "number") return rows
    } catch {
      // log lines before the JSON
    }
  }
  return `usage-count exited ${exit} without {"rows": N}: ${child.tail()}`
}

/** Reads the counters, shuts the server down cleanly, then counts the rows it left behind. */
const finishLpo = async (lpo: Lpo, label: string): Promise<ReadonlyArray<TargetCheck>> => {
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
  const rows = await usageRows(lpo)
  await rm(lpo.dataDir, { recursive: true, force: true })
  const name = `${label}: usage rows lost = 0`
  if (typeof served === "string") return [...checks, { name, pass: false, detail: served }]
  if (typeof rows === "string") return [...checks, { name, pass: false, detail: rows }]
  const servedWithRows = served.requestsTotal - lpo.readyPolls
  const lost = servedWithRows - rows
  return [
    ...checks,
    {
      name,
      pass: lost === 0,
      detail:
        `rows-lost ${lost}: served ${servedWithRows} (requests_total ${served.requestsTotal} - ${lpo.readyPolls} /ready polls), ` +
        `usage rows ${rows}; usage_rows_recorded ${served.rowsRecorded} (price requests only)`
    }
  ]
}

// ---------------------------------------------------------------------------------------------
// Comparisons

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

const statuses = (r: StressResult): string =>
  Object.entries(r.statusCounts)
    .map(([status, n]) => `${status}:${n}`)
    .join(" ")

const measuredRow = (group: string, subject: string, r: StressResult, baseline?: StressResult): BenchRow => ({
  group,
  subject,
  rate: r.rps,
  unit: "req/s",
  p50Ms: r.p50Ms,
  p99Ms: r.p99Ms,
  errors: r.errors + r.timeouts,
  ...(baseline === undefined || baseline.rps === 0 ? {} : { ratio: r.rps / baseline.rps }),
  note: statuses(r)
})

/** The targets for one real-server measurement against its bare baseline. */
const targetChecks = (
  label: string,
  load: string,
  real: StressResult,
  bare: StressResult | undefined,
  okStatus: string
): Array<TargetCheck> => {
  const ratio = bare === undefined || bare.rps === 0 ? 0 : real.rps / bare.rps
  const okAnswers = real.statusCounts[okStatus] ?? 0
  return [
    {
      name: `${label}: >= ${RATIO_TARGET}x bare`,
      pass: bare !== undefined && ratio >= RATIO_TARGET,
      detail: bare === undefined ? "no baseline" : `${ratio.toFixed(2)}x (${Math.round(real.rps)} vs ${Math.round(bare.rps)} req/s)`
    },
    {
      name: `${label}: p99 < ${P99_TARGET_MS} ms at ${load}`,
      pass: real.requests > 0 && real.p99Ms < P99_TARGET_MS,
      detail: `p99 ${real.p99Ms.toFixed(2)} ms`
    },
    {
      name: `${label}: every answer ${okStatus}, no errors or timeouts`,
      pass: real.requests > 0 && okAnswers === real.requests && real.errors === 0 && real.timeouts === 0,
      detail: `${statuses(real) || "no answers"}; errors ${real.errors}, timeouts ${real.timeouts}`
    }
  ]
}

/** Runs `load` against a bare server started as a child process; undefined if it would not start. */
const measureBare = async (
  script: string,
  workers: number,
  load: (port: number) => Promise<StressResult>
): Promise<StressResult | string> => {
  const child = startChild([script, "0", String(workers)], process.env)
  try {
    const port = await readyPort(child)
    return await load(port)
  } catch (error) {
    return `bare server failed: ${error instanceof Error ? error.message : String(error)}`
  } finally {
    await stopChild(child, 5_000)
  }
}

const unavailableRow = (group: string, subject: string, reason: string): BenchRow => ({
  group,
  subject,
  unit: "req/s",
  note: reason.split("\n")[0] ?? reason
})

const lpoSingleProcess: Benchmark = {
  name: "LPO, 1 process: HTTP /price and UDP v1 price",
  run: async (s) => {
    const httpGroup = "HTTP 1 process"
    const udpGroup = "UDP 1 process"
    const rows: Array<BenchRow> = []
    const checks: Array<TargetCheck> = []
    const bareHttp = await measureBare(BARE_HTTP, 1, (port) => httpLoad(port, s))
    const bareUdp = await measureBare(BARE_UDP, 1, (port) => udpLoad(port, s, "bench"))
    for (const [group, subject, bare] of [
      [httpGroup, "bare node:http", bareHttp],
      [udpGroup, "bare dgram", bareUdp]
    ] as const) {
      if (typeof bare === "string") {
        rows.push(unavailableRow(group, subject, bare))
        checks.push({ name: `${group}: baseline`, pass: false, detail: bare })
      } else rows.push(measuredRow(group, subject, bare))
    }
    const httpBaseline = typeof bareHttp === "string" ? undefined : bareHttp
    const udpBaseline = typeof bareUdp === "string" ? undefined : bareUdp
    const lpo = await startLpo(1)
    if (typeof lpo === "string") {
      rows.push(unavailableRow(httpGroup, "LPO /price", `server: not available (${lpo.split("\n")[0]})`))
      checks.push({ name: "LPO 1 process: server available", pass: false, detail: lpo })
      return { rows, checks }
    }
    const realHttp = await httpLoad(lpo.httpPort, s, lpo.key)
    rows.push(measuredRow(httpGroup, "LPO GET /price", realHttp, httpBaseline))
    checks.push(...targetChecks(httpGroup, `${s.connections} connections`, realHttp, httpBaseline, "200"))
    const realUdp = await udpLoad(lpo.udpPort, s, lpo.key)
    rows.push(measuredRow(udpGroup, "LPO v1 price", realUdp, udpBaseline))
    checks.push(...targetChecks(udpGroup, `${s.connections} in flight`, realUdp, udpBaseline, "ok"))
    checks.push(...(await finishLpo(lpo, "LPO 1 process")))
    return { rows, checks }
  }
}

const lpoWorkerPerCore: Benchmark = {
  name: "LPO, one worker per core: HTTP /price",
  run: async (s) => {
    const group = `HTTP ${s.cores} workers`
    const rows: Array<BenchRow> = []
    const checks: Array<TargetCheck> = []
    const bare = await measureBare(BARE_HTTP, s.cores, (port) => httpLoad(port, s))
    const baseline = typeof bare === "string" ? undefined : bare
    if (typeof bare === "string") {
      rows.push(unavailableRow(group, "bare node:http (cluster)", bare))
      checks.push({ name: `${group}: baseline`, pass: false, detail: bare })
    } else rows.push(measuredRow(group, "bare node:http (cluster)", bare))
    const lpo = await startLpo(s.cores)
    if (typeof lpo === "string") {
      rows.push(unavailableRow(group, "LPO /price", `server: not available (${lpo.split("\n")[0]})`))
      checks.push({ name: `LPO ${s.cores} workers: server available`, pass: false, detail: lpo })
      return { rows, checks }
    }
    const real = await httpLoad(lpo.httpPort, s, lpo.key)
    rows.push(measuredRow(group, "LPO GET /price", real, baseline))
    checks.push(...targetChecks(group, `${s.connections} connections`, real, baseline, "200"))
    checks.push(...(await finishLpo(lpo, `LPO ${s.cores} workers`)))
    return { rows, checks }
  }
}

/**
 * Every benchmark `npm run bench` runs, in order: the extension point for new figures. A
 * Benchmark reports rows in its own unit (feed ingest: ticks/s through parser + price cache next to
 * a JSON.parse-only baseline) and the targets it checks.
 */
export const benchmarks: Array<Benchmark> = [lpoSingleProcess, lpoWorkerPerCore, feedIngestBenchmark]

// ---------------------------------------------------------------------------------------------
// Report

const num = (value: number | undefined, digits: number): string =>
  value === undefined ? "-" : value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

const printTable = (rows: ReadonlyArray<BenchRow>): void => {
  const header = ["comparison", "subject", "rate", "unit", "p50 ms", "p99 ms", "err+to", "ratio", "answers"]
  const cells = rows.map((r) => [
    r.group,
    r.subject,
    num(r.rate, 0),
    r.unit,
    num(r.p50Ms, 2),
    num(r.p99Ms, 2),
    r.errors === undefined ? "-" : String(r.errors),
    r.ratio === undefined ? "" : `${r.ratio.toFixed(2)}x`,
    r.note ?? ""
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)))
  const line = (c: ReadonlyArray<string>): string =>
    c.map((v, i) => (i >= 2 && i <= 7 && i !== 3 ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join("  ").trimEnd()
  console.log(line(header))
  console.log(widths.map((w) => "-".repeat(w)).join("  "))
  for (const c of cells) console.log(line(c))
}

const main = async (argv: ReadonlyArray<string>): Promise<number> => {
  const option = (flag: string): string | undefined => {
    const at = argv.indexOf(flag)
    return at >= 0 ? argv[at + 1] : undefined
  }
  const durationMs = parseDurationMs(option("--duration") ?? "8s")
  const warmupMs = parseDurationMs(option("--warmup") ?? "1.5s")
  if (durationMs === undefined || warmupMs === undefined) {
    console.error("usage: node dist/bench/run.js [--duration 8s] [--warmup 1.5s]")
    return 2
  }
  const settings: BenchSettings = { durationMs, warmupMs, connections: 64, cores: os.availableParallelism() }
  console.log(
    `bench: ${settings.cores} cores, node ${process.version}, ${settings.connections} connections / datagrams in flight, ` +
      `${durationMs / 1000} s measured after ${warmupMs / 1000} s warm-up per run`
  )
  const rows: Array<BenchRow> = []
  const checks: Array<TargetCheck> = []
  for (const benchmark of benchmarks) {
    console.log(`running: ${benchmark.name}`)
    const report = await benchmark.run(settings).catch(
      (error: unknown): BenchReport => ({
        rows: [],
        checks: [{ name: benchmark.name, pass: false, detail: error instanceof Error ? error.message : String(error) }]
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
