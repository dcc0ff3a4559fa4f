import { Context } from "effect"
import type { SqlClient } from "effect/sql"

/**
 * Two pools, as on Aurora: the writer (also the default `SqlClient.SqlClient`) and the reader.
 * Without DATABASE_READER_URL the reader is the writer's pool.
 */
export class ReaderSql extends Context.Service<ReaderSql, SqlClient.SqlClient>()("tb/ReaderSql") {}

/**
 * How the process reaches its database. Other local processes (workers, the usage thread, the
 * CLI) find an embedded one through DATA_DIR (its port and password files), never through a URL.
 */
export class DatabaseInfo extends Context.Service<DatabaseInfo, {
  readonly kind: "postgres" | "embedded"
}>()("tb/DatabaseInfo") {}
