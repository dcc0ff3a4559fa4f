/**
 * The server types that run the report server, as an operator starts them: APP_REPORT_SERVER (LPO
 * and LRS in one process, PostgreSQL) and REPORT_SERVER on the embedded defaults (no DATABASE_URL,
 * no VALKEY_URL: reports straight from the embedded database). Each serves, writes nothing to
 * stdout, and stops with exit 0 on SIGTERM.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { freePort } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"

const ROOT = join(import.meta.dirname, "..")
/** The built CLI (`npm test` builds first); TB_CLI points a local run at another build. */
const CLI = process.env["TB_CLI"] ?? join(ROOT, "dist", "src", "programs", "cli.js")

interface Started {
  readonly child: ChildProcess
  readonly env: Record<string, string>
  readonly stdout: () => string
  readonly stderr: () => string
  readonly exited: Promise<number | null>
}

const children: Array<ChildProcess> = []
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL")
})

const baseEnv = async (extra: Record<string, string>): Promise<Record<string, string>> => {
  const inherited = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] =>
    e[1] !== undefined && !["SERVER_TYPE", "DATABASE_URL", "VALKEY_URL", "CACHE_URL", "SQS_QUEUE_URL"].includes(e[0])))
  return {
    ...inherited,
    FEEDS: "simulated",
    BIND_HOST: "127.0.0.1",
    LOG_LEVEL: "Warn",
    DATA_DIR: mkdtempSync(join(tmpdir(), "tb-lrs-modes-")),
    ADMIN_TOKEN: `admin-${crypto.randomUUID()}`,
    LPO_HTTP_PORT: String(await freePort()),
    LPO_UDP_PORT: String(await freePort()),
    LRS_HTTP_PORT: String(await freePort()),
    LRS_UDP_PORT: String(await freePort()),
    ...extra
  }
}

const cli = (args: ReadonlyArray<string>, env: Record<string, string>) => execFileSync(process.execPath, [CLI, ...args], { env, encoding: "utf8" })
const createKey = (env: Record<string, string>, tier: string) =>
  JSON.parse(cli(["keys", "create", "--tier", tier, "--json"], env).trim().split("\n").pop()!) as { key: string; key_id: string }

/** Start `tb serve --mode M` and wait until `url` answers 200. */
const serve = async (mode: string, env: Record<string, string>, readyUrl: string): Promise<Started> => {
  const child = spawn(process.execPath, [CLI, "serve", "--mode", mode], { env, stdio: ["ignore", "pipe", "pipe"] })
  children.push(child)
  let stdout = ""
  let stderr = ""
  child.stdout?.on("data", (d: Buffer) => void (stdout += d.toString()))
  child.stderr?.on("data", (d: Buffer) => void (stderr += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  const deadline = Date.now() + 90_000
  while (Date.now() < deadline && child.exitCode === null) {
    const res = await fetch(readyUrl).catch(() => undefined)
    if (res?.status === 200) return { child, env, stdout: () => stdout, stderr: () => stderr, exited }
    await new Promise((r) => setTimeout(r, 200))
  }
  child.kill("SIGKILL")
  throw new Error(`${mode} did not serve (exit ${child.exitCode}):\n${stderr.slice(-3000)}`)
}

/** Wait until `url` answers 200 (90 s at most). */
const untilAnswers = async (url: string): Promise<void> => {
  const deadline = Date.now() + 90_000
  while (Date.now() < deadline) {
    if ((await fetch(url).catch(() => undefined))?.status === 200) return
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`${url} did not answer`)
}

const reports = (env: Record<string, string>, path: string, key: string) =>
  fetch(`http://127.0.0.1:${env["LRS_HTTP_PORT"]}${path}`, { headers: { "x-api-key": key } })

/** Poll a report until `ok` holds for its rows. */
const rowsUntil = async (env: Record<string, string>, key: string, query: string, ok: (rows: Array<Record<string, unknown>>) => boolean) => {
  let rows: Array<Record<string, unknown>> = []
  for (let i = 0; i < 50; i++) {
    const body = (await (await reports(env, `/reports/usage?${query}`, key)).json()) as { data: { rows: Array<Record<string, unknown>> } }
    rows = body.data.rows
    if (ok(rows)) return rows
    await new Promise((r) => setTimeout(r, 200))
  }
  return rows
}

describe("server types with the report server", () => {
  it("APP_REPORT_SERVER serves the LPO and the LRS: a price query shows in the key's report; SIGTERM exits 0", async () => {
    const db = freshDatabase("lrs_modes")
    try {
      const env = await baseEnv({ DATABASE_URL: db })
      cli(["migrate"], env)
      const { key } = createKey(env, "associate")
      const started = await serve("APP_REPORT_SERVER", env, `http://127.0.0.1:${env["LPO_HTTP_PORT"]}/ready`)
      // The report server's listener starts after the LPO's.
      await untilAnswers(`http://127.0.0.1:${env["LRS_HTTP_PORT"]}/openapi.json`)
      const price = await fetch(`http://127.0.0.1:${env["LPO_HTTP_PORT"]}/price?asset=BTC`, { headers: { "x-api-key": key, "x-request-id": "mode-price-1" } })
      expect(price.status).toBe(200)
      const rows = await rowsUntil(env, key, "service=LPO", (r) => r.some((x) => x["request_id"] === "mode-price-1"))
      expect(rows.find((x) => x["request_id"] === "mode-price-1")).toMatchObject({ service: "LPO", endpoint: "/price", asset: "BTC", status_code: 200 })
      // The LPO's port names the report server's for report paths.
      const elsewhere = await fetch(`http://127.0.0.1:${env["LPO_HTTP_PORT"]}/reports/usage`, { headers: { "x-api-key": key } })
      expect(elsewhere.status).toBe(404)
      expect(JSON.stringify(await elsewhere.json())).toContain("LRS_HTTP_PORT")
      expect(started.stderr()).not.toContain("not built yet")
      started.child.kill("SIGTERM")
      expect(await started.exited).toBe(0)
      expect(started.stdout()).toBe("")
    } finally {
      dropDatabase(db)
    }
  }, 120_000)

  it("REPORT_SERVER on the embedded defaults: reports from the embedded database, the key's own rows; SIGTERM exits 0", async () => {
    const env = await baseEnv({})
    const { key, key_id } = createKey(env, "partner")
    const started = await serve("REPORT_SERVER", env, `http://127.0.0.1:${env["LRS_HTTP_PORT"]}/openapi.json`)
    const first = await reports(env, "/reports/key", key)
    expect(first.status).toBe(200)
    expect(((await first.json()) as { data: { key_id: string; tier: string } }).data).toMatchObject({ key_id, tier: "partner" })
    const rows = await rowsUntil(env, key, "service=LRS", (r) => r.some((x) => x["endpoint"] === "/reports/key"))
    expect(rows.some((x) => x["endpoint"] === "/reports/key")).toBe(true)
    const csv = await reports(env, "/reports/summary?group_by=endpoint&format=csv", key)
    expect(csv.headers.get("content-type")).toContain("text/csv")
    expect((await csv.text()).split("\r\n")[0]).toBe("endpoint,requests,errors,bytes_out,p50_us,p95_us,p99_us")
    expect(await fetch(`http://127.0.0.1:${env["LPO_HTTP_PORT"]}/health`).catch(() => undefined)).toBeUndefined()
    started.child.kill("SIGTERM")
    expect(await started.exited).toBe(0)
    expect(started.stdout()).toBe("")
  }, 120_000)
})
