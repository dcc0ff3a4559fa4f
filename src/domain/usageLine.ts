import { messageOf } from "./errorMessage.ts"
import { isUsageProtocol, isUsageService, USAGE_COLUMNS, type UsageRow } from "./usage.ts"

/**
 * Usage rows as positional JSON arrays in `USAGE_COLUMNS` order (no keys to repeat), for queue
 * messages: a columnar batch names its columns once (`encodeColumnarBatch`). The LPO sends its
 * chunks as bytes (usageChunk.ts); this form carries a chunk too large for one message, split.
 */
const encodeUsageLine = (r: UsageRow): string =>
  JSON.stringify([
    r.id, r.request_id, r.api_key_id, r.service, r.protocol, r.endpoint, r.asset, r.quote, r.source, r.price,
    r.status_code, r.error_code, r.latency_us, r.client_ip, r.node, r.region, r.bytes_out, r.created_at
  ])

export class UsageLineError extends Error {
  override readonly name = "UsageLineError"
}

const str = (v: unknown, column: string): string => {
  if (typeof v !== "string") throw new UsageLineError(`${column}: expected a string`)
  return v
}
const strOrNull = (v: unknown, column: string): string | null => v === null ? null : str(v, column)
const int = (v: unknown, column: string): number => {
  if (typeof v !== "number" || !Number.isInteger(v)) throw new UsageLineError(`${column}: expected an integer`)
  return v
}
const num = (v: unknown, column: string): number => {
  if (typeof v !== "number") throw new UsageLineError(`${column}: expected a number`)
  return v
}

const rowOf = (v: unknown): UsageRow => {
  if (!Array.isArray(v) || v.length !== USAGE_COLUMNS.length) throw new UsageLineError(`a row must be an array of ${USAGE_COLUMNS.length} values`)
  const service = str(v[3], "service")
  const protocol = str(v[4], "protocol")
  if (!isUsageService(service)) throw new UsageLineError(`service: unknown ${service.slice(0, 20)}`)
  if (!isUsageProtocol(protocol)) throw new UsageLineError(`protocol: unknown ${protocol.slice(0, 20)}`)
  return {
    id: str(v[0], "id"),
    request_id: str(v[1], "request_id"),
    api_key_id: strOrNull(v[2], "api_key_id"),
    service,
    protocol,
    endpoint: str(v[5], "endpoint"),
    asset: strOrNull(v[6], "asset"),
    quote: strOrNull(v[7], "quote"),
    source: strOrNull(v[8], "source"),
    price: v[9] === null ? null : num(v[9], "price"),
    status_code: int(v[10], "status_code"),
    error_code: strOrNull(v[11], "error_code"),
    latency_us: int(v[12], "latency_us"),
    client_ip: str(v[13], "client_ip"),
    node: str(v[14], "node"),
    region: str(v[15], "region"),
    bytes_out: int(v[16], "bytes_out"),
    created_at: num(v[17], "created_at")
  }
}

const COLUMNS_JSON = JSON.stringify(USAGE_COLUMNS)
const COLUMNAR_PREFIX = `{"columns":${COLUMNS_JSON},"rows":[`

/**
 * A batch that names its columns once: `{"columns":[…],"rows":[[…],…]}`. Stringifying arrays costs
 * about a third of stringifying the same rows as objects, and the text to compress is shorter.
 */
export const encodeColumnarBatch = (rows: ReadonlyArray<UsageRow>): string => {
  let out = COLUMNAR_PREFIX
  for (let i = 0; i < rows.length; i++) out += (i === 0 ? "" : ",") + encodeUsageLine(rows[i]!)
  return out + "]}"
}

export const isColumnarBatch = (json: string): boolean => json.startsWith('{"columns":')

/** Back into rows; the columns must be exactly `USAGE_COLUMNS`, in order. Throws UsageLineError. */
export const decodeColumnarBatch = (json: string): ReadonlyArray<UsageRow> => {
  let parsed: unknown
  try {
    parsed = JSON.parse(json)
  } catch (e) {
    throw new UsageLineError(`batch is not JSON: ${messageOf(e)}`)
  }
  if (typeof parsed !== "object" || parsed === null || !("columns" in parsed) || !("rows" in parsed)) {
    throw new UsageLineError("a columnar batch has columns and rows")
  }
  if (JSON.stringify(parsed.columns) !== COLUMNS_JSON) throw new UsageLineError(`columns must be ${COLUMNS_JSON}`)
  if (!Array.isArray(parsed.rows)) throw new UsageLineError("rows must be a list")
  return parsed.rows.map(rowOf)
}
