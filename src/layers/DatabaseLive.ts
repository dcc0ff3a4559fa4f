import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, Option, Redacted, type Scope } from "effect"
import { Reactivity } from "effect/reactivity"
import { SqlClient } from "effect/sql"
import { AppConfig } from "../config/AppConfig.ts"
import { messageOf } from "../domain/errorMessage.ts"
import { DatabaseInfo, ReaderSql } from "../services/Database.ts"
import { Secrets } from "../services/Secrets.ts"
import { malformedSetting, settingUrl, type StartupError, unreachableDependency } from "../services/StartupError.ts"
import { type EmbeddedDatabase, runningEmbedded, startEmbeddedPostgres } from "./EmbeddedPostgres.ts"

/** Where a database URL points, for messages: host and port, never the credentials. */
const checkDatabaseUrl = (variable: string, url: Redacted.Redacted<string>): Effect.Effect<string, StartupError> =>
  settingUrl(variable, Redacted.value(url), ["postgres:", "postgresql:"], "postgres://user@host:5432/database").pipe(
    Effect.map((parsed) => {
      const host = parsed.searchParams.get("host") ?? (parsed.hostname === "" ? "localhost" : parsed.hostname)
      return `${host}:${parsed.searchParams.get("port") ?? (parsed.port === "" ? "5432" : parsed.port)}`
    })
  )

/**
 * Why a connection failed, in a few words: the socket error code (ECONNREFUSED, ENOTFOUND,
 * ETIMEDOUT) when there is one, else the deepest message (the server's, e.g. a wrong password).
 */
export const connectFailure = (error: unknown): string => {
  let deepest: unknown = error
  for (let e: unknown = error, depth = 0; typeof e === "object" && e !== null && depth < 8; depth++) {
    deepest = e
    if ("code" in e && typeof e.code === "string" && /^E[A-Z]+$/.test(e.code)) return e.code
    e = "cause" in e ? e.cause : undefined
  }
  return messageOf(deepest).split("\n")[0] ?? "unknown error"
}

interface Credentials {
  readonly username: Option.Option<string>
  readonly password: Option.Option<Redacted.Redacted<string>>
}

/** A pool on `url`, checked with one query so a database that cannot be reached stops start-up with one line. */
const pool = (
  url: Redacted.Redacted<string>,
  credentials: Credentials,
  target: { readonly variable: string; readonly where: string },
  applicationName: string,
  maxConnections: number
) =>
  Effect.gen(function*() {
    const client = yield* PgClient.make({
      url,
      applicationName,
      maxConnections,
      connectTimeout: "5 seconds",
      ...(Option.isSome(credentials.username) ? { username: credentials.username.value } : {}),
      ...(Option.isSome(credentials.password) ? { password: credentials.password.value } : {})
    }).pipe(Effect.mapError((e) => malformedSetting(target.variable, e.message)))
    yield* client`SELECT 1`.pipe(
      Effect.mapError((e) => unreachableDependency(target.variable, `cannot connect to ${target.where} (${connectFailure(e)})`))
    )
    return client
  })

/** The configured database's credentials, from Secrets (when the URL does not carry them). */
const secretCredentials = Effect.gen(function*() {
  const secrets = yield* Secrets
  const username = yield* secrets.get("DB_USERNAME")
  const password = yield* secrets.get("DB_PASSWORD")
  return { username: Option.map(username, Redacted.value), password } satisfies Credentials
})

/** The embedded database: the one a running process serves for DATA_DIR, else one started here. */
const embeddedDatabase = (dataDir: string): Effect.Effect<EmbeddedDatabase, StartupError, Scope.Scope> =>
  Effect.gen(function*() {
    const shared = yield* runningEmbedded(dataDir)
    if (shared !== undefined) return shared
    return yield* startEmbeddedPostgres(dataDir).pipe(
      Effect.mapError((e) => unreachableDependency("DATA_DIR", `the embedded database in ${dataDir} did not start (${messageOf(e)})`))
    )
  })

/**
 * Writer (`SqlClient`) and reader (`ReaderSql`) pools. DATABASE_URL set → Aurora/PostgreSQL;
 * unset → embedded PGlite in DATA_DIR behind the same client. A malformed URL or a database that
 * cannot be reached fails start-up with a StartupError naming the variable.
 */
export const DatabaseLive = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  const build = Effect.gen(function*() {
    if (Option.isNone(config.databaseUrl)) {
      const database = yield* embeddedDatabase(config.dataDir)
      const where = yield* checkDatabaseUrl("DATA_DIR", Redacted.make(database.url))
      const credentials: Credentials = { username: Option.none(), password: Option.fromNullishOr(database.password) }
      const writer = yield* pool(Redacted.make(database.url), credentials, { variable: "DATA_DIR", where: `the embedded database at ${where}` }, `tb-${config.nodeId}-writer`, 4)
      return Context.make(SqlClient.SqlClient, writer).pipe(
        Context.add(PgClient.PgClient, writer),
        Context.add(ReaderSql, writer),
        // No URL for other processes: the URL alone no longer reaches the database. They (the usage
        // thread included, which then gets no DATABASE_URL) find it through DATA_DIR, password and all.
        Context.add(DatabaseInfo, DatabaseInfo.of({ kind: "embedded" }))
      )
    }
    const credentials = yield* secretCredentials
    const writerUrl = config.databaseUrl.value
    const writerAt = yield* checkDatabaseUrl("DATABASE_URL", writerUrl)
    const readerAt = Option.isSome(config.databaseReaderUrl) ? yield* checkDatabaseUrl("DATABASE_READER_URL", config.databaseReaderUrl.value) : undefined
    const writer = yield* pool(writerUrl, credentials, { variable: "DATABASE_URL", where: writerAt }, `tb-${config.nodeId}-writer`, 10)
    const reader = Option.isSome(config.databaseReaderUrl) && readerAt !== undefined
      ? yield* pool(config.databaseReaderUrl.value, credentials, { variable: "DATABASE_READER_URL", where: readerAt }, `tb-${config.nodeId}-reader`, 10)
      : writer
    return Context.make(SqlClient.SqlClient, writer).pipe(
      Context.add(PgClient.PgClient, writer),
      Context.add(ReaderSql, reader),
      Context.add(DatabaseInfo, DatabaseInfo.of({ kind: "postgres" }))
    )
  })
  return Layer.effectContext(build).pipe(Layer.provide(Reactivity.layer))
}))

/** Reads on the writer's own client: what DatabaseLive does without DATABASE_READER_URL, for a client made elsewhere (tests, benchmarks). */
export const ReaderSqlFromWriter = Layer.effect(ReaderSql, SqlClient.SqlClient)
