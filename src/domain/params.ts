/**
 * Application parameters: the knobs operators turn at run time (`application_parameters`,
 * `app:config`, `/admin/params`). Defaults here are only the seed; the database is the source of truth.
 */
export interface ParamSpec {
  readonly type: "int" | "number" | "bool" | "string"
  readonly default: string
  readonly description: string
  /** Allowed values for string parameters. */
  readonly oneOf?: ReadonlyArray<string>
  readonly min?: number
}

export const PARAMS = {
  params_refresh_ms: { type: "int", default: "60000", min: 1000, description: "How often every node reloads parameters (Aurora → app:config → runtime)." },
  key_cache_refresh_ms: { type: "int", default: "30000", min: 1000, description: "How often every node reloads changed API keys from the database." },
  rate_reconcile_ms: { type: "int", default: "100", min: 10, description: "How often a node reconciles its rate-limit and quota consumption with Valkey." },
  governor_max_rps: { type: "int", default: "1000000", min: 1, description: "Cluster-wide request rate above which requests are shed with SYSTEM_BUSY." },
  usage_batch_size: { type: "int", default: "1000", min: 1, description: "Usage rows per database insert (or SQS batch)." },
  usage_flush_ms: { type: "int", default: "250", min: 10, description: "Longest a usage row waits in memory before it is written." },
  usage_buffer_max_rows: { type: "int", default: "200000", min: 1000, description: "Rows held in memory before further rows spill to the on-disk spool." },
  price_stale_ms: { type: "int", default: "10000", min: 100, description: "A source older than this is not fresh and is left out of consensus." },
  consensus_max_deviation_bps: { type: "number", default: "150", min: 0, description: "A source further than this from the median of the others is rejected as an outlier." },
  cache_price_flush_ms: { type: "int", default: "30000", min: 100, description: "How often prices are written to the shared Valkey tier." },
  stats_publish_ms: { type: "int", default: "5000", min: 500, description: "How often runtime counters are published to stats:<node>." },
  usage_retention_days: { type: "int", default: "93", min: 1, description: "Usage partitions older than this are dropped." },
  sync_row_days: { type: "int", default: "93", min: 1, description: "Days of usage rows tb sync keeps in Valkey (usage:<id> and its indexes); fewer saves Valkey memory, summaries keep all 93." },
  rest_fallback_enabled: { type: "bool", default: "true", description: "Query exchange REST tickers for an asset whose WebSocket sources are all stale." },
  max_connections: { type: "int", default: "10000", min: 1, description: "Open connections each HTTP listener accepts; past it a new connection is closed at once." },
  anonymous_rows_per_ip_per_s: { type: "int", default: "10", min: 0, description: "Usage rows written per client address per second for requests without a valid key; past it they are only counted." },
  webhook_disable_after_h: { type: "int", default: "24", min: 1, description: "A webhook whose every delivery attempt failed for this many hours is disabled (with the reason)." },
  stream_min_interval_ms: { type: "int", default: "100", min: 0, description: "Partner stream: at most one update per asset per connection this often (the newest price wins); 0 sends every change." },
  stream_max_connections_per_key: { type: "int", default: "10", min: 1, description: "Partner stream: open connections (WebSocket and SSE together) one API key may hold across the cluster (each node alone while Valkey is away)." },
  payment_link_listener: { type: "string", default: "", description: "Stripe Payment Link GET /checkout?plan=listener redirects to (empty: 404)." },
  payment_link_associate: { type: "string", default: "", description: "Stripe Payment Link GET /checkout?plan=associate redirects to (empty: 404)." },
  payment_link_partner: { type: "string", default: "", description: "Stripe Payment Link GET /checkout?plan=partner redirects to (empty: 404)." },
  payment_link_lrs_addon: { type: "string", default: "", description: "Stripe Payment Link GET /checkout?plan=lrs-addon redirects to (empty: 404)." },
  payment_link_donation: { type: "string", default: "", description: "Stripe Payment Link GET /checkout?plan=donation redirects to (empty: 404)." },
  system_mode: { type: "string", default: "normal", oneOf: ["normal", "maintenance"], description: "maintenance answers price queries with MAINTENANCE." }
} as const satisfies Record<string, ParamSpec>

export type ParamName = keyof typeof PARAMS
export const PARAM_NAMES = Object.keys(PARAMS) as ReadonlyArray<ParamName>
export const isParamName = (s: string): s is ParamName => Object.hasOwn(PARAMS, s)

export type ParamValues = { readonly [K in ParamName]: string }

export const DEFAULT_PARAMS: ParamValues = Object.fromEntries(
  PARAM_NAMES.map((n) => [n, PARAMS[n].default])
) as ParamValues

/** `base` with the valid entries of `record` applied; unknown names and invalid values are ignored. */
export const mergeParams = (base: ParamValues, record: Readonly<Record<string, string>>): ParamValues => {
  const next: Record<string, string> = { ...base }
  for (const [k, v] of Object.entries(record)) if (isParamName(k) && validateParam(k, v) === undefined) next[k] = v
  return next as ParamValues
}

/** Every parameter with its value and spec, for `/admin/params`. */
export const paramRows = (values: ParamValues) =>
  PARAM_NAMES.map((name) => ({ name, value: values[name], type: PARAMS[name].type, description: PARAMS[name].description }))

/** Named profiles: a set of values applied together (`POST /admin/params {"profile": "high_load"}`). */
export const PARAM_PROFILES: Readonly<Record<string, Partial<ParamValues>>> = {
  default: DEFAULT_PARAMS,
  high_load: { usage_batch_size: "2000", usage_flush_ms: "500", rate_reconcile_ms: "200", stats_publish_ms: "10000" },
  low_latency_billing: { usage_batch_size: "200", usage_flush_ms: "100", rate_reconcile_ms: "50" },
  incident: { price_stale_ms: "30000", consensus_max_deviation_bps: "300", rest_fallback_enabled: "false" }
}

/** Validate one value against its spec; returns an error sentence or undefined. */
export const validateParam = (name: string, value: string): string | undefined => {
  if (!isParamName(name)) return `unknown parameter ${name}`
  const spec: ParamSpec = PARAMS[name]
  switch (spec.type) {
    case "int":
    case "number": {
      const n = Number(value)
      if (value.trim() === "" || !Number.isFinite(n)) return `${name} must be a number`
      if (spec.type === "int" && !Number.isInteger(n)) return `${name} must be an integer`
      if (spec.min !== undefined && n < spec.min) return `${name} must be >= ${spec.min}`
      return undefined
    }
    case "bool":
      return value === "true" || value === "false" ? undefined : `${name} must be true or false`
    case "string":
      return spec.oneOf !== undefined && !spec.oneOf.includes(value) ? `${name} must be one of ${spec.oneOf.join(", ")}` : undefined
  }
}
