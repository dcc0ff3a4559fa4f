import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createSocket } from "node:dgram"

const CLI = join(import.meta.dirname, "..", "..", "dist", "src", "programs", "cli.js")

/**
 * A port that stays ours and refuses service: every connection is reset at once. A port that was
 * free and then closed can be taken by another test's server in the meantime (a simulator, say),
 * and a client pointed at it would then reach that server.
 */
export const deadPort = (): Promise<{ readonly port: number; readonly close: () => Promise<void> }> =>
  new Promise((resolve, reject) => {
    const s = createServer((socket) => socket.resetAndDestroy())
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const address = s.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resolve({ port, close: () => new Promise((done) => s.close(() => done())) })
    })
  })

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const address = s.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      s.close(() => resolve(port))
    })
  })

export interface RunningServer {
  readonly baseUrl: string
  readonly udpPort: number
  readonly adminToken: string
  readonly dataDir: string
  /** `http://127.0.0.1:<METRICS_PORT>/metrics` */
  readonly metricsUrl: string
  readonly env: Readonly<Record<string, string>>
  readonly process: ChildProcess
  readonly output: () => string
  /** Send a signal and wait for exit; resolves the exit code. */
  readonly stop: (signal?: NodeJS.Signals) => Promise<number | null>
}

/** Run the CLI to completion (e.g. `keys create`, `usage-count`) with the given environment. */
export const runCli = (args: ReadonlyArray<string>, env: Readonly<Record<string, string>>): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => void (stdout += d.toString()))
    child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()))
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
  })

/**
 * Start `tb serve` as a child process and wait for /ready. Ports are picked free just before the
 * start, so another process can take one first: on EADDRINUSE, try again with new ports.
 */
export const startServer = async (env: Readonly<Record<string, string>> = {}, readyTimeoutMs = 60_000): Promise<RunningServer> => {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startServerOnce(env, readyTimeoutMs)
    } catch (error) {
      if (attempt >= 4 || !String(error).includes("EADDRINUSE")) throw error
    }
  }
}

const startServerOnce = async (env: Readonly<Record<string, string>>, readyTimeoutMs: number): Promise<RunningServer> => {
  const httpPort = await freePort()
  const udpPort = await freePort()
  // The report server's ports too: a type that runs it (ALL, APP_REPORT_SERVER) must not take the defaults.
  const lrsHttpPort = await freePort()
  const lrsUdpPort = await freePort()
  const metricsPort = env["METRICS_PORT"] ?? String(await freePort())
  const dataDir = env["DATA_DIR"] ?? mkdtempSync(join(tmpdir(), "tb-test-"))
  const adminToken = env["ADMIN_TOKEN"] ?? `admin-${crypto.randomUUID()}`
  const fullEnv: Record<string, string> = {
    SERVER_TYPE: "APP_SERVER",
    FEEDS: "simulated",
    LOG_LEVEL: "Warn",
    BIND_HOST: "127.0.0.1",
    ...env,
    DATA_DIR: dataDir,
    ADMIN_TOKEN: adminToken,
    LPO_HTTP_PORT: String(httpPort),
    LPO_UDP_PORT: String(udpPort),
    LRS_HTTP_PORT: env["LRS_HTTP_PORT"] ?? String(lrsHttpPort),
    LRS_UDP_PORT: env["LRS_UDP_PORT"] ?? String(lrsUdpPort),
    METRICS_PORT: metricsPort
  }
  const child = spawn(process.execPath, [CLI, "serve"], { env: { ...process.env, ...fullEnv }, stdio: ["ignore", "pipe", "pipe"] })
  let output = ""
  child.stdout?.on("data", (d: Buffer) => void (output += d.toString()))
  child.stderr?.on("data", (d: Buffer) => void (output += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  const baseUrl = `http://127.0.0.1:${httpPort}`
  const deadline = Date.now() + readyTimeoutMs
  let ready = false
  while (Date.now() < deadline && child.exitCode === null) {
    const res = await fetch(`${baseUrl}/ready`).catch(() => undefined)
    if (res?.status === 200) {
      ready = true
      break
    }
    await new Promise((r) => setTimeout(r, 200))
  }
  if (!ready) {
    child.kill("SIGKILL")
    throw new Error(`server did not become ready:\n${output.slice(-4000)}`)
  }
  return {
    baseUrl, udpPort, adminToken, dataDir, env: fullEnv, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`, process: child, output: () => output,
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode === null) child.kill(signal)
      return exited
    }
  }
}

export interface EnvelopeResponse {
  readonly status: number
  readonly headers: Headers
  readonly body: Record<string, unknown> & { readonly data: Record<string, unknown> | null; readonly code: string; readonly success: boolean }
}

export const call = async (server: RunningServer, path: string, init: { method?: string; headers?: Record<string, string>; body?: unknown } = {}): Promise<EnvelopeResponse> => {
  const res = await fetch(`${server.baseUrl}${path}`, {
    method: init.method ?? "GET",
    headers: init.headers ?? {},
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) })
  })
  return { status: res.status, headers: res.headers, body: await res.json() as EnvelopeResponse["body"] }
}

export const admin = (server: RunningServer, method: string, path: string, body?: unknown) =>
  call(server, path, { method, headers: { "x-admin-token": server.adminToken }, body })

export const createKey = async (server: RunningServer, tier: string, extra: Record<string, unknown> = {}) => {
  const r = await admin(server, "POST", "/admin/keys", { tier, ...extra })
  if (r.status !== 201) throw new Error(`key creation failed: ${JSON.stringify(r.body)}`)
  const data = r.body.data as { key: string; key_id: string }
  return data
}

export const priceWith = (server: RunningServer, key: string, query = "asset=BTC") => call(server, `/price?${query}`, { headers: { "x-api-key": key } })

/** One UDP request; resolves the reply text or undefined after `timeoutMs`. */
export const udpRequest = (port: number, payload: string | Buffer, timeoutMs = 1000): Promise<string | undefined> =>
  new Promise((resolve) => {
    const socket = createSocket("udp4")
    const timer = setTimeout(() => {
      socket.close()
      resolve(undefined)
    }, timeoutMs)
    socket.once("message", (m) => {
      clearTimeout(timer)
      socket.close()
      resolve(m.toString())
    })
    socket.send(payload, port, "127.0.0.1")
  })

/** Count usage rows with `tb usage-count` against the same storage as `env`. */
export const usageCount = async (env: Readonly<Record<string, string>>): Promise<number> => {
  const r = await runCli(["usage-count", "--json"], env)
  if (r.code !== 0) throw new Error(`usage-count failed: ${r.stderr}${r.stdout}`)
  const line = r.stdout.trim().split("\n").filter((l) => l.startsWith("{\"rows\"")).pop() ?? "{}"
  return (JSON.parse(line) as { rows: number }).rows
}
