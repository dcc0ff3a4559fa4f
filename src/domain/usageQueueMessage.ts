/**
 * The usage-log queue message: what the LPO's usage thread sends to SQS and the queued writer
 * reads (docs/architecture.md, "Usage queue messages"). One JSON object per message body:
 *
 *   {"type":"usage_log","v":1,"count":2,"columns":{
 *     "id":["0193…","0193…"], "request_id":["9f3a61c2-lfls","9f3a61c2-lflt"], "api_key_id":"0193a1b2-…",
 *     "service":"LPO", "protocol":["http","udp"], …, "price":[97001.5,null], …, "created_at":[1795000000000,1795000000001]}}
 *
 * - `count`: the rows in the message, at least 1;
 * - `columns`: all 18 columns of `usage_logs` (`USAGE_COLUMNS`), each either an array of `count`
 *   values (row i's value at index i) or one value, not an array, that every row has. Values are
 *   strings, numbers or `null` as `UsageRow` says; `created_at` is epoch ms.
 *
 * Plain JSON, column by column: a column that holds one value in the whole message (the node, the
 * key, the asset…) is written once, and a column of numbers is one `join` of its values.
 * Measured against JSON objects, row arrays, and gzip or zstd of them in bench/usageMessage.ts
 * (figures in bench/README.md). `UsageLogMessage` is the Schema; the encoders below write what it
 * encodes by hand, for speed on the usage thread, and the tests hold them to it.
 *
 * SQS accepts only some characters in a body (#x9 #xA #xD, #x20–#xD7FF, #xE000–#xFFFD,
 * #x10000–#x10FFFF). `JSON.stringify` escapes control characters and lone surrogates; U+FFFE and
 * U+FFFF, which a client could put into a logged string, are escaped here too.
 */
import { Result, Schema, SchemaTransformation } from "effect"
import { messageOf } from "./errorMessage.ts"
import { requestIdOf } from "./requestId.ts"
import { USAGE_COLUMNS, UsageRow } from "./usage.ts"
import { checkChunk, ID_RANDOM_BYTES, NULL_REF, STRING_FIELDS, type UsageChunk } from "./usageChunk.ts"
import { uuidv7 } from "./uuidv7.ts"

export const USAGE_LOG_TYPE = "usage_log"
export const USAGE_LOG_VERSION = 1

type Column = (typeof USAGE_COLUMNS)[number]

/** A column on the wire: one value per row, or the one value every row has (no column's value is an array). */
const column = <S extends Schema.Top>(value: S) => Schema.Union([Schema.Array(value), value])

const f = UsageRow.fields
const UsageLogColumns = Schema.Struct({
  id: column(f.id), request_id: column(f.request_id), api_key_id: column(f.api_key_id), service: column(f.service),
  protocol: column(f.protocol), endpoint: column(f.endpoint), asset: column(f.asset), quote: column(f.quote), source: column(f.source),
  price: column(f.price), status_code: column(f.status_code), error_code: column(f.error_code), latency_us: column(f.latency_us),
  client_ip: column(f.client_ip), node: column(f.node), region: column(f.region), bytes_out: column(f.bytes_out), created_at: column(f.created_at)
})
type UsageLogColumns = typeof UsageLogColumns.Type

/** Every array column holds exactly `count` values. */
const countsMatch = Schema.makeFilter((m: { readonly count: number; readonly columns: UsageLogColumns }) => {
  for (const name of USAGE_COLUMNS) {
    const values: unknown = m.columns[name]
    if (Array.isArray(values) && values.length !== m.count) return `column ${name} holds ${values.length} values, count is ${m.count}`
  }
  return undefined
})

/** The message as it is on the wire (after `JSON.parse`). */
const UsageLogWire = Schema.Struct({
  type: Schema.Literal(USAGE_LOG_TYPE),
  v: Schema.Literal(USAGE_LOG_VERSION),
  count: Schema.Int.pipe(Schema.check(Schema.makeFilter((n: number) => n >= 1 || "a usage_log message holds at least one row"))),
  columns: UsageLogColumns
}).pipe(Schema.check(countsMatch))
type UsageLogWire = typeof UsageLogWire.Type

const isRowObject = (u: unknown): u is UsageRow => typeof u === "object" && u !== null && !Array.isArray(u)
/** A row made from checked columns: its values were checked on the wire side, so it is not checked again. */
const CheckedRow = Schema.declare(isRowObject)

const UsageLogRows = Schema.Struct({
  type: Schema.Literal(USAGE_LOG_TYPE),
  v: Schema.Literal(USAGE_LOG_VERSION),
  rows: Schema.NonEmptyArray(CheckedRow)
})
type UsageLogRows = typeof UsageLogRows.Type

const valueAt = <A>(values: A | ReadonlyArray<A>, i: number): A => (Array.isArray(values) ? (values as ReadonlyArray<A>)[i]! : (values as A))

const rowsOfWire = (m: UsageLogWire): UsageLogRows => {
  const c = m.columns
  const rows: Array<UsageRow> = []
  for (let i = 0; i < m.count; i++) {
    rows.push({
      id: valueAt(c.id, i), request_id: valueAt(c.request_id, i), api_key_id: valueAt(c.api_key_id, i), service: valueAt(c.service, i),
      protocol: valueAt(c.protocol, i), endpoint: valueAt(c.endpoint, i), asset: valueAt(c.asset, i), quote: valueAt(c.quote, i),
      source: valueAt(c.source, i), price: valueAt(c.price, i), status_code: valueAt(c.status_code, i), error_code: valueAt(c.error_code, i),
      latency_us: valueAt(c.latency_us, i), client_ip: valueAt(c.client_ip, i), node: valueAt(c.node, i), region: valueAt(c.region, i),
      bytes_out: valueAt(c.bytes_out, i), created_at: valueAt(c.created_at, i)
    })
  }
  return { type: m.type, v: m.v, rows: rows as unknown as UsageLogRows["rows"] }
}

/** One value when every row has it, else the array. */
const collapse = <A>(values: ReadonlyArray<A>): A | ReadonlyArray<A> => (values.every((v) => v === values[0]) ? values[0]! : values)

const wireOfRows = (m: UsageLogRows): UsageLogWire => {
  const columnOf = <K extends Column>(name: K) => collapse(m.rows.map((r) => r[name]))
  return {
    type: m.type, v: m.v, count: m.rows.length,
    columns: {
      id: columnOf("id"), request_id: columnOf("request_id"), api_key_id: columnOf("api_key_id"), service: columnOf("service"),
      protocol: columnOf("protocol"), endpoint: columnOf("endpoint"), asset: columnOf("asset"), quote: columnOf("quote"),
      source: columnOf("source"), price: columnOf("price"), status_code: columnOf("status_code"), error_code: columnOf("error_code"),
      latency_us: columnOf("latency_us"), client_ip: columnOf("client_ip"), node: columnOf("node"), region: columnOf("region"),
      bytes_out: columnOf("bytes_out"), created_at: columnOf("created_at")
    }
  }
}

/**
 * The Schema of a `usage_log` message body (after `JSON.parse`). Decoded, it is the message's
 * rows (`UsageRow`s); encoded, the columns of the wire form above (columns with one value in the
 * whole message written once).
 */
export const UsageLogMessage = UsageLogWire.pipe(
  Schema.decodeTo(UsageLogRows, SchemaTransformation.transform({ decode: rowsOfWire, encode: wireOfRows }))
)
export type UsageLogMessage = typeof UsageLogMessage.Type

/** What the queued writer makes of a message body: rows to insert, or a poison message and why. */
export type QueueMessage =
  | { readonly _tag: "UsageLog"; readonly rows: ReadonlyArray<UsageRow> }
  | { readonly _tag: "Poison"; readonly reason: string }

const poison = (reason: string): QueueMessage => ({ _tag: "Poison", reason: reason.replace(/\s+/g, " ").trim().slice(0, 300) })

const decodeUsageLog = Schema.decodeUnknownResult(UsageLogMessage)

const shortJson = (v: unknown): string => {
  try {
    return JSON.stringify(v)?.slice(0, 40) ?? typeof v
  } catch {
    return typeof v
  }
}

/**
 * A queue message body, routed on `type` and `v`, decoded with the Schema. Never throws: a body
 * that is not JSON, not an object, of an unknown type or version, with no rows, or with a value
 * that does not decode is `Poison`, with a one-line reason.
 */
export const decodeQueueMessage = (body: string): QueueMessage => {
  let parsed: unknown
  try {
    parsed = JSON.parse(body)
  } catch (e) {
    return poison(`body is not JSON: ${messageOf(e)}`)
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return poison(`body is not a JSON object: ${shortJson(parsed)}`)
  const { type, v, count } = parsed as Record<string, unknown>
  if (type !== USAGE_LOG_TYPE) return poison(`unknown message type ${shortJson(type)}`)
  if (v !== USAGE_LOG_VERSION) return poison(`unknown ${USAGE_LOG_TYPE} version ${shortJson(v)} (this reader knows ${USAGE_LOG_VERSION})`)
  if (count === 0) return poison(`${USAGE_LOG_TYPE} message holds no rows (count 0)`)
  const decoded = decodeUsageLog(parsed)
  return Result.isSuccess(decoded)
    ? { _tag: "UsageLog", rows: decoded.success.rows }
    : poison(`${USAGE_LOG_TYPE} message does not decode: ${decoded.failure.message}`)
}

// ---------------------------------------------------------------------------------------------
// Encoding: bodies `UsageLogMessage` decodes, each at most `maxBytes`.

const SQS_UNSAFE = /[\uFFFE\uFFFF]/g
/** JSON text with the characters SQS refuses (see the top of the file) escaped. */
const sqsSafe = (json: string): string =>
  json.includes("\uFFFE") || json.includes("\uFFFF") ? json.replace(SQS_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16)}`) : json

/** A column's values for a batch: row objects' values, or a chunk's numbers as they are. */
type ColumnValues = ReadonlyArray<unknown> | Float64Array<ArrayBuffer> | Int32Array<ArrayBuffer>
/** The rows of a batch column by column, each as long as the batch. */
type ColumnArrays = { readonly [K in Column]: ColumnValues }

/**
 * The JSON of a column of finite numbers and nulls, by `join` (3–4× faster than `JSON.stringify`
 * of the same array: it uses V8's number-to-string cache, and created_at repeats); the same text.
 * Undefined when a value is anything else.
 */
const numbersText = (values: ColumnValues): string | undefined => {
  let nulls = false
  for (let i = 0; i < values.length; i++) {
    const v = values[i]
    if (v === null) nulls = true
    else if (typeof v !== "number" || !Number.isFinite(v)) return undefined
  }
  if (!nulls) return `[${values.join(",")}]`
  let text = "["
  for (let i = 0; i < values.length; i++) text += `${i === 0 ? "" : ","}${values[i] === null ? "null" : String(values[i])}`
  return `${text}]`
}

const columnText = (values: ColumnValues, from: number, to: number): string => {
  const first = values[from]
  let uniform = true
  for (let i = from + 1; i < to && uniform; i++) uniform = values[i] === first
  if (uniform) return sqsSafe(JSON.stringify(first))
  const part = from === 0 && to === values.length ? values : values.slice(from, to)
  return numbersText(part) ?? sqsSafe(JSON.stringify(Array.isArray(part) ? part : Array.from(part)))
}

const bodyText = (columns: ColumnArrays, from: number, to: number): string => {
  let text = `{"type":"${USAGE_LOG_TYPE}","v":${USAGE_LOG_VERSION},"count":${to - from},"columns":{`
  for (let c = 0; c < USAGE_COLUMNS.length; c++) {
    const name = USAGE_COLUMNS[c]!
    text += `${c === 0 ? "" : ","}"${name}":${columnText(columns[name], from, to)}`
  }
  return text + "}}"
}

/**
 * Rows `from`–`to` as bodies of at most `maxBytes`: the whole range if it fits, else split into
 * as many even parts as its size asks for, each split again if need be. A single row larger than
 * `maxBytes` goes alone, for the caller to see.
 */
const bodiesOf = (columns: ColumnArrays, from: number, to: number, maxBytes: number, out: Array<string>): void => {
  const text = bodyText(columns, from, to)
  const bytes = Buffer.byteLength(text, "utf8")
  if (bytes <= maxBytes || to - from === 1) {
    out.push(text)
    return
  }
  const parts = Math.min(to - from, Math.max(2, Math.ceil((bytes / maxBytes) * 1.1)))
  for (let p = 0; p < parts; p++) {
    const a = from + Math.floor(((to - from) * p) / parts)
    const b = from + Math.floor(((to - from) * (p + 1)) / parts)
    if (b > a) bodiesOf(columns, a, b, maxBytes, out)
  }
}

const encodeColumns = (columns: ColumnArrays, rows: number, maxBytes: number): ReadonlyArray<string> => {
  const out: Array<string> = []
  if (rows > 0) bodiesOf(columns, 0, rows, maxBytes, out)
  return out
}

/** Rows as `usage_log` message bodies, each at most `maxBytes` (UTF-8) unless it holds a single row larger than that. */
export const encodeUsageLogMessages = (rows: ReadonlyArray<UsageRow>, maxBytes: number): ReadonlyArray<string> => {
  const columnOf = <K extends Column>(name: K): ReadonlyArray<UsageRow[K]> => rows.map((r) => r[name])
  const columns: ColumnArrays = {
    id: columnOf("id"), request_id: columnOf("request_id"), api_key_id: columnOf("api_key_id"), service: columnOf("service"),
    protocol: columnOf("protocol"), endpoint: columnOf("endpoint"), asset: columnOf("asset"), quote: columnOf("quote"),
    source: columnOf("source"), price: columnOf("price"), status_code: columnOf("status_code"), error_code: columnOf("error_code"),
    latency_us: columnOf("latency_us"), client_ip: columnOf("client_ip"), node: columnOf("node"), region: columnOf("region"),
    bytes_out: columnOf("bytes_out"), created_at: columnOf("created_at")
  }
  return encodeColumns(columns, rows.length, maxBytes)
}

const HEX_VARIANT = "89ab"
const MAX_UUID_MS = 2 ** 48

/**
 * A chunk's row ids, as `uuidv7` makes them, from one hex conversion of the chunk's random bytes
 * and one of each distinct millisecond: the same strings for a fraction of the work.
 */
const idsOfChunk = (c: UsageChunk, out: Array<string>): void => {
  const hex = Buffer.from(c.random.buffer, c.random.byteOffset, c.rows * ID_RANDOM_BYTES).toString("hex")
  let lastMs = -1
  let prefix = ""
  for (let r = 0; r < c.rows; r++) {
    const ms = Math.floor(c.createdAt[r]!)
    if (!(ms >= 0 && ms < MAX_UUID_MS)) {
      out.push(uuidv7(c.createdAt[r]!, c.random, r * ID_RANDOM_BYTES))
      continue
    }
    if (ms !== lastMs) {
      const time = ms.toString(16).padStart(12, "0")
      prefix = `${time.slice(0, 8)}-${time.slice(8)}-7`
      lastMs = ms
    }
    const h = r * ID_RANDOM_BYTES * 2
    out.push(`${prefix}${hex.slice(h + 1, h + 4)}-${HEX_VARIANT[(c.random[r * ID_RANDOM_BYTES + 2]! >> 4) & 3]}${hex.slice(h + 5, h + 8)}-${hex.slice(h + 8, h + 20)}`)
  }
}

const REFS = STRING_FIELDS.length
const R_REQUEST = STRING_FIELDS.indexOf("request_id")

/**
 * The serving thread's chunks as `usage_log` bodies: what
 * `encodeUsageLogMessages(chunks.flatMap(rowsOfChunk), maxBytes)` writes, made from the columns
 * without row objects. Throws UsageChunkError for a chunk that does not hold together (as
 * `rowsOfChunk`).
 */
export const encodeUsageLogMessagesOfChunks = (chunks: ReadonlyArray<UsageChunk>, maxBytes: number): ReadonlyArray<string> => {
  for (const c of chunks) checkChunk(c)
  const rows = chunks.reduce((n, c) => n + c.rows, 0)
  const id: Array<string> = []
  const stringColumns = STRING_FIELDS.map(() => Array.from<string | null>({ length: rows }))
  const price = Array.from<number | null>({ length: rows })
  const node = Array.from<string>({ length: rows })
  const region = Array.from<string>({ length: rows })
  const statusCode = new Int32Array(rows)
  const latencyUs = new Int32Array(rows)
  const bytesOut = new Int32Array(rows)
  const createdAt = new Float64Array(rows)
  let at = 0
  for (const c of chunks) {
    idsOfChunk(c, id)
    const { refs } = c
    for (let field = 0; field < REFS; field++) {
      const out = stringColumns[field]!
      // A field often holds one string in the whole chunk (the key, the asset, no error): filled at once.
      const first = refs[field]!
      let uniform = first !== NULL_REF || field !== R_REQUEST
      for (let r = 1; r < c.rows && uniform; r++) uniform = refs[r * REFS + field] === first
      if (uniform) {
        out.fill(first === NULL_REF ? null : c.strings[first]!, at, at + c.rows)
        continue
      }
      for (let r = 0; r < c.rows; r++) {
        const ref = refs[r * REFS + field]!
        out[at + r] = ref !== NULL_REF ? c.strings[ref]! : field === R_REQUEST ? requestIdOf(c.requestTag, c.requestSeq[r]!) : null
      }
    }
    for (let r = 0; r < c.rows; r++) {
      const p = c.price[r]!
      price[at + r] = Number.isNaN(p) ? null : p
    }
    node.fill(c.node, at, at + c.rows)
    region.fill(c.region, at, at + c.rows)
    statusCode.set(c.statusCode.subarray(0, c.rows), at)
    latencyUs.set(c.latencyUs.subarray(0, c.rows), at)
    bytesOut.set(c.bytesOut.subarray(0, c.rows), at)
    createdAt.set(c.createdAt.subarray(0, c.rows), at)
    at += c.rows
  }
  // In STRING_FIELDS order; the values are what checkChunk let through (service and protocol known).
  const [requestId, apiKeyId, service, protocol, endpoint, asset, quote, source, errorCode, clientIp] = stringColumns as unknown as [
    ReadonlyArray<string>, ReadonlyArray<string | null>, ReadonlyArray<UsageRow["service"]>, ReadonlyArray<UsageRow["protocol"]>,
    ReadonlyArray<string>, ReadonlyArray<string | null>, ReadonlyArray<string | null>, ReadonlyArray<string | null>, ReadonlyArray<string | null>,
    ReadonlyArray<string>
  ]
  const columns: ColumnArrays = {
    id, request_id: requestId, api_key_id: apiKeyId, service, protocol, endpoint, asset, quote, source, price, status_code: statusCode,
    error_code: errorCode, latency_us: latencyUs, client_ip: clientIp, node, region, bytes_out: bytesOut, created_at: createdAt
  }
  return encodeColumns(columns, rows, maxBytes)
}
