/**
 * The parameters of the usage insert, one per column in `USAGE_COLUMNS` order. A column is sent
 * as a PostgreSQL array literal, which the database expands with `unnest` (see pgArrayLiteral.ts),
 * unless every row of the batch holds the same value: then it is sent once, as that value.
 *
 * Why: reading the array literals is most of what the insert costs the embedded database, and many
 * columns are one value for a whole batch (node, region and service always; endpoint, status and
 * error code most of the time; key, client, asset, quote and source when one client dominates).
 * Figures: bench/README.md, "Measurements behind design choices".
 */
import { arrayElement, numeralElement, quotedElement, textParameter } from "./pgArrayLiteral.ts"
import { USAGE_COLUMNS, type UsageRow } from "./usage.ts"
import { requestIdOf } from "./requestId.ts"
import { checkChunk, ID_RANDOM_BYTES, NULL_REF, STRING_FIELDS, type UsageChunk } from "./usageChunk.ts"
import { uuidv7 } from "./uuidv7.ts"

type Column = (typeof USAGE_COLUMNS)[number]
type StringField = (typeof STRING_FIELDS)[number]

export interface UsageInsertParams {
  /** Bit `i` set: every row holds one value in column `USAGE_COLUMNS[i]`, and `values[i]` is that value. */
  readonly uniformMask: number
  /** Per column: an array literal, or (uniform) the value's text, null for SQL NULL. */
  readonly values: ReadonlyArray<string | null>
}

/** The id is always an array, even when a batch holds one row: its length is the batch's row count. */
const ID_COLUMN = USAGE_COLUMNS.indexOf("id")

export const isUniform = (params: UsageInsertParams, column: number): boolean => (params.uniformMask & (1 << column)) !== 0

const scalarOf = (v: string | number | null): string | null => (v === null ? null : typeof v === "number" ? numeralElement(v) : textParameter(v))

/** Uniform means the same element text in every row, as the chunks' parameters below decide it. */
export const usageRowsInsertParams = (rows: ReadonlyArray<UsageRow>): UsageInsertParams => {
  let uniformMask = 0
  const values = USAGE_COLUMNS.map((column, i) => {
    const elements = rows.map((r) => arrayElement(r[column]))
    if (i !== ID_COLUMN && elements.length > 0 && elements.every((e) => e === elements[0])) {
      uniformMask |= 1 << i
      return scalarOf(rows[0]![column])
    }
    return `{${elements.join(",")}}`
  })
  return { uniformMask, values }
}

/** A column of a chunk: row `r`'s array element, and its text as a parameter of its own (null: NULL). */
interface ChunkColumn {
  readonly element: (r: number) => string
  readonly scalar: (r: number) => string | null
}

const numeric = (values: Float64Array | Int32Array, nullIfNaN: boolean): ChunkColumn => ({
  element: (r) => (nullIfNaN && Number.isNaN(values[r]!) ? "NULL" : numeralElement(values[r]!)),
  scalar: (r) => (nullIfNaN && Number.isNaN(values[r]!) ? null : numeralElement(values[r]!))
})

const constant = (value: string): ChunkColumn => {
  const element = quotedElement(value)
  const scalar = textParameter(value)
  return { element: () => element, scalar: () => scalar }
}

const columnsOf = (c: UsageChunk): Record<Column, ChunkColumn> => {
  // A chunk keeps each distinct string once; quote each once too, not once per row.
  const quoted = c.strings.map(quotedElement)
  const refOf = (field: StringField) => {
    const offset = STRING_FIELDS.indexOf(field)
    return (r: number) => c.refs[r * STRING_FIELDS.length + offset]!
  }
  const stringAt = (field: StringField): ChunkColumn => {
    const refAt = refOf(field)
    return {
      element: (r) => {
        const i = refAt(r)
        return i === NULL_REF ? "NULL" : quoted[i]!
      },
      scalar: (r) => {
        const i = refAt(r)
        return i === NULL_REF ? null : textParameter(c.strings[i]!)
      }
    }
  }
  const requestRefAt = refOf("request_id")
  const requestId = (r: number) => {
    const i = requestRefAt(r)
    return i === NULL_REF ? requestIdOf(c.requestTag, c.requestSeq[r]!) : c.strings[i]!
  }
  return {
    id: { element: (r) => `"${uuidv7(c.createdAt[r]!, c.random, r * ID_RANDOM_BYTES)}"`, scalar: (r) => uuidv7(c.createdAt[r]!, c.random, r * ID_RANDOM_BYTES) },
    request_id: {
      element: (r) => {
        const i = requestRefAt(r)
        return i === NULL_REF ? quotedElement(requestId(r)) : quoted[i]!
      },
      scalar: (r) => textParameter(requestId(r))
    },
    api_key_id: stringAt("api_key_id"),
    service: stringAt("service"),
    protocol: stringAt("protocol"),
    endpoint: stringAt("endpoint"),
    asset: stringAt("asset"),
    quote: stringAt("quote"),
    source: stringAt("source"),
    price: numeric(c.price, true),
    status_code: numeric(c.statusCode, false),
    error_code: stringAt("error_code"),
    latency_us: numeric(c.latencyUs, false),
    client_ip: stringAt("client_ip"),
    node: constant(c.node),
    region: constant(c.region),
    bytes_out: numeric(c.bytesOut, false),
    created_at: numeric(c.createdAt, false)
  }
}

/**
 * The parameters of the chunks' rows, written from the columns without making the rows: the same
 * as `usageRowsInsertParams(chunks.flatMap(rowsOfChunk))` for less CPU (no 18-field object per
 * row, each distinct string quoted once). Throws UsageChunkError for a chunk that does not hold together.
 */
export const usageChunksInsertParams = (chunks: ReadonlyArray<UsageChunk>): UsageInsertParams => {
  for (const c of chunks) checkChunk(c)
  const columns = chunks.map(columnsOf)
  let uniformMask = 0
  const values = USAGE_COLUMNS.map((column, i) => {
    let out = "{"
    // Elements of one value are the same text: a string compare tells a uniform column.
    let first: string | undefined
    let uniform = i !== ID_COLUMN
    let at: { readonly k: number; readonly r: number } | undefined
    for (let k = 0; k < chunks.length; k++) {
      const element = columns[k]![column].element
      for (let r = 0; r < chunks[k]!.rows; r++) {
        const e = element(r)
        if (first === undefined) {
          first = e
          at = { k, r }
          out += e
        } else {
          if (uniform && e !== first) uniform = false
          out += "," + e
        }
      }
    }
    if (uniform && at !== undefined) {
      uniformMask |= 1 << i
      return columns[at.k]![column].scalar(at.r)
    }
    return out + "}"
  })
  return { uniformMask, values }
}
