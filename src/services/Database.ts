import { Context } from "effect"
import type { SqlClient } from "effect/sql"

/**
 * Two pools, as on Aurora: the writer (also the default `SqlClient.SqlClient`) and the reader.
 * Without DATABASE_READER_URL the reader is the writer's pool.
 */
export class ReaderSql extends Context.Service<ReaderSql, SqlClient.SqlClient>()("tb/ReaderSql") {}

/** How the process reaches its database; `embeddedUrl` is set when PGlite runs in this process. */
export class DatabaseInfo extends Context.Service<DatabaseInfo, {
  readonly kind: "postgres" | "embedded"
  /** Connection URL other local processes (workers, CLI) can use while this process runs. */
  readonly embeddedUrl: string | undefined
}>()("tb/DatabaseInfo") {}
