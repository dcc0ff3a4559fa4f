import { Effect, type Stream } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import { DAY_MS, type UsageRowText } from "../../domain/usageMirrorKeys.ts"
import type { ApiKeyCopy } from "./usageMirrorValkey.ts"

/**
 * Every column as PostgreSQL's text, which is what Valkey stores: no conversion in between.
 * float8 text is the shortest that reads back as the same double (PostgreSQL 12+); created_at
 * becomes epoch milliseconds.
 */
const ROW_TEXT_COLUMNS = `id::text AS id, request_id, api_key_id::text AS api_key_id, service, protocol, endpoint, asset, quote, source,
  price::text AS price, status_code::text AS status_code, error_code, latency_us::text AS latency_us, client_ip, node, region,
  bytes_out::text AS bytes_out, floor(extract(epoch FROM created_at) * 1000)::bigint::text AS created_at`

/**
 * The rows with created_at in [fromMs, toMs), streamed (the driver pauses the socket while the
 * consumer is behind). No ORDER BY: usage_logs has no index on created_at alone (one index per
 * row, migration 0005), so a range is read as a scan of its day partitions; slices are whole
 * days so each partition is scanned once.
 */
export const streamUsageRows = (reader: SqlClient.SqlClient, fromMs: number, toMs: number): Stream.Stream<UsageRowText, SqlError.SqlError> =>
  reader.unsafe<UsageRowText>(
    `SELECT ${ROW_TEXT_COLUMNS} FROM usage_logs WHERE created_at >= $1 AND created_at < $2`,
    [new Date(fromMs), new Date(toMs)]
  ).stream

/** Day slices [from, to) cut at UTC midnights. */
export const daySlices = (fromMs: number, toMs: number): ReadonlyArray<{ readonly from: number; readonly to: number }> => {
  const slices: Array<{ from: number; to: number }> = []
  for (let from = fromMs; from < toMs;) {
    const to = Math.min(toMs, Math.floor(from / DAY_MS) * DAY_MS + DAY_MS)
    slices.push({ from, to })
    from = to
  }
  return slices
}

/**
 * The planner's row count of each day partition (`usage_logs_YYYYMMDD`), for the progress ETA.
 * Rows in the default partition are not counted (an estimate, not a promise).
 */
export const partitionRowEstimates = (reader: SqlClient.SqlClient): Effect.Effect<ReadonlyMap<string, number>, SqlError.SqlError> =>
  reader<{ name: string; rows: number }>`
    SELECT c.relname AS name, c.reltuples::float8 AS rows FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
    WHERE p.relname = 'usage_logs' AND c.relname ~ '^usage_logs_[0-9]{8}$'`.pipe(
    Effect.map((rows) => new Map(rows.map((r) => {
      const d = r.name.slice("usage_logs_".length)
      return [`${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}`, Math.max(0, Number(r.rows))] as const
    })))
  )

/** Every API key (no secret is stored, only its hash). */
export const readApiKeys = (reader: SqlClient.SqlClient): Effect.Effect<ReadonlyArray<ApiKeyCopy>, SqlError.SqlError> =>
  reader<{
    id: string; key_hash: string; key_prefix: string; tier: string; lrs_enabled: boolean; status: string
    expires_at: string | null; updated_at: string
  }>`SELECT id::text AS id, key_hash, key_prefix, tier, lrs_enabled, status,
      floor(extract(epoch FROM expires_at) * 1000)::bigint::text AS expires_at,
      floor(extract(epoch FROM updated_at) * 1000)::bigint::text AS updated_at
    FROM api_keys ORDER BY id`.pipe(
    Effect.map((rows) => rows.map((r) => ({ ...r, expires_at: r.expires_at === null ? null : Number(r.expires_at), updated_at: Number(r.updated_at) })))
  )

/** `application_parameters` as name → value. */
export const readParameters = (reader: SqlClient.SqlClient): Effect.Effect<Readonly<Record<string, string>>, SqlError.SqlError> =>
  reader<{ name: string; value: string }>`SELECT name, value FROM application_parameters`.pipe(
    Effect.map((rows) => Object.fromEntries(rows.map((r) => [r.name, r.value])))
  )
