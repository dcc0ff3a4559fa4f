import { Effect } from "effect"
import { SqlClient } from "effect/sql"

/**
 * Fewer index writes per usage row: time ranges are served by day-partition pruning and the
 * (api_key_id, created_at) index, so a separate created_at index only costs inserts.
 */
export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`DROP INDEX IF EXISTS usage_logs_time`
})
