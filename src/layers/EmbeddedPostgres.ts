import { PGlite } from "@electric-sql/pglite"
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import { Effect } from "effect"
import { mkdir, readFile, rm, writeFile } from "node:fs/promises"
import { join } from "node:path"

/**
 * Embedded PostgreSQL (PGlite, Postgres compiled to WASM) in DATA_DIR/pgdata, exposed on a loopback
 * socket that speaks the PostgreSQL wire protocol. The app then connects with the same
 * @effect/sql-pg client it uses against Aurora, so one set of SQL serves both.
 */
export const startEmbeddedPostgres = (dataDir: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const dir = join(dataDir, "pgdata")
      await mkdir(dir, { recursive: true })
      const db = await PGlite.create(dir)
      const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: 32 })
      await server.start()
      const [host = "127.0.0.1", port = "0"] = server.getServerConn().split(":")
      const url = `postgres://postgres@${host}:${port}/postgres`
      await writeFile(ownerFile(dataDir), JSON.stringify({ pid: process.pid, url }))
      return { db, server, host, port: Number(port), url }
    }),
    ({ db, server }) =>
      Effect.promise(async () => {
        await rm(ownerFile(dataDir), { force: true })
        await server.stop()
        await db.close()
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
