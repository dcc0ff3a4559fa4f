import { PGlite } from "@electric-sql/pglite"
import { mkdir, rm, writeFile } from "node:fs/promises"
import { join } from "node:path"
import { servePglite } from "./pgliteServer.ts"

/**
 * The embedded PostgreSQL as its own process (started by EmbeddedPostgres.ts): PGlite runs
 * PostgreSQL in WASM on the thread that hosts it, so in the server's process every usage insert
 * would take CPU from the price hot path. Here it runs beside the server, as a real PostgreSQL would.
 * Protocol with the parent: one IPC message `{ url }` once listening; exits when told (SIGTERM)
 * or when the parent goes away (IPC disconnect).
 */
const dataDir = process.argv[2]
if (dataDir === undefined) {
  console.error("usage: embeddedPostgres.js <DATA_DIR>")
  process.exit(2)
}

const ownerFile = join(dataDir, "embedded-postgres.json")
const dir = join(dataDir, "pgdata")
await mkdir(dir, { recursive: true })
const db = await PGlite.create(dir)
const server = await servePglite(db, {
  host: "127.0.0.1",
  port: 0,
  maxConnections: 64,
  // The same JSON line shape as the server's logger (Logger.consoleJson).
  onError: (error) =>
    console.log(JSON.stringify({
      message: ["a client's cycle failed inside PGlite; that client was disconnected", String(error)],
      level: "ERROR",
      timestamp: new Date().toISOString(),
      annotations: { module: "embedded-postgres" }
    }))
})
const url = `postgres://postgres@127.0.0.1:${server.port}/postgres`
await writeFile(ownerFile, JSON.stringify({ pid: process.pid, url }))

let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  await rm(ownerFile, { force: true })
  await server.close()
  await db.close()
  process.exit(0)
}
process.on("SIGTERM", () => void stop())
process.on("SIGINT", () => void stop())
process.on("disconnect", () => void stop())
process.send?.({ url })
