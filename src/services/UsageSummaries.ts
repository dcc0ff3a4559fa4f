import { Context, Data, type Effect } from "effect"

/** What /reports/summary groups by (api.md "LRS"). */
export const SUMMARY_GROUPINGS = ["day", "asset", "source", "service", "endpoint", "status"] as const
export type SummaryGroupBy = (typeof SUMMARY_GROUPINGS)[number]

/** One key's usage over [from, to) (epoch ms, any instants), grouped by one dimension. */
export interface SummaryQuery {
  readonly apiKeyId: string
  readonly from: number
  readonly to: number
  readonly groupBy: SummaryGroupBy
}

/**
 * One group's totals. `group`: `YYYY-MM-DD` (UTC) for day, the status code as text for status,
 * else the column's value (null for rows without an asset or source). Percentiles are integer µs
 * within 1 % of `percentile_disc` over the group's rows (errors included); null with no rows.
 */
export interface SummaryGroup {
  readonly group: string | null
  readonly requests: number
  readonly errors: number
  readonly bytes_out: number
  readonly p50_us: number | null
  readonly p95_us: number | null
  readonly p99_us: number | null
}

/**
 * Groups: by day every UTC day the window touches, ascending, zero-filled; otherwise the groups
 * with rows, by group ascending (null last). `data_through`: the newest created_at counted (epoch
 * ms), null when no row was.
 */
export interface UsageSummary {
  readonly groups: ReadonlyArray<SummaryGroup>
  readonly data_through: number | null
}

export class UsageSummariesError extends Data.TaggedError("UsageSummariesError")<{
  readonly reason: "Storage" | "BadWindow"
  readonly message: string
}> {}

/**
 * Usage summaries of one key: whole days from the daily rollup, partial edge days and days not yet
 * rolled up from usage_logs. It does not check LRS enablement or the 93-day limit (the caller does).
 */
export class UsageSummaries extends Context.Service<UsageSummaries, {
  readonly summary: (query: SummaryQuery) => Effect.Effect<UsageSummary, UsageSummariesError>
}>()("tb/UsageSummaries") {}
