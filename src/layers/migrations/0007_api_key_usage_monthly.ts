import { Effect } from "effect"
import { SqlClient } from "effect/sql"

/**
 * The counts of one key's usage rows per calendar month (UTC), from the rows of `source` (a
 * relation with usage_logs' api_key_id, service, endpoint, asset, status_code and created_at),
 * one output row per (key, month):
 * - requests: every row of the key (any service, any status);
 * - queries: answered price queries, as the monthly quota charges them (RateLimiterLive seeds its
 *   counters with the same rule): service LPO, status 200, one per asset of a `/prices` row;
 * - reports: answered LRS requests (service LRS, status 200), what `lrs_reports_per_month` limits.
 * Rows without a key are not counted. The queued writer adds these counts for exactly the rows
 * its insert stored, so a message delivered twice counts once.
 */
export const monthlyCountsSelect = (source: string): string => `
  SELECT api_key_id, (date_trunc('month', created_at AT TIME ZONE 'UTC'))::date AS month,
         count(*)::bigint AS requests,
         coalesce(sum(CASE WHEN service = 'LPO' AND status_code = 200
                           THEN CASE WHEN endpoint = '/prices' THEN coalesce(array_length(string_to_array(asset, ','), 1), 1) ELSE 1 END
                      END), 0)::bigint AS queries,
         count(*) FILTER (WHERE service = 'LRS' AND status_code = 200)::bigint AS reports
  FROM ${source} WHERE api_key_id IS NOT NULL
  GROUP BY 1, 2`

/**
 * Per-key monthly usage counters, kept up to date by the queued writer in the same statement as
 * its insert into usage_logs (see monthlyCountsSelect for what each column counts). No foreign
 * key to api_keys: a row of a key deleted meanwhile must not fail a whole batch. Rows already in
 * usage_logs are counted once here.
 */
export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE IF NOT EXISTS api_key_usage_monthly (
    api_key_id uuid NOT NULL,
    month date NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    queries bigint NOT NULL DEFAULT 0,
    reports bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, month)
  )`
  yield* sql.unsafe(`INSERT INTO api_key_usage_monthly (api_key_id, month, requests, queries, reports)
    ${monthlyCountsSelect("usage_logs")}
    ON CONFLICT (api_key_id, month) DO NOTHING`)
})
