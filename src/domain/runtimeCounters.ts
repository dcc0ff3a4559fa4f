/**
 * The 25 runtime counters behind /admin/stress-stats and stats:<node>. Index = position.
 * `anonymous_rows_dropped`: usage rows the sink only counted, not wrote (requests without a valid
 * key past `anonymous_rows_per_ip_per_s`); `usage_rows_recorded`: rows the sink took to write, of every service.
 */
export const COUNTER_NAMES = [
  "requests_total", "http_requests", "udp_requests", "price_hits", "no_fresh_price", "unknown_asset",
  "client_errors", "server_errors", "auth_failures", "rate_limited", "quota_exceeded", "system_busy",
  "maintenance_refusals", "udp_malformed", "udp_silent_drops", "udp_send_errors", "usage_rows_recorded",
  "usage_rows_written", "usage_batches", "usage_buffered", "usage_spooled", "key_cache_misses",
  "db_lookups_in_flight", "cluster_reconcile_failures", "anonymous_rows_dropped"
] as const
export type CounterName = (typeof COUNTER_NAMES)[number]

/**
 * Index of each counter in the values array. Spelled out as a literal (not built with
 * Object.fromEntries) so V8 gives it fast properties: the hot path reads it on every request.
 */
export const COUNTER = {
  requests_total: 0, http_requests: 1, udp_requests: 2, price_hits: 3, no_fresh_price: 4, unknown_asset: 5,
  client_errors: 6, server_errors: 7, auth_failures: 8, rate_limited: 9, quota_exceeded: 10, system_busy: 11,
  maintenance_refusals: 12, udp_malformed: 13, udp_silent_drops: 14, udp_send_errors: 15, usage_rows_recorded: 16,
  usage_rows_written: 17, usage_batches: 18, usage_buffered: 19, usage_spooled: 20, key_cache_misses: 21,
  db_lookups_in_flight: 22, cluster_reconcile_failures: 23, anonymous_rows_dropped: 24
} as const satisfies { readonly [K in CounterName]: number }

export const countersToRecord = (values: ArrayLike<number>): Record<CounterName, number> =>
  Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, values[i] ?? 0])) as Record<CounterName, number>

/** Counters that measure a current level rather than a count: a stats reset leaves them alone. */
export const GAUGES: ReadonlyArray<number> = [COUNTER.usage_buffered, COUNTER.db_lookups_in_flight]
