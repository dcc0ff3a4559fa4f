import { Effect } from "effect"
import { SqlClient } from "effect/sql"

/**
 * One index per usage row instead of two. The primary key (id, created_at) and the report index
 * (api_key_id, created_at DESC) become one unique index (api_key_id, created_at, id), NULLS NOT
 * DISTINCT so rows without a key are checked too. It serves both the duplicate check of a batch
 * written twice (`ON CONFLICT (api_key_id, created_at, id)`) and a key's time ranges (scanned
 * backwards for newest first), for less CPU per inserted row than two indexes (bench/README.md).
 * Needs PostgreSQL 15 or later (Aurora PostgreSQL
 * 15+; PGlite is 17). Every existing row is unique on these columns already, since id was.
 */
export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE usage_logs ADD CONSTRAINT usage_logs_key_time_id UNIQUE NULLS NOT DISTINCT (api_key_id, created_at, id)`
  yield* sql`ALTER TABLE usage_logs DROP CONSTRAINT IF EXISTS usage_logs_pkey`
  yield* sql`DROP INDEX IF EXISTS usage_logs_key_time`
})
