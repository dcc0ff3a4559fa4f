import { PGlite } from "@electric-sql/pglite"
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import { Effect } from "effect"
import { mkdir } from "node:fs/promises"
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
      return { db, server, host, port: Number(port), url: `postgres://postgres@${host}:${port}/postgres` }
    }),
    ({ db, server }) =>
      Effect.promise(async () => {
        await server.stop()
        await db.close()
      })
  )
