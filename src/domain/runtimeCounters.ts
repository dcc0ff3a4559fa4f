/** The 24 runtime counters behind /admin/stress-stats and stats:<node>. Index = position. */
export const COUNTER_NAMES = [
  "requests_total", "http_requests", "udp_requests", "price_hits", "no_fresh_price", "unknown_asset",
  "client_errors", "server_errors", "auth_failures", "rate_limited", "quota_exceeded", "system_busy",
  "maintenance_refusals", "udp_malformed", "udp_silent_drops", "udp_send_errors", "usage_rows_recorded",
  "usage_rows_written", "usage_batches", "usage_buffered", "usage_spooled", "key_cache_misses",
  "db_lookups_in_flight", "cluster_reconcile_failures"
] as const
export type CounterName = (typeof COUNTER_NAMES)[number]

export const COUNTER: { readonly [K in CounterName]: number } = Object.fromEntries(
  COUNTER_NAMES.map((n, i) => [n, i])
) as { readonly [K in CounterName]: number }

export const countersToRecord = (values: ArrayLike<number>): Record<CounterName, number> =>
  Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, values[i] ?? 0])) as Record<CounterName, number>
