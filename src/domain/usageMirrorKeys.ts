import { decodeSketch, encodeSketch, type LatencySketch } from "./latencySketch.ts"
import { isUsageProtocol, isUsageService, USAGE_COLUMNS, type UsageRow } from "./usage.ts"

/**
 * The Valkey layout of the usage mirror that `tb sync` writes and the LRS reads (docs/sync.md).
 *
 * - `usage:<id>`: hash, one per usage row, its 18 columns as text (a NULL column is left out).
 * - Sorted sets, member = row id, score = created_at (epoch ms), one per UTC day so no set grows
 *   past a day of rows and a day can be dropped whole:
 *   `usage:idx:time:<day>` (every row), `usage:idx:key:<api_key_id>:<day>` (rows with a key),
 *   `usage:idx:asset:<asset>:<day>` (rows with an asset). `<day>` is `YYYY-MM-DD` (UTC).
 * - `usage:idx:days`: sorted set of the days present (member `<day>`, score its start in ms), and
 *   `usage:idx:day:<day>`: set of that day's key and asset index names, so pruning can find them.
 * - `usage:sync`: hash, the sync's state (SYNC_STATE_FIELDS). Two runs at once are safe (idempotent
 *   writes, marks that only move forward), only wasteful.
 *
 * Expiry: a row's hash at created_at + rowDays; a day's index keys at the end of the day + rowDays
 * (when its newest row's hash expires).
 */

export const DAY_MS = 86_400_000

export const USAGE_HASH_PREFIX = "usage:"
export const usageHashKey = (id: string): string => `usage:${id}`

/** `YYYY-MM-DD` of an epoch-ms instant, in UTC. */
export const utcDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10)
/** Start of the UTC day holding `ms`. */
export const utcDayStart = (ms: number): number => Math.floor(ms / DAY_MS) * DAY_MS
/** Start of a `YYYY-MM-DD` day in ms (NaN when it is not one). */
export const dayStartOf = (day: string): number => Date.parse(`${day}T00:00:00.000Z`)

export const timeIndexKey = (day: string): string => `usage:idx:time:${day}`
export const keyIndexKey = (apiKeyId: string, day: string): string => `usage:idx:key:${apiKeyId}:${day}`
export const assetIndexKey = (asset: string, day: string): string => `usage:idx:asset:${asset}:${day}`
/** Days present: member `YYYY-MM-DD`, score the day's start (ms). */
export const DAYS_KEY = "usage:idx:days"
/** Set of the key and asset index names of one day (what to prune with it). */
export const dayIndexesKey = (day: string): string => `usage:idx:day:${day}`

/** The sync's state, a hash. */
export const SYNC_STATE_KEY = "usage:sync"

/**
 * Fields of `usage:sync` (all epoch ms or counts, as decimal text):
 * - `complete_through`: every row with created_at < this (and ≥ now − row_days) is in Valkey,
 *   except a row inserted more than `lag_ms` after its created_at (see docs/sync.md). Readers take
 *   rows at or after it from SQL. The next run reads again from `complete_through`.
 * - `synced_through`: the newest created_at the last run wrote (rows up to it may be in Valkey).
 * - `row_days`: the window the last run kept (sync_row_days); `lag_ms`: its late-row lag.
 * - `last_started_at`, `last_finished_at`, `last_rows`, `last_batches`, `last_mode` (full|incremental).
 * - `full_through`, `full_row_days`: only while a full run is unfinished (killed): where the next run goes on.
 * - `rollup_through`: the newest usage_daily_rollup_days.refreshed_at copied (ms).
 */
export const SYNC_STATE_FIELDS = [
  "complete_through", "synced_through", "row_days", "lag_ms", "full_through", "full_row_days", "rollup_through",
  "last_started_at", "last_finished_at", "last_rows", "last_batches", "last_mode"
] as const
export type SyncStateField = (typeof SYNC_STATE_FIELDS)[number]

/** API keys as the sync refreshes them: `apikey:<sha256 hex of the key>` (no secret; see docs/sync.md). */
export const apiKeyHashKey = (keyHash: string): string => `apikey:${keyHash}`
export const API_KEY_FIELDS = ["id", "prefix", "tier", "lrs_enabled", "status", "expires_at", "updated_at"] as const

/** When a row's hash expires (epoch ms). */
export const rowExpiresAt = (createdAtMs: number, rowDays: number): number => createdAtMs + rowDays * DAY_MS
/** When a day's index keys expire: with the day's newest possible row. */
export const dayIndexExpiresAt = (day: string, rowDays: number): number => dayStartOf(day) + DAY_MS + rowDays * DAY_MS
/** The oldest created_at kept at `nowMs`: rows before it are out of the window. */
export const windowStart = (nowMs: number, rowDays: number): number => nowMs - rowDays * DAY_MS

/** The hash fields are the usage_logs columns, in table order. */
export const USAGE_HASH_FIELDS = USAGE_COLUMNS

type NullableColumn = "api_key_id" | "asset" | "quote" | "source" | "price" | "error_code"
/** One row's columns as text; null = NULL (the hash leaves the field out). */
export type UsageRowText = { readonly [K in (typeof USAGE_COLUMNS)[number]]: K extends NullableColumn ? string | null : string }

/** A row as `HSET` arguments: field, value, … (NULL columns left out). */
export const usageHashArgs = (row: UsageRowText): Array<string> => {
  const args: Array<string> = []
  for (const column of USAGE_COLUMNS) {
    const value = row[column]
    if (value !== null) args.push(column, value)
  }
  return args
}

/** A domain row as text (price as the shortest text that reads back as the same double). */
export const usageRowText = (row: UsageRow): UsageRowText => ({
  id: row.id,
  request_id: row.request_id,
  api_key_id: row.api_key_id,
  service: row.service,
  protocol: row.protocol,
  endpoint: row.endpoint,
  asset: row.asset,
  quote: row.quote,
  source: row.source,
  price: row.price === null ? null : String(row.price),
  status_code: String(row.status_code),
  error_code: row.error_code,
  latency_us: String(row.latency_us),
  client_ip: row.client_ip,
  node: row.node,
  region: row.region,
  bytes_out: String(row.bytes_out),
  created_at: String(row.created_at)
})

/** A `usage:<id>` hash (HGETALL) back into a row; undefined when it is not a whole row (expired, foreign). */
export const usageRowFromHash = (hash: Readonly<Record<string, string>>): UsageRow | undefined => {
  const text = (k: string) => hash[k]
  const nullable = (k: string) => hash[k] ?? null
  const int = (k: string) => {
    const v = hash[k]
    return v === undefined || !/^-?\d+$/.test(v) ? undefined : Number(v)
  }
  const id = text("id"), requestId = text("request_id"), service = text("service"), protocol = text("protocol")
  const endpoint = text("endpoint"), clientIp = text("client_ip"), node = text("node"), region = text("region")
  const status = int("status_code"), latency = int("latency_us"), bytes = int("bytes_out"), createdAt = int("created_at")
  if (id === undefined || requestId === undefined || service === undefined || !isUsageService(service) || protocol === undefined ||
    !isUsageProtocol(protocol) || endpoint === undefined || clientIp === undefined || node === undefined || region === undefined ||
    status === undefined || latency === undefined || bytes === undefined || createdAt === undefined) return undefined
  const price = hash["price"]
  return {
    id, request_id: requestId, api_key_id: nullable("api_key_id"),
    service, protocol, endpoint,
    asset: nullable("asset"), quote: nullable("quote"), source: nullable("source"),
    price: price === undefined ? null : Number(price),
    status_code: status, error_code: nullable("error_code"), latency_us: latency,
    client_ip: clientIp, node, region, bytes_out: bytes, created_at: createdAt
  }
}

/** The index keys a row belongs to (time, and key / asset when it has them). */
export const indexKeysOf = (row: { readonly api_key_id: string | null; readonly asset: string | null }, day: string): Array<string> => {
  const keys = [timeIndexKey(day)]
  if (row.api_key_id !== null) keys.push(keyIndexKey(row.api_key_id, day))
  if (row.asset !== null) keys.push(assetIndexKey(row.asset, day))
  return keys
}

/*
 * The daily rollup (usage_daily_rollup_dim, helper ROLLUP's table) as the sync copies it:
 * `usage:rollup:<api_key_id or ->:<YYYY-MM-DD>`, a hash per key and UTC day, field `<dimension>`
 * (the day's total) or `<dimension>:<value>` (asset, source, service, endpoint, status), value
 * `requests,errors,bytes_out,latency_sum,last_at_ms,<latency sketch as encodeSketch writes it>`.
 * Expires at the day's end + usage_retention_days (the summaries keep 93 days whatever
 * sync_row_days says). `usage:rollup:days`: sorted set of the days copied (score: the day's start).
 */
export const rollupKey = (apiKeyId: string | null, day: string): string => `usage:rollup:${apiKeyId ?? "-"}:${day}`
export const ROLLUP_DAYS_KEY = "usage:rollup:days"
export const rollupField = (dimension: string, value: string | null): string => (value === null ? dimension : `${dimension}:${value}`)
export const rollupExpiresAt = (day: string, retentionDays: number): number => dayStartOf(day) + DAY_MS + retentionDays * DAY_MS

export interface RollupCell {
  readonly requests: number
  readonly errors: number
  readonly bytes_out: number
  readonly latency_sum: number
  readonly last_at: number
  readonly sketch: LatencySketch
}

export const encodeRollupCell = (c: RollupCell): string =>
  `${c.requests},${c.errors},${c.bytes_out},${c.latency_sum},${c.last_at},${encodeSketch(c.sketch)}`

/** A cell `encodeRollupCell` wrote, or undefined. */
export const decodeRollupCell = (text: string): RollupCell | undefined => {
  const parts = text.split(",")
  if (parts.length < 6) return undefined
  const numbers = parts.slice(0, 5).map(Number)
  if (numbers.some((n) => !Number.isFinite(n))) return undefined
  const sketch = decodeSketch(parts.slice(5).join(","))
  if (sketch === undefined) return undefined
  const [requests, errors, bytes_out, latency_sum, last_at] = numbers as [number, number, number, number, number]
  return { requests, errors, bytes_out, latency_sum, last_at, sketch }
}
