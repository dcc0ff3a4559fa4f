import { Effect } from "effect"
import { type ChildProcess, fork } from "node:child_process"
import { readFile } from "node:fs/promises"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

/**
 * Embedded PostgreSQL (PGlite, Postgres compiled to WASM) in DATA_DIR/pgdata, run in a child
 * process (src/programs/embeddedPostgres.ts) and exposed on a loopback socket that speaks the
 * PostgreSQL wire protocol. The app connects with the same @effect/sql-pg client it uses against
 * Aurora, so one set of SQL serves both, and the database's CPU stays off the serving process.
 */
export const startEmbeddedPostgres = (dataDir: string) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly child: ChildProcess; readonly url: string }, Error>((resume) => {
      // Built code runs the .js beside it; tests running the sources run the .ts (Node 24 strips types).
      const extension = import.meta.url.endsWith(".ts") ? "ts" : "js"
      const script = fileURLToPath(new URL(`../programs/embeddedPostgres.${extension}`, import.meta.url))
      const child = fork(script, [dataDir], { stdio: ["ignore", "inherit", "inherit", "ipc"] })
      const onExit = (code: number | null) => resume(Effect.fail(new Error(`embedded PostgreSQL exited (${code}) before it was ready`)))
      child.once("exit", onExit)
      child.once("message", (m: unknown) => {
        child.off("exit", onExit)
        const url = typeof m === "object" && m !== null && "url" in m && typeof m.url === "string" ? m.url : ""
        resume(Effect.succeed({ child, url }))
      })
    }),
    ({ child }) =>
      Effect.callback<void>((resume) => {
        if (child.exitCode !== null) return resume(Effect.void)
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
        child.once("exit", () => {
          clearTimeout(timer)
          resume(Effect.void)
        })
        child.kill("SIGTERM")
      })
  )

/** Which process serves the embedded database of a DATA_DIR, and where. */
const ownerFile = (dataDir: string) => join(dataDir, "embedded-postgres.json")

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/**
 * PGlite allows one process per data directory. When a running server already owns it, other
 * processes (the CLI, workers) connect through that server's socket instead of opening it.
 */
export const runningEmbeddedUrl = (dataDir: string): Effect.Effect<string | undefined> =>
  Effect.promise(async () => {
    try {
      const parsed: unknown = JSON.parse(await readFile(ownerFile(dataDir), "utf8"))
      if (typeof parsed !== "object" || parsed === null) return undefined
      const { pid, url } = parsed as { pid?: unknown; url?: unknown }
      return typeof pid === "number" && typeof url === "string" && pid !== process.pid && isAlive(pid) ? url : undefined
    } catch {
      return undefined
    }
  })
