import { Effect, Redacted, type Scope } from "effect"
import { readFile } from "node:fs/promises"
import { forkChildService } from "./childService.ts"
import { ownerFile, passwordFile, readEmbeddedPassword } from "./embedded/files.ts"

/** Where the embedded database listens, and the password it asks for (read from DATA_DIR; undefined if that file is missing). */
export interface EmbeddedDatabase {
  readonly url: string
  readonly password: Redacted.Redacted<string> | undefined
}

const password = (dataDir: string) =>
  Effect.promise(() => readEmbeddedPassword(dataDir)).pipe(Effect.map((p) => p === undefined ? undefined : Redacted.make(p)))

/**
 * Embedded PostgreSQL (PGlite, Postgres compiled to WASM) in DATA_DIR/pgdata, run in a child
 * process (src/programs/embeddedPostgres.ts) and exposed on a loopback socket that speaks the
 * PostgreSQL wire protocol and asks for the password kept in DATA_DIR. The app connects with the
 * same @effect/sql-pg client it uses against Aurora, so one set of SQL serves both, and the
 * database's CPU stays off the serving process.
 */
export const startEmbeddedPostgres = (
  dataDir: string
): Effect.Effect<{ readonly url: string; readonly password: Redacted.Redacted<string> }, Error, Scope.Scope> =>
  forkChildService("embeddedPostgres", [dataDir], undefined, (m) =>
    typeof m === "object" && m !== null && "url" in m && typeof m.url === "string" ? { url: m.url } : undefined).pipe(
      Effect.flatMap(({ url }) =>
        Effect.flatMap(password(dataDir), (p) =>
          p === undefined ? Effect.fail(new Error(`no password in ${passwordFile(dataDir)}`)) : Effect.succeed({ url, password: p })))
    )

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
 * processes (the CLI, workers, the usage thread) connect through that server's socket instead of
 * opening it, with the password from DATA_DIR.
 */
export const runningEmbedded = (dataDir: string): Effect.Effect<EmbeddedDatabase | undefined> =>
  Effect.promise(async () => {
    try {
      const parsed: unknown = JSON.parse(await readFile(ownerFile(dataDir), "utf8"))
      if (typeof parsed !== "object" || parsed === null) return undefined
      const { pid, url } = parsed as { pid?: unknown; url?: unknown }
      return typeof pid === "number" && typeof url === "string" && pid !== process.pid && isAlive(pid) ? url : undefined
    } catch {
      return undefined
    }
  }).pipe(Effect.flatMap((url) => url === undefined ? Effect.succeed(undefined) : Effect.map(password(dataDir), (p) => ({ url, password: p }))))
