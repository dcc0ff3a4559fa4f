import { Effect } from "effect"
import { SqlClient } from "effect/sql"

/**
 * The daily usage rollup (src/layers/rollup): what /reports/summary, mv_usage_daily and the sync
 * job's summaries read instead of scanning usage_logs. Tables start empty; the rollup refresh
 * fills every day of the retention window on its first run.
 *
 * - usage_daily_rollup: per key (NULL: keyless rows) × UTC day × asset × source × service ×
 *   endpoint × status_code: requests, errors (status_code ≥ 400), bytes_out, latency_sum, last_at
 *   (newest created_at) and the latency sketch (src/domain/latencySketch.ts) as two parallel
 *   arrays, buckets ascending.
 * - usage_daily_rollup_dim: the same per key × day × ONE dimension (day, asset, source, service,
 *   endpoint, status): a summary over 93 days reads a few hundred of these rows, not the full grid.
 *   Its sketch is one bytea of (int2 bucket, int4 count) big-endian pairs, buckets ascending
 *   (`packedSketchSql`): read as raw bytes, ~10x cheaper for the client than two arrays.
 * - usage_daily_rollup_days: the days rolled up and how many usage rows they covered (a day not
 *   listed is read from usage_logs; a changed row count tells the refresh a late row came in).
 * - usage_weekly_rollup_dim: usage_daily_rollup_dim merged over ISO weeks (Monday to Sunday, UTC)
 *   for every dimension but day, so a 93-day summary by asset reads ~13 week rows per value, not 93;
 *   usage_weekly_rollup_weeks: the weeks built, with the newest refreshed_at of their 7 days then
 *   (a day refreshed later makes the refresh build its week again).
 *
 * mv_usage_daily (0001) is redefined over the rollup: same columns, plus bytes_out; `errors` now
 * follows the spec (status_code ≥ 400). It holds whole days only (the rollup has no today).
 */
export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const measures = `
    requests bigint NOT NULL,
    errors bigint NOT NULL,
    bytes_out bigint NOT NULL,
    latency_sum bigint NOT NULL,
    last_at timestamptz NOT NULL`
  yield* sql.unsafe(`CREATE TABLE IF NOT EXISTS usage_daily_rollup (
    api_key_id uuid,
    day date NOT NULL,
    asset text,
    source text,
    service text NOT NULL,
    endpoint text NOT NULL,
    status_code integer NOT NULL,
    ${measures},
    latency_buckets int[] NOT NULL,
    latency_counts bigint[] NOT NULL
  )`)
  yield* sql`CREATE UNIQUE INDEX IF NOT EXISTS usage_daily_rollup_group
    ON usage_daily_rollup (day, api_key_id, asset, source, service, endpoint, status_code) NULLS NOT DISTINCT`
  yield* sql.unsafe(`CREATE TABLE IF NOT EXISTS usage_daily_rollup_dim (
    api_key_id uuid,
    dimension text NOT NULL CHECK (dimension IN ('day', 'asset', 'source', 'service', 'endpoint', 'status')),
    day date NOT NULL,
    value text,
    ${measures},
    latency_sketch bytea NOT NULL
  )`)
  // Summaries read one key's dimension over a day range; the refresh replaces whole days.
  yield* sql`CREATE UNIQUE INDEX IF NOT EXISTS usage_daily_rollup_dim_group
    ON usage_daily_rollup_dim (api_key_id, dimension, day, value) NULLS NOT DISTINCT`
  yield* sql`CREATE INDEX IF NOT EXISTS usage_daily_rollup_dim_day ON usage_daily_rollup_dim (day)`
  yield* sql`CREATE TABLE IF NOT EXISTS usage_daily_rollup_days (
    day date PRIMARY KEY,
    source_rows bigint NOT NULL,
    refreshed_at timestamptz NOT NULL
  )`
  yield* sql.unsafe(`CREATE TABLE IF NOT EXISTS usage_weekly_rollup_dim (
    api_key_id uuid,
    dimension text NOT NULL CHECK (dimension IN ('asset', 'source', 'service', 'endpoint', 'status')),
    week date NOT NULL,
    value text,
    ${measures},
    latency_sketch bytea NOT NULL
  )`)
  yield* sql`CREATE UNIQUE INDEX IF NOT EXISTS usage_weekly_rollup_dim_group
    ON usage_weekly_rollup_dim (api_key_id, dimension, week, value) NULLS NOT DISTINCT`
  yield* sql`CREATE INDEX IF NOT EXISTS usage_weekly_rollup_dim_week ON usage_weekly_rollup_dim (week)`
  yield* sql`CREATE TABLE IF NOT EXISTS usage_weekly_rollup_weeks (
    week date PRIMARY KEY,
    days_refreshed_at timestamptz NOT NULL
  )`
  yield* sql`DROP MATERIALIZED VIEW IF EXISTS mv_usage_daily`
  yield* sql`CREATE MATERIALIZED VIEW mv_usage_daily AS
    SELECT (day::timestamp AT TIME ZONE 'UTC') AS day, api_key_id, service, asset,
           sum(requests)::bigint AS requests,
           sum(errors)::bigint AS errors,
           (sum(latency_sum) / nullif(sum(requests), 0))::double precision AS avg_latency_us,
           sum(bytes_out)::bigint AS bytes_out
    FROM usage_daily_rollup GROUP BY 1, 2, 3, 4`
  // A unique index lets the refresh run CONCURRENTLY (readers are not blocked).
  yield* sql`CREATE UNIQUE INDEX IF NOT EXISTS mv_usage_daily_group
    ON mv_usage_daily (day, api_key_id, service, asset) NULLS NOT DISTINCT`
})
