import type { SummaryGroupBy } from "../../services/UsageSummaries.ts"

/**
 * The SQL expression (over usage_logs or usage_daily_rollup columns) each summary dimension groups
 * by, as text. `day` groups the key's whole day, so its value is NULL (the row's day says it).
 */
export const DIMENSION_VALUE_SQL: Readonly<Record<SummaryGroupBy, string>> = {
  day: "NULL::text",
  asset: "asset",
  source: "source",
  service: "service",
  endpoint: "endpoint",
  status: "status_code::text"
}

export const DIMENSIONS = Object.keys(DIMENSION_VALUE_SQL) as ReadonlyArray<SummaryGroupBy>

export const DAY_MS = 86_400_000

/** `YYYY-MM-DD` of the UTC day holding `ms`. */
export const dayName = (ms: number): string => new Date(ms).toISOString().slice(0, 10)

/** The UTC midnight at or before `ms`. */
export const dayStart = (ms: number): number => Math.floor(ms / DAY_MS) * DAY_MS

export const WEEK_MS = 7 * DAY_MS

/** The Monday (UTC) of the ISO week holding `ms` (1970-01-01 was a Thursday). */
export const weekStart = (ms: number): number => {
  const day = Math.floor(ms / DAY_MS)
  return (day - ((day + 3) % 7)) * DAY_MS
}
