import { Effect } from "effect"
import { SqlClient } from "effect/sql"

/** Every table of the spec's "Storage" section. usage_logs is partitioned by day (see partitions.ts). */
export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE IF NOT EXISTS rate_limit_template (
    tier text PRIMARY KEY,
    requests_per_second integer,            -- NULL = not rate limited (internal "unmetered" tier)
    burst integer,
    monthly_queries bigint,                 -- NULL = unlimited
    lrs_reports_per_month integer,          -- NULL = unlimited; 0 = LRS off
    lrs_requires_addon boolean NOT NULL DEFAULT false,
    webhook_assets integer NOT NULL DEFAULT 0,
    partner_ws boolean NOT NULL DEFAULT false,
    public boolean NOT NULL DEFAULT true,
    description text NOT NULL DEFAULT ''
  )`
  yield* sql`CREATE TABLE IF NOT EXISTS users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    stripe_customer_id text,
    created_at timestamptz NOT NULL DEFAULT now()
  )`
  yield* sql`CREATE TABLE IF NOT EXISTS api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id bigint REFERENCES users(id),
    key_hash text NOT NULL UNIQUE,
    key_prefix text NOT NULL,
    tier text NOT NULL REFERENCES rate_limit_template(tier),
    lrs_enabled boolean NOT NULL DEFAULT false,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    email text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz
  )`
  yield* sql`CREATE INDEX IF NOT EXISTS api_keys_updated_at ON api_keys (updated_at)`
  yield* sql`CREATE TABLE IF NOT EXISTS usage_logs (
    id uuid NOT NULL,
    request_id text NOT NULL,
    api_key_id uuid,
    service text NOT NULL,
    protocol text NOT NULL CHECK (protocol IN ('http', 'udp', 'ws')),
    endpoint text NOT NULL,
    asset text,
    quote text,
    source text,
    price double precision,
    status_code integer NOT NULL,
    error_code text,
    latency_us integer NOT NULL,
    client_ip text NOT NULL,
    node text NOT NULL,
    region text NOT NULL,
    bytes_out integer NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
  ) PARTITION BY RANGE (created_at)`
  // Rows outside the pre-created day partitions land here instead of failing the insert.
  yield* sql`CREATE TABLE IF NOT EXISTS usage_logs_default PARTITION OF usage_logs DEFAULT`
  yield* sql`CREATE INDEX IF NOT EXISTS usage_logs_key_time ON usage_logs (api_key_id, created_at DESC)`
  yield* sql`CREATE INDEX IF NOT EXISTS usage_logs_time ON usage_logs (created_at)`
  yield* sql`CREATE TABLE IF NOT EXISTS application_parameters (
    name text PRIMARY KEY,
    value text NOT NULL,
    value_type text NOT NULL CHECK (value_type IN ('int', 'number', 'bool', 'string')),
    description text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
  )`
  yield* sql`CREATE TABLE IF NOT EXISTS parameter_profiles (
    profile text NOT NULL,
    name text NOT NULL REFERENCES application_parameters(name),
    value text NOT NULL,
    PRIMARY KEY (profile, name)
  )`
  yield* sql`CREATE TABLE IF NOT EXISTS exchange_feeds (
    exchange text PRIMARY KEY,
    ws_url text NOT NULL,
    rest_url text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    rest_budget_per_second integer NOT NULL DEFAULT 2,
    description text NOT NULL DEFAULT ''
  )`
  yield* sql`CREATE TABLE IF NOT EXISTS exchange_asset_map (
    exchange text NOT NULL REFERENCES exchange_feeds(exchange),
    asset text NOT NULL,
    quote text NOT NULL,
    symbol text NOT NULL,
    usd_equivalent boolean NOT NULL DEFAULT false,
    enabled boolean NOT NULL DEFAULT true,
    PRIMARY KEY (exchange, asset, quote)
  )`
  yield* sql`CREATE TABLE IF NOT EXISTS transactions (
    id bigserial PRIMARY KEY,
    payment_session_id text NOT NULL UNIQUE,
    user_id bigint REFERENCES users(id),
    api_key_id uuid REFERENCES api_keys(id),
    tier text NOT NULL,
    amount_cents bigint NOT NULL,
    currency text NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
  )`
  yield* sql`CREATE TABLE IF NOT EXISTS webhooks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    api_key_id uuid NOT NULL REFERENCES api_keys(id),
    url text NOT NULL,
    assets text[] NOT NULL DEFAULT '{}',
    secret_hash text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
  )`
  yield* sql`CREATE MATERIALIZED VIEW IF NOT EXISTS mv_usage_daily AS
    SELECT date_trunc('day', created_at) AS day, api_key_id, service, asset,
           count(*)::bigint AS requests,
           count(*) FILTER (WHERE error_code IS NOT NULL)::bigint AS errors,
           avg(latency_us)::double precision AS avg_latency_us
    FROM usage_logs GROUP BY 1, 2, 3, 4`
})
