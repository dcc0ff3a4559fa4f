import { spawn } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import { type AddressInfo, createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { freePort } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"

/**
 * The spec's start-up contract, through the built CLI: a missing or malformed setting ends
 * start-up with one line naming the variable (exit 2); a dependency that cannot be reached at
 * start ends it with one line naming its variable and the cause (exit 1). Never a trace, never a
 * half-configured server.
 */
const CLI = join(import.meta.dirname, "..", "dist", "src", "programs", "cli.js")

/** Settings inherited from the test run that would pick other storage than the test asks for. */
const STORAGE_SETTINGS = ["DATABASE_URL", "DATABASE_READER_URL", "VALKEY_URL", "CACHE_URL", "SQS_QUEUE_URL", "DB_SECRET_NAME", "ADMIN_TOKEN"]

interface Outcome {
  /** null: still running at the deadline (it started), then killed. */
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** `tb <args>` with `env` until it exits, or until `deadlineMs` (then killed: a server that started). */
const runUntilExit = async (args: ReadonlyArray<string>, env: Readonly<Record<string, string>>, deadlineMs = 30_000): Promise<Outcome> => {
  const inherited = { ...process.env }
  for (const name of STORAGE_SETTINGS) delete inherited[name]
  const fullEnv = {
    ...inherited,
    SERVER_TYPE: "APP_SERVER",
    FEEDS: "simulated",
    LOG_LEVEL: "Warn",
    BIND_HOST: "127.0.0.1",
    LPO_HTTP_PORT: String(await freePort()),
    LPO_UDP_PORT: String(await freePort()),
    METRICS_PORT: String(await freePort()),
    DATA_DIR: mkdtempSync(join(tmpdir(), "tb-startup-")),
    ADMIN_TOKEN: `admin-${crypto.randomUUID()}`,
    ...env
  }
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: fullEnv, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => void (stdout += d.toString()))
    child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()))
    const timer = setTimeout(() => child.kill("SIGKILL"), deadlineMs)
    child.on("exit", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

/** Exactly one line on stderr, which it returns. */
const oneLine = (outcome: Outcome): string => {
  const lines = outcome.stderr.trimEnd().split("\n")
  expect(lines, outcome.stderr + outcome.stdout.slice(-2000)).toHaveLength(1)
  return lines[0]!
}

const dbUrl = freshDatabase("startup_errors")
afterAll(() => dropDatabase(dbUrl))

describe("a dependency that cannot be reached at start: one line naming its variable and the cause, exit 1", () => {
  it("DATABASE_URL on a closed port (the password stays out of the line)", async () => {
    const outcome = await runUntilExit(["serve"], { DATABASE_URL: "postgres://postgres:hunter2-secret@127.0.0.1:1/postgres" })
    expect(oneLine(outcome)).toBe("DATABASE_URL: cannot connect to 127.0.0.1:1 (ECONNREFUSED)")
    expect(outcome.code).toBe(1)
    expect(outcome.stdout + outcome.stderr).not.toContain("hunter2")
  }, 60_000)

  it("VALKEY_URL on a closed port: does not start half-configured", async () => {
    const outcome = await runUntilExit(["serve"], { DATABASE_URL: dbUrl, VALKEY_URL: "redis://127.0.0.1:1" })
    expect(oneLine(outcome)).toBe("VALKEY_URL: cannot connect to 127.0.0.1:1 (ECONNREFUSED)")
    expect(outcome.code).toBe(1)
  }, 60_000)

  it("DATA_DIR that cannot hold the embedded database", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "tb-startup-")), "a-file")
    writeFileSync(file, "")
    const outcome = await runUntilExit(["serve"], { DATA_DIR: join(file, "data") })
    expect(oneLine(outcome)).toMatch(/^DATA_DIR: .*ENOTDIR/)
    expect(outcome.code).toBe(1)
  }, 60_000)

  it("LPO_HTTP_PORT already taken", async () => {
    const taken = createServer()
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", () => resolve()))
    const port = (taken.address() as AddressInfo).port
    try {
      const outcome = await runUntilExit(["serve", "--mode", "APP_SERVER"], {
        DATABASE_URL: dbUrl, LPO_HTTP_PORT: String(port), BIND_HOST: "127.0.0.1", FEEDS: "simulated", LOG_LEVEL: "Error"
      })
      expect(oneLine(outcome)).toBe(`LPO_HTTP_PORT: cannot listen on 127.0.0.1:${port} (EADDRINUSE)`)
      expect(outcome.code).toBe(1)
    } finally {
      taken.close()
    }
  }, 60_000)

  it("tb usage-count too (any command that opens the database)", async () => {
    const outcome = await runUntilExit(["usage-count"], { DATABASE_URL: "postgres://postgres@127.0.0.1:1/postgres" })
    expect(oneLine(outcome)).toBe("DATABASE_URL: cannot connect to 127.0.0.1:1 (ECONNREFUSED)")
    expect(outcome.code).toBe(1)
  }, 60_000)
})

describe("a malformed setting: one line naming the variable, exit 2", () => {
  const cases: ReadonlyArray<readonly [string, Record<string, string>, string]> = [
    ["DATABASE_URL=notaurl", { DATABASE_URL: "notaurl" }, "DATABASE_URL"],
    ["DATABASE_URL=mysql://…", { DATABASE_URL: "mysql://root@127.0.0.1/db" }, "DATABASE_URL"],
    ["VALKEY_URL=garbage", { DATABASE_URL: dbUrl, VALKEY_URL: "garbage" }, "VALKEY_URL"],
    ["CACHE_URL=garbage (the alias is the one named)", { DATABASE_URL: dbUrl, CACHE_URL: "garbage" }, "CACHE_URL"],
    ["SQS_QUEUE_URL=notaurl", { DATABASE_URL: dbUrl, SQS_QUEUE_URL: "notaurl" }, "SQS_QUEUE_URL"],
    ["ADMIN_TOKEN= (set but empty)", { DATABASE_URL: dbUrl, ADMIN_TOKEN: "" }, "ADMIN_TOKEN"],
    ["ADMIN_TOKEN shorter than 16 characters", { DATABASE_URL: dbUrl, ADMIN_TOKEN: "admin-15-chars!" }, "ADMIN_TOKEN"]
  ]
  for (const [name, env, variable] of cases) {
    it(`tb serve with ${name}`, async () => {
      const outcome = await runUntilExit(["serve"], env)
      const line = oneLine(outcome)
      expect(line).toContain(variable)
      expect(outcome.code).toBe(2)
    }, 60_000)
  }
})
