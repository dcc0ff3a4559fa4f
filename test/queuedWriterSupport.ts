import { tcpRelay } from "./support/tcpRelay.ts"
import { usageRow as anyUsageRow } from "./support/usageFacts.ts"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { UsageRow } from "../src/domain/usage.ts"
import { encodeUsageLogMessages } from "../src/domain/usageQueueMessage.ts"

/** Helpers of the queued writer's tests (test/queuedWriter*.test.ts). */

/** A minute into the month, so a test's rows never straddle a month boundary. */
export const MONTH_START = Date.UTC(2026, 11, 1, 0, 1)

/** A usage row somewhere in MONTH_START's day (test/support/usageFacts.ts usageRow). */
export const usageRow = (overrides: Partial<UsageRow> = {}): UsageRow =>
  anyUsageRow({ created_at: MONTH_START + Math.floor(Math.random() * 86_400_000), ...overrides })

/** One usage_log message body of `rows` (the real format, however large). */
export const usageLogBody = (rows: ReadonlyArray<UsageRow>): string => {
  const bodies = encodeUsageLogMessages(rows, Number.MAX_SAFE_INTEGER)
  if (bodies.length !== 1) throw new Error(`expected one body, got ${bodies.length}`)
  return bodies[0]!
}

/** Stored usage rows' ids (sorted, duplicates kept) and the counters, read back. */
export const storedIds = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ readonly id: string }>`SELECT id::text AS id FROM usage_logs ORDER BY id`
  return rows.map((r) => r.id)
})

export interface MonthlyCounter {
  readonly api_key_id: string
  readonly month: string
  readonly requests: number
  readonly queries: number
  readonly reports: number
}

export const monthlyCounters = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  return yield* sql<MonthlyCounter>`
    SELECT api_key_id::text AS api_key_id, to_char(month, 'YYYY-MM-DD') AS month,
           requests::int AS requests, queries::int AS queries, reports::int AS reports
    FROM api_key_usage_monthly ORDER BY api_key_id, month`
})

const CLI = join(import.meta.dirname, "..", "dist", "src", "programs", "cli.js")

export interface RunningQueuedWriter {
  readonly process: ChildProcess
  readonly output: () => string
  readonly exited: Promise<number | null>
  /** Send a signal; resolves the exit code. */
  readonly stop: (signal?: NodeJS.Signals) => Promise<number | null>
}

/** `tb queued-writer` as a child process (the built CLI: run `npm run build` first). */
export const startQueuedWriter = (env: Readonly<Record<string, string>>): RunningQueuedWriter => {
  const child = spawn(process.execPath, [CLI, "queued-writer"], {
    env: { ...process.env, LOG_LEVEL: "Info", DATA_DIR: mkdtempSync(join(tmpdir(), "tb-queued-writer-")), ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  child.stdout.on("data", (d: Buffer) => void (output += d.toString()))
  child.stderr.on("data", (d: Buffer) => void (output += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  return {
    process: child,
    output: () => output,
    exited,
    stop: (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    }
  }
}

/** Polls `check` every 50 ms until it holds or `timeoutMs` passes; answers whether it held. */
export const eventually = async (check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<boolean> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return true
    await new Promise((r) => setTimeout(r, 50))
  }
  return check()
}

/** One SQL statement through psql; its rows as JSON values. */
export const psqlRows = <A>(url: string, sql: string): ReadonlyArray<A> =>
  JSON.parse(execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", `SELECT coalesce(json_agg(t), '[]'::json) FROM (${sql}) t`], { encoding: "utf8" })) as ReadonlyArray<A>

/**
 * A relay to the machine's PostgreSQL that can be cut and restored: while cut, every connection
 * (open or new) is reset, as when the database goes away; the port stays ours.
 */
export const postgresRelay = async () => {
  const relay = await tcpRelay("127.0.0.1", 5432)
  return {
    ...relay,
    /** The database URL `url` through the relay. */
    via: (url: string) => url.replace("127.0.0.1:5432", `127.0.0.1:${relay.port}`)
  }
}
