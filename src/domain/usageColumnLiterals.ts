/**
 * The parameters of the usage insert: one PostgreSQL array literal per column, in `USAGE_COLUMNS`
 * order, which the database expands with `unnest` (see pgArrayLiteral.ts).
 */
import { numeralElement, pgArrayLiteral, quotedElement } from "./pgArrayLiteral.ts"
import { USAGE_COLUMNS, type UsageRow } from "./usage.ts"
import { requestIdOf } from "./requestId.ts"
import { checkChunk, ID_RANDOM_BYTES, NULL_REF, STRING_FIELDS, type UsageChunk } from "./usageChunk.ts"
import { uuidv7 } from "./uuidv7.ts"

type Column = (typeof USAGE_COLUMNS)[number]
type StringField = (typeof STRING_FIELDS)[number]

export const usageRowsColumnLiterals = (rows: ReadonlyArray<UsageRow>): Array<string> =>
  USAGE_COLUMNS.map((column) => pgArrayLiteral(rows.map((r) => r[column])))

/** Each column's element for row `r` of a chunk, as `pgArrayLiteral` writes it for that row's field. */
const elementsOf = (c: UsageChunk): Record<Column, (r: number) => string> => {
  // A chunk keeps each distinct string once; quote each once too, not once per row.
  const quoted = c.strings.map(quotedElement)
  const refOf = (field: StringField) => {
    const offset = STRING_FIELDS.indexOf(field)
    return (r: number) => c.refs[r * STRING_FIELDS.length + offset]!
  }
  const quotedAt = (field: StringField) => {
    const refAt = refOf(field)
    return (r: number) => {
      const i = refAt(r)
      return i === NULL_REF ? "NULL" : quoted[i]!
    }
  }
  const requestRefAt = refOf("request_id")
  const node = quotedElement(c.node)
  const region = quotedElement(c.region)
  return {
    id: (r) => `"${uuidv7(c.createdAt[r]!, c.random, r * ID_RANDOM_BYTES)}"`,
    request_id: (r) => {
      const i = requestRefAt(r)
      return i === NULL_REF ? quotedElement(requestIdOf(c.requestTag, c.requestSeq[r]!)) : quoted[i]!
    },
    api_key_id: quotedAt("api_key_id"),
    service: quotedAt("service"),
    protocol: quotedAt("protocol"),
    endpoint: quotedAt("endpoint"),
    asset: quotedAt("asset"),
    quote: quotedAt("quote"),
    source: quotedAt("source"),
    price: (r) => (Number.isNaN(c.price[r]!) ? "NULL" : numeralElement(c.price[r]!)),
    status_code: (r) => numeralElement(c.statusCode[r]!),
    error_code: quotedAt("error_code"),
    latency_us: (r) => numeralElement(c.latencyUs[r]!),
    client_ip: quotedAt("client_ip"),
    node: () => node,
    region: () => region,
    bytes_out: (r) => numeralElement(c.bytesOut[r]!),
    created_at: (r) => numeralElement(c.createdAt[r]!)
  }
}

/**
 * The literals of the chunks' rows, written from the columns without making the rows: the same
 * text as `usageRowsColumnLiterals(chunks.flatMap(rowsOfChunk))` for about 40% less CPU (no
 * 18-field object per row, each distinct string quoted once; 1.3–1.9 against 2.4–3.8 µs a row,
 * measured 2026-12-03). Throws UsageChunkError for a chunk that does not hold together.
 */
export const usageChunksColumnLiterals = (chunks: ReadonlyArray<UsageChunk>): Array<string> => {
  for (const c of chunks) checkChunk(c)
  const elements = chunks.map(elementsOf)
  return USAGE_COLUMNS.map((column) => {
    let out = "{"
    for (let k = 0; k < chunks.length; k++) {
      const element = elements[k]![column]
      for (let r = 0; r < chunks[k]!.rows; r++) out += out.length === 1 ? element(r) : "," + element(r)
    }
    return out + "}"
  })
}
