import { PGlite } from "@electric-sql/pglite"
import { chmod, mkdir, rm } from "node:fs/promises"
import { join } from "node:path"
import { isEmbeddedPassword, newEmbeddedPassword, ownerFile as ownerFileOf, passwordFile } from "../layers/embedded/files.ts"
import { servePglite } from "../layers/embedded/pgliteServer.ts"
import { keepPrivateSecret, writePrivateFile } from "../layers/privateFile.ts"

/**
 * The embedded PostgreSQL as its own process (started by EmbeddedPostgres.ts): PGlite runs
 * PostgreSQL in WASM on the thread that hosts it, so in the server's process every usage insert
 * would take CPU from the price hot path. Here it runs beside the server, as a real PostgreSQL would.
 * Protocol with the parent: one IPC message `{ url }` once listening; exits when told (SIGTERM)
 * or when the parent goes away (IPC disconnect). Clients prove the password kept in DATA_DIR.
 */
const dataDir = process.argv[2]
if (dataDir === undefined) {
  console.error("usage: embeddedPostgres.js <DATA_DIR>")
  process.exit(2)
}

const ownerFile = ownerFileOf(dataDir)
const dir = join(dataDir, "pgdata")

/** Open the data directory and serve it; its first failure is one line for the parent to print. */
const start = async () => {
  // The data files are the database itself: this user's alone, as PostgreSQL requires of its data directory.
  await mkdir(dir, { recursive: true, mode: 0o700 })
  await chmod(dir, 0o700)
  const { value: password } = await keepPrivateSecret(passwordFile(dataDir), isEmbeddedPassword, newEmbeddedPassword)
  const db = await PGlite.create(dir)
  const server = await servePglite(db, {
    host: "127.0.0.1",
    port: 0,
    maxConnections: 64,
    password,
    // The same JSON line shape as the server's logger (Logger.consoleJson).
    onError: (error) =>
      console.error(JSON.stringify({
        message: ["a client's cycle failed inside PGlite; that client was disconnected", String(error)],
        level: "ERROR",
        timestamp: new Date().toISOString(),
        annotations: { module: "embedded-postgres" }
      }))
  })
  const url = `postgres://postgres@127.0.0.1:${server.port}/postgres`
  await writePrivateFile(ownerFile, JSON.stringify({ pid: process.pid, url }))
  return { db, server, url }
}

/** Tell the parent why, in one line (it names the database and DATA_DIR), and exit 1 (never resolves). */
const failStart = (error: unknown): Promise<never> =>
  new Promise<never>(() => {
    const line = (error instanceof Error ? error.message : String(error)).split("\n")[0]!
    if (process.send === undefined) {
      console.error(line)
      process.exit(1)
    }
    process.send({ startError: line }, () => process.exit(1))
  })

const { db, server, url } = await start().catch(failStart)

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
