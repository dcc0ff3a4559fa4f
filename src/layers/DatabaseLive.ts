import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { Reactivity } from "effect/reactivity"
import { SqlClient } from "effect/sql"
import { AppConfig } from "../config/AppConfig.ts"
import { DatabaseInfo, ReaderSql } from "../services/Database.ts"
import { Secrets } from "../services/Secrets.ts"
import { runningEmbeddedUrl, startEmbeddedPostgres } from "./EmbeddedPostgres.ts"

const pool = (url: Redacted.Redacted<string>, applicationName: string, maxConnections: number) =>
  Effect.gen(function*() {
    const secrets = yield* Secrets
    const username = yield* secrets.get("DB_USERNAME")
    const password = yield* secrets.get("DB_PASSWORD")
    return yield* PgClient.make({
      url,
      applicationName,
      maxConnections,
      connectTimeout: "5 seconds",
      ...(Option.isSome(username) ? { username: Redacted.value(username.value) } : {}),
      ...(Option.isSome(password) ? { password: password.value } : {})
    })
  })

/**
 * Writer (`SqlClient`) and reader (`ReaderSql`) pools. DATABASE_URL set → Aurora/PostgreSQL;
 * unset → embedded PGlite in DATA_DIR behind the same client.
 */
export const DatabaseLive = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  const build = Effect.gen(function*() {
    const shared = Option.isNone(config.databaseUrl) ? yield* runningEmbeddedUrl(config.dataDir) : undefined
    const embedded = Option.isNone(config.databaseUrl) && shared === undefined ? yield* startEmbeddedPostgres(config.dataDir) : undefined
    const writerUrl = shared !== undefined
      ? Redacted.make(shared)
      : embedded === undefined ? Option.getOrThrow(config.databaseUrl) : Redacted.make(embedded.url)
    const local = embedded !== undefined || shared !== undefined
    const writer = yield* pool(writerUrl, `tb-${config.nodeId}-writer`, local ? 4 : 10)
    const reader = Option.isSome(config.databaseReaderUrl) && !local
      ? yield* pool(config.databaseReaderUrl.value, `tb-${config.nodeId}-reader`, 10)
      : writer
    return Context.make(SqlClient.SqlClient, writer).pipe(
      Context.add(PgClient.PgClient, writer),
      Context.add(ReaderSql, reader),
      Context.add(DatabaseInfo, DatabaseInfo.of({ kind: local ? "embedded" : "postgres", embeddedUrl: embedded?.url ?? shared }))
    )
  })
  return Layer.effectContext(build).pipe(Layer.provide(Reactivity.layer))
}))
