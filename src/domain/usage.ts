import { gunzipSync, zstdDecompressSync } from "node:zlib"
import { Schema } from "effect"

/** One `usage_logs` row: the 18 fields of the spec, `created_at` as epoch ms in memory. */
export const UsageRow = Schema.Struct({
  id: Schema.String,
  request_id: Schema.String,
  api_key_id: Schema.NullOr(Schema.String),
  service: Schema.Literals(["LPO", "LRS", "WEBHOOK", "RECEIPT", "ADMIN"]),
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

export const USAGE_COLUMNS = [
  "id", "request_id", "api_key_id", "service", "protocol", "endpoint", "asset", "quote", "source", "price",
  "status_code", "error_code", "latency_us", "client_ip", "node", "region", "bytes_out", "created_at"
] as const satisfies ReadonlyArray<keyof UsageRow>

/** A batch as it travels through SQS or the on-disk spool. */
export const UsageBatch = Schema.Struct({ rows: Schema.Array(UsageRow) })
export const UsageBatchJson = Schema.fromJsonString(UsageBatch)

/**
 * Usage batches as queue message bodies. A body is the batch's JSON (`{"rows":[…]}`), either as it
 * is or compressed and base64-encoded: about a tenth of the size, and nothing for the SQS client
 * to escape. The LPO sends zstd (level 1: about half gzip's CPU for a smaller body); gzip bodies,
 * which earlier versions sent, are still read. Told apart by their first characters: JSON starts
 * with "{", base64 of a zstd frame with "KLUv", of gzip with "H4sI".
 */
export const ZSTD_BASE64_MAGIC = "KLUv"

export const decodeUsageMessage = (body: string): ReadonlyArray<UsageRow> => {
  const json = body.startsWith("{")
    ? body
    : (body.startsWith(ZSTD_BASE64_MAGIC) ? zstdDecompressSync : gunzipSync)(Buffer.from(body, "base64")).toString("utf8")
  return decodeBatchJson(json).rows
}
const decodeBatchJson = Schema.decodeUnknownSync(UsageBatchJson)
