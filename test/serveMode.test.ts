/**
 * `tb serve` as an operator starts it: which server type runs (--mode wins over SERVER_TYPE, ALL
 * by default, an unknown type refused), what it writes where (stdout is for results, so a
 * server writes nothing there), and `npm start` stopping cleanly when npm is signalled or killed.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest"
import { freePort, priceWith, type RunningServer, usageCount } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"

const ROOT = join(import.meta.dirname, "..")
const CLI = join(ROOT, "dist", "src", "programs", "cli.js")

let dbUrl: string
beforeAll(() => {
  dbUrl = freshDatabase("serve_mode")
})
afterAll(() => dropDatabase(dbUrl))

interface Started {
  readonly child: ChildProcess
  readonly baseUrl: string
  readonly env: Record<string, string>
  readonly stdout: () => string
  readonly stderr: () => string
  readonly exited: Promise<number | null>
}

/** The environment a server needs, on free ports, with SERVER_TYPE removed unless given. */
const serverEnv = async (extra: Record<string, string>): Promise<Record<string, string>> => {
  const inherited = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined && e[0] !== "SERVER_TYPE"))
  return {
    ...inherited,
    DATABASE_URL: dbUrl,
    FEEDS: "simulated",
    BIND_HOST: "127.0.0.1",
    DATA_DIR: mkdtempSync(join(tmpdir(), "tb-serve-mode-")),
    ADMIN_TOKEN: `admin-${Math.random().toString(36).slice(2)}-token`,
    LPO_HTTP_PORT: String(await freePort()),
    LPO_UDP_PORT: String(await freePort()),
    LRS_HTTP_PORT: String(await freePort()),
    LRS_UDP_PORT: String(await freePort()),
    ...extra
  }
}

/** Spawn `command args` and wait until the LPO answers /ready (or the process ends). */
const spawnUntilReady = async (command: string, args: ReadonlyArray<string>, env: Record<string, string>): Promise<Started> => {
  // Its own process group, so that cleanup can end whatever it left behind (see `killGroup`).
  const child = spawn(command, [...args], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"], detached: true })
  let stdout = ""
  let stderr = ""
  child.stdout?.on("data", (d: Buffer) => void (stdout += d.toString()))
  child.stderr?.on("data", (d: Buffer) => void (stderr += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  const baseUrl = `http://127.0.0.1:${env["LPO_HTTP_PORT"]}`
  // Seconds alone; a loaded CI machine running other servers beside it has taken over a minute.
  const deadline = Date.now() + 120_000
  while (Date.now() < deadline && child.exitCode === null) {
    const res = await fetch(`${baseUrl}/ready`).catch(() => undefined)
    if (res?.status === 200) return { child, baseUrl, env, stdout: () => stdout, stderr: () => stderr, exited }
    await new Promise((r) => setTimeout(r, 200))
  }
  killGroup(child)
  throw new Error(`not ready (exit ${child.exitCode}):\n${stdout}\n${stderr.slice(-3000)}`)
}

/** End the process group a test started (a server that outlived its npm included). */
const killGroup = (child: ChildProcess) => {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL")
  } catch {
    // Already gone.
  }
}

const serve = async (args: ReadonlyArray<string>, extra: Record<string, string> = {}) =>
  spawnUntilReady(process.execPath, [CLI, "serve", ...args], await serverEnv(extra))

/** `tb serve` expected to end by itself; one that serves instead is killed after 20 s (and fails its test). */
const serveToEnd = (args: ReadonlyArray<string>, env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, "serve", ...args], { env, stdio: ["ignore", "pipe", "pipe"], timeout: 20_000, killSignal: "SIGTERM" })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => void (stdout += d.toString()))
    child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()))
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
  })

const stop = async (started: Started) => {
  started.child.kill("SIGTERM")
  const code = await started.exited
  killGroup(started.child)
  return code
}

/** Resolves true once nothing answers on the server's HTTP port any more. */
const portClosedWithin = async (baseUrl: string, ms: number): Promise<boolean> => {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    const answered = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(1_000) }).then(() => true, () => false)
    if (!answered) return true
    await new Promise((r) => setTimeout(r, 200))
  }
  return false
}

/** The report server's answer to an unauthenticated /reports/key, once its listener is up (it starts after the LPO's). */
const lrsStatus = async (env: Record<string, string>): Promise<number | undefined> => {
  for (let i = 0; i < 100; i++) {
    const res = await fetch(`http://127.0.0.1:${env["LRS_HTTP_PORT"]}/reports/key`).catch(() => undefined)
    if (res !== undefined) return res.status
    await new Promise((r) => setTimeout(r, 200))
  }
  return undefined
}

const warnings = (stderr: string) =>
  stderr.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { level: string; message: unknown }).filter((l) => l.level === "WARN")

const asServer = (s: Started): RunningServer => ({ baseUrl: s.baseUrl } as RunningServer)

describe("tb serve: server types", () => {
  it("--mode with a type that does not exist exits 2, the error on stderr naming the flag and the types", async () => {
    const r = await serveToEnd(["--mode", "NOPE"], await serverEnv({ SERVER_TYPE: "APP_SERVER" }))
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("--mode")
    expect(r.stderr).toContain("WEBHOOK_SERVER")
  })

  it("SERVER_TYPE that does not exist exits 2 with one line naming it", async () => {
    const r = await serveToEnd([], await serverEnv({ SERVER_TYPE: "NOPE" }))
    expect(r.code).toBe(2)
    expect(r.stderr.trim().split("\n")).toHaveLength(1)
    expect(r.stderr).toContain("SERVER_TYPE")
  })

  it("--mode APP_SERVER wins over SERVER_TYPE=REPORT_SERVER: the LPO serves, stdout stays empty, SIGTERM exits 0", async () => {
    const started = await serve(["--mode", "APP_SERVER"], { SERVER_TYPE: "REPORT_SERVER", LOG_LEVEL: "Info" })
    const code = await stop(started)
    expect(code).toBe(0)
    // Results go to stdout and a server has none: every log line is on stderr.
    expect(started.stdout()).toBe("")
    expect(started.stderr()).toMatch(/"LPO HTTP listening"/)
    expect(warnings(started.stderr())).toEqual([])
  }, 90_000)

  it("without SERVER_TYPE or --mode runs ALL: the LPO and the LRS answer, no warning, SIGTERM exits 0", async () => {
    const started = await serve([], { LOG_LEVEL: "Warn" })
    expect(await lrsStatus(started.env)).toBe(401)
    expect(await stop(started)).toBe(0)
    expect(warnings(started.stderr())).toEqual([])
    expect(started.stdout()).toBe("")
  }, 90_000)

  it("APP_REPORT_SERVER runs the LPO and the LRS, with no warning", async () => {
    const started = await serve(["--mode", "APP_REPORT_SERVER"], { LOG_LEVEL: "Warn" })
    expect(await lrsStatus(started.env)).toBe(401)
    const code = await stop(started)
    expect(code).toBe(0)
    expect(warnings(started.stderr())).toEqual([])
  }, 90_000)
})

describe("npm start", () => {
  const npm = execFileSync("sh", ["-c", "command -v npm"], { encoding: "utf8" }).trim()
  const startWithNpm = async () => spawnUntilReady(npm, ["start"], await serverEnv({ LOG_LEVEL: "Warn" }))

  it("SIGTERM to the npm process stops the server cleanly (its usage rows written)", async () => {
    const started = await startWithNpm()
    onTestFinished(() => killGroup(started.child))
    const key = execFileSync(process.execPath, [CLI, "keys", "create", "--tier", "associate", "--json"], { env: started.env, encoding: "utf8" })
    const before = await usageCount(started.env)
    expect((await priceWith(asServer(started), (JSON.parse(key) as { key: string }).key)).status).toBe(200)
    started.child.kill("SIGTERM")
    await started.exited
    // The server itself is gone, not just npm (which used to leave node running, re-parented).
    expect(await portClosedWithin(started.baseUrl, 15_000)).toBe(true)
    expect(await usageCount(started.env)).toBe(before + 1)
  }, 180_000)

  it("a server whose npm process was killed (SIGKILL) notices and shuts down", async () => {
    const started = await startWithNpm()
    onTestFinished(() => killGroup(started.child))
    started.child.kill("SIGKILL")
    await started.exited
    expect(await portClosedWithin(started.baseUrl, 15_000)).toBe(true)
  }, 180_000)
})
