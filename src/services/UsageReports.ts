import { Context, Data, type Effect } from "effect"
import type { UsageRow } from "../domain/usage.ts"

/** One usage row as a report shows it: the stored row without the key id (the caller's own), created_at as RFC 3339 (UTC, ms). */
export type ReportRow = Omit<UsageRow, "api_key_id" | "created_at"> & { readonly created_at: string }

/** Where a page ends: the last row's exact time (µs since the epoch) and id. The next page starts strictly before it. */
export interface RowPosition {
  readonly createdAtUs: bigint
  readonly id: string
}

export interface UsageRowsQuery {
  readonly apiKeyId: string
  /** [from, to), epoch ms. */
  readonly from: number
  readonly to: number
  readonly asset: string | undefined
  readonly service: string | undefined
  readonly pageSize: number
  /** Rows to skip (offset paging); ignored with `after`. */
  readonly offset: number
  /** Keyset paging: only rows older than this position (newest first). */
  readonly after: RowPosition | undefined
}

export interface UsageRowsPage {
  readonly rows: ReadonlyArray<ReportRow>
  /** The last row's position when more rows may follow, else undefined. */
  readonly next: RowPosition | undefined
  /** Epoch ms: rows created before this moment are in the answer (within the window). */
  readonly dataThrough: number
}

export class UsageReportsError extends Data.TaggedError("UsageReportsError")<{
  readonly reason: "Storage"
  readonly message: string
}> {}

/**
 * A key's own usage rows for the report server, newest first. Implementations: the database
 * (reader pool; also the embedded database), and Valkey's synced mirror plus the database for the
 * rows newer than the sync's high-water mark.
 */
export class UsageReports extends Context.Service<UsageReports, {
  readonly kind: "database" | "mirror"
  readonly rows: (query: UsageRowsQuery) => Effect.Effect<UsageRowsPage, UsageReportsError>
}>()("tb/UsageReports") {}

/** The monthly report counter (cluster-wide in Valkey, per node while Valkey is unreachable). */
export type ReportAdmission =
  | { readonly _tag: "Admitted"; readonly limit: number | null; readonly used: number }
  | { readonly _tag: "QuotaExceeded"; readonly limit: number; readonly used: number; readonly retryAfterSec: number }

export class ReportQuota extends Context.Service<ReportQuota, {
  /** Counts one report for the key this month, unless the limit (null: unlimited) is reached. */
  readonly admit: (apiKeyId: string, limit: number | null, now: number) => Effect.Effect<ReportAdmission>
  /** Takes back one report counted by `admit` whose answer failed (the store did not answer): only answered reports count. */
  readonly release: (apiKeyId: string, now: number) => Effect.Effect<void>
  /** This month's reports so far (no count taken). */
  readonly used: (apiKeyId: string, now: number) => Effect.Effect<number>
}>()("tb/ReportQuota") {}
