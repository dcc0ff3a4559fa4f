import { Schema } from "effect"
import { SERVICES } from "./envelope.ts"

/** One `usage_logs` row: the 18 fields of the spec, `created_at` as epoch ms in memory. */
export const UsageRow = Schema.Struct({
  id: Schema.String,
  request_id: Schema.String,
  api_key_id: Schema.NullOr(Schema.String),
  service: Schema.Literals(SERVICES),
  protocol: Schema.Literals(["http", "udp", "ws"]),
  endpoint: Schema.String,
  asset: Schema.NullOr(Schema.String),
  quote: Schema.NullOr(Schema.String),
  source: Schema.NullOr(Schema.String),
  price: Schema.NullOr(Schema.Number),
  status_code: Schema.Int,
  error_code: Schema.NullOr(Schema.String),
  latency_us: Schema.Int,
  client_ip: Schema.String,
  node: Schema.String,
  region: Schema.String,
  bytes_out: Schema.Int,
  created_at: Schema.Number
})
export type UsageRow = typeof UsageRow.Type

const USAGE_SERVICES: ReadonlySet<string> = new Set(UsageRow.fields.service.literals)
const USAGE_PROTOCOLS: ReadonlySet<string> = new Set(UsageRow.fields.protocol.literals)
/** A usage row's service, as decoders of rows from elsewhere (queue bodies, chunks) check it. */
export const isUsageService = (s: string): s is UsageRow["service"] => USAGE_SERVICES.has(s)
export const isUsageProtocol = (s: string): s is UsageRow["protocol"] => USAGE_PROTOCOLS.has(s)

export const USAGE_COLUMNS = [
  "id", "request_id", "api_key_id", "service", "protocol", "endpoint", "asset", "quote", "source", "price",
  "status_code", "error_code", "latency_us", "client_ip", "node", "region", "bytes_out", "created_at"
] as const satisfies ReadonlyArray<keyof UsageRow>
