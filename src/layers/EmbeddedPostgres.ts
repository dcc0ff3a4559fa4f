import { Effect } from "effect"
import { readFile } from "node:fs/promises"
import { join } from "node:path"
import { forkChildService } from "./childService.ts"

/**
 * Embedded PostgreSQL (PGlite, Postgres compiled to WASM) in DATA_DIR/pgdata, run in a child
 * process (src/programs/embeddedPostgres.ts) and exposed on a loopback socket that speaks the
 * PostgreSQL wire protocol. The app connects with the same @effect/sql-pg client it uses against
 * Aurora, so one set of SQL serves both, and the database's CPU stays off the serving process.
 */
export const startEmbeddedPostgres = (dataDir: string) =>
  forkChildService("embeddedPostgres", [dataDir], undefined, (m) =>
    typeof m === "object" && m !== null && "url" in m && typeof m.url === "string" ? { url: m.url } : undefined)

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
