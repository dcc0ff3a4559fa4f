import { Data, Effect } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import { messageOf } from "../../domain/errorMessage.ts"
import { USAGE_COLUMNS, type UsageRow } from "../../domain/usage.ts"
import { isUniform, type UsageInsertParams, usageRowsInsertParams } from "../../domain/usageInsertParams.ts"
import { decodeQueueMessage, type QueueMessage } from "../../domain/usageQueueMessage.ts"
import { monthlyCountsSelect } from "../migrations/0007_api_key_usage_monthly.ts"

/**
 * Storing `usage_log` message bodies in PostgreSQL: what the queued writer does with the queue's
 * messages, and what the usage thread does with its own batches when rows go straight to the
 * database (no SQS_QUEUE_URL). One statement per batch inserts the rows and updates the per-key
 * monthly counters from the rows it actually stored.
 */

/** Column types of usage_logs as the array parameters declare them (created_at arrives as epoch ms). */
const COLUMN_TYPES: Record<(typeof USAGE_COLUMNS)[number], string> = {
  id: "uuid", request_id: "text", api_key_id: "uuid", service: "text", protocol: "text", endpoint: "text",
  asset: "text", quote: "text", source: "text", price: "double precision", status_code: "integer",
  error_code: "text", latency_us: "integer", client_ip: "text", node: "text", region: "text",
  bytes_out: "integer", created_at: "double precision"
}

/** A column's value in the SELECT: from unnest's row `r`, or the parameter itself when one value fills the column. */
const selected = (params: UsageInsertParams, column: (typeof USAGE_COLUMNS)[number], i: number): string => {
  const value = isUniform(params, i) ? `$${i + 1}::${COLUMN_TYPES[column]}` : `r.${column}`
  return column === "created_at" ? `to_timestamp(${value} / 1000.0)` : value
}

/** The INSERT for each shape of parameters (which columns are one value) met lately: a few occur. */
const insertSqlByShape = new Map<number, string>()
const MAX_SHAPES = 64

const plainInsertSql = (params: UsageInsertParams): string => {
  const known = insertSqlByShape.get(params.uniformMask)
  if (known !== undefined) return known
  const arrays = USAGE_COLUMNS.flatMap((column, i) => (isUniform(params, i) ? [] : [{ column, i }]))
  const made = `INSERT INTO usage_logs (${USAGE_COLUMNS.join(",")})
  SELECT ${USAGE_COLUMNS.map((column, i) => selected(params, column, i)).join(",")}
  FROM unnest(${arrays.map(({ column, i }) => `$${i + 1}::${COLUMN_TYPES[column]}[]`).join(",")}) AS r(${arrays.map(({ column }) => column).join(",")})`
  if (insertSqlByShape.size >= MAX_SHAPES) insertSqlByShape.clear()
  insertSqlByShape.set(params.uniformMask, made)
  return made
}

/** The unique key that makes a row delivered twice one row (migration 0005's index). */
const CONFLICT_CLAUSE = " ON CONFLICT (api_key_id, created_at, id) DO NOTHING"

/**
 * The batch INSERT: 18 parameters whatever the batch size, each column one array that PostgreSQL
 * expands with unnest, or one value when every row holds it (usageInsertParams.ts). Plain, or with
 * the duplicate check on every row.
 */
export const usageInsertSql = (params: UsageInsertParams, duplicates: "fail" | "ignore"): string =>
  duplicates === "fail" ? plainInsertSql(params) : plainInsertSql(params) + CONFLICT_CLAUSE

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
 * One statement per batch: the usage insert, and from the rows it actually stored (`RETURNING`),
 * the per-key monthly counters; rows and counts commit together. A row delivered twice is neither
 * stored nor counted twice: the plain insert is tried first and fails whole on a row already
 * stored (the unique index on (api_key_id, created_at, id), migration 0005), and only then is the
 * batch sent again with `ON CONFLICT DO NOTHING`, which returns only the new rows. The conflict
 * check on every row costs a good share of the insert's rate (bench/README.md), for the rare batch
 * that needs it. Rows and counter rows are locked in one order (id; key and month), so batches
 * written at once (several receivers, several Lambdas) wait for each other instead of
 * deadlocking. Returns how many rows were new.
 */
export const insertUsageCounted = (rows: ReadonlyArray<UsageRow>): Effect.Effect<number, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    if (rows.length === 0) return 0
    const sql = yield* SqlClient.SqlClient
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

/** The message decoder: `decodeQueueMessage` (a test may pass another). */
export type DecodeQueueMessage = (body: string) => QueueMessage

/** A message body and what names it: SQS's MessageId, or the body's place in a batch of the usage thread. */
export interface QueuedMessage {
  readonly id: string
  readonly body: string
}

export interface PoisonMessage {
  readonly id: string
  readonly reason: string
}

export interface StoredBatch {
  /** Messages whose rows are in the database now (new, or there already): done. */
  readonly stored: ReadonlyArray<string>
  /** Messages that can never be stored (undecodable, unknown type or version, rows the database refuses). */
  readonly poison: ReadonlyArray<PoisonMessage>
  /** Rows in the stored messages, and how many of them were new. */
  readonly rows: number
  readonly inserted: number
}

/** The database could not take the batch now (down, timed out): nothing counts as stored, every message is to be tried again. */
export class UsageStoreError extends Data.TaggedError("UsageStoreError")<{
  readonly message: string
}> {}

interface Decoded {
  readonly id: string
  readonly rows: ReadonlyArray<UsageRow>
}

const decodeSafely = (decode: DecodeQueueMessage, body: string): QueueMessage => {
  try {
    return decode(body)
  } catch (cause) {
    return { _tag: "Poison", reason: `undecodable: ${messageOf(cause)}` }
  }
}

/**
 * A batch where the database refused some row: each message on its own, so the messages holding
 * such rows become poison and the others are stored. Rare (the decoder checks the rows' shape),
 * and one statement per message only then.
 */
const storeOneByOne = (decoded: ReadonlyArray<Decoded>) =>
  Effect.forEach(decoded, (message) =>
    insertUsageCounted(message.rows).pipe(
      Effect.map((inserted) => ({ _tag: "Stored" as const, id: message.id, rows: message.rows.length, inserted })),
      Effect.catchIf(refusesTheRows, (e) =>
        Effect.succeed({ _tag: "Poison" as const, id: message.id, reason: `rows refused by the database: ${serverMessageOf(e)}` }))
    ))

/**
 * Decode each body; a poison one is reported, never holding up the others; all good rows go to
 * usage_logs in one insert that also updates the per-key monthly counters (insertUsageCounted),
 * duplicates ignored. Fails with UsageStoreError when the database cannot take the batch: then no
 * message is done. The caller logs the poison (it knows what names a message).
 */
export const storeUsageMessages = (
  messages: ReadonlyArray<QueuedMessage>,
  decode: DecodeQueueMessage = decodeQueueMessage
): Effect.Effect<StoredBatch, UsageStoreError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const decoded: Array<Decoded> = []
    const poison: Array<PoisonMessage> = []
    for (const message of messages) {
      const outcome = decodeSafely(decode, message.body)
      if (outcome._tag === "Poison") poison.push({ id: message.id, reason: outcome.reason })
      else decoded.push({ id: message.id, rows: outcome.rows })
    }
    const allRows = decoded.flatMap((m) => m.rows)
    const stored: Array<string> = []
    let rows = 0
    let inserted = 0
    const batch = yield* insertUsageCounted(allRows).pipe(
      Effect.map((n) => ({ _tag: "Inserted" as const, n })),
      Effect.catchIf(refusesTheRows, (e) =>
        Effect.logWarning(`the database refused a row of the batch (${serverMessageOf(e)}); storing its ${decoded.length} messages one by one`).pipe(
          Effect.andThen(storeOneByOne(decoded)),
          Effect.map((outcomes) => ({ _tag: "OneByOne" as const, outcomes }))
        )),
      Effect.mapError((e) => new UsageStoreError({ message: serverMessageOf(e) }))
    )
    if (batch._tag === "Inserted") {
      stored.push(...decoded.map((m) => m.id))
      rows = allRows.length
      inserted = batch.n
    } else {
      for (const outcome of batch.outcomes) {
        if (outcome._tag === "Poison") {
          poison.push({ id: outcome.id, reason: outcome.reason })
          continue
        }
        stored.push(outcome.id)
        rows += outcome.rows
        inserted += outcome.inserted
      }
    }
    return { stored, poison, rows, inserted }
  })
