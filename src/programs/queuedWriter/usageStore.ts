import { Effect } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import type { UsageRow } from "../../domain/usage.ts"
import { type UsageInsertParams, usageRowsInsertParams } from "../../domain/usageInsertParams.ts"
import { monthlyCountsSelect } from "../../layers/migrations/0007_api_key_usage_monthly.ts"
import { usageInsertSql } from "../../layers/UsageWriterDatabase.ts"

/** The statement: the insert, and from the rows it returns, the counters. */
const countedInsertSql = (params: UsageInsertParams, duplicates: "fail" | "ignore") => `WITH inserted AS (
  ${usageInsertSql(params, duplicates)}
  RETURNING api_key_id, service, endpoint, asset, status_code, created_at
), counted AS (
  INSERT INTO api_key_usage_monthly AS counter (api_key_id, month, requests, queries, reports)
  SELECT * FROM (${monthlyCountsSelect("inserted")}) AS counts ORDER BY api_key_id, month
  ON CONFLICT (api_key_id, month) DO UPDATE SET
    requests = counter.requests + EXCLUDED.requests,
    queries = counter.queries + EXCLUDED.queries,
    reports = counter.reports + EXCLUDED.reports
)
SELECT count(*)::int AS inserted FROM inserted`

/**
 * One statement per batch: the usage insert (the producer's own), and from the rows it actually
 * stored (`RETURNING`), the per-key monthly counters; rows and counts commit together. A row
 * delivered twice is neither stored nor counted twice: the plain insert is tried first and fails
 * whole on a row already stored (the unique index of migration 0005), and only then is the batch
 * sent again with `ON CONFLICT DO NOTHING`, which returns only the new rows. The conflict check on
 * every row cost about a quarter of the insert's rate on PostgreSQL 15, for the rare batch that
 * needs it, as for the producer's database writer. Rows and counter rows are locked in one order
 * (id; key and month), so batches written at once (several receivers, several Lambdas) wait for
 * each other instead of deadlocking. Returns how many rows were new.
 */
export const insertUsageCounted = (rows: ReadonlyArray<UsageRow>): Effect.Effect<number, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    if (rows.length === 0) return 0
    const sql = yield* SqlClient.SqlClient
    // Rows in id order: batches written at once that share rows (a message delivered to two
    // receivers) then take the unique index's locks in the same order and wait instead of deadlocking.
    const params = usageRowsInsertParams([...rows].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)))
    const run = (duplicates: "fail" | "ignore") => sql.unsafe<{ readonly inserted: number }>(countedInsertSql(params, duplicates), params.values)
    const result = yield* run("fail").pipe(Effect.catchReason("SqlError", "UniqueViolation", () => run("ignore")))
    return result[0]?.inserted ?? 0
  })

/**
 * The database refused the rows themselves, not the moment: a constraint (SQLSTATE class 23, a
 * protocol outside the CHECK) or a value it cannot take (class 22, e.g. an id that is no UUID).
 * Sending the same rows again fails the same way, so the message holding them is poison.
 */
export const refusesTheRows = (error: SqlError.SqlError): boolean => {
  const reason = error.reason
  if (reason._tag === "ConstraintError") return true
  return reason._tag === "UnknownError" && sqlStateOf(reason.cause)?.startsWith("22") === true
}

/** The server's SQLSTATE of a driver error's cause (the driver copies the server's fields onto it). */
const sqlStateOf = (cause: unknown): string | undefined =>
  typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string" ? cause.code : undefined

/** What the server said ("invalid input syntax for type uuid: …"); the SqlError's own message is only the driver's "Query failed". */
export const serverMessageOf = (error: SqlError.SqlError): string => {
  const cause: unknown = error.reason.cause
  return cause instanceof Error && cause.message !== "" ? cause.message : error.message
}
