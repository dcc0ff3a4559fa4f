/**
 * Usage rows in columns, as the serving thread collects them: a served request writes a few
 * numbers into typed arrays and references to its strings (each distinct string of a chunk is
 * kept once), instead of building an 18-field row and its text. The usage thread (or the spool)
 * turns a chunk back into rows; that is where ids are formatted. A chunk is plain data, so
 * `postMessage` copies it whole (the serving thread keeps its own until the chunk is written).
 */
import type { ServiceName } from "./envelope.ts"
import { statusOf, type ResponseCode } from "./errorCodes.ts"
import { isUsageProtocol, isUsageService, type UsageRow } from "./usage.ts"
import { requestIdOf } from "./requestId.ts"
import { uuidv7 } from "./uuidv7.ts"

/** What the hot path knows of a served request: the row without its id. */
export interface UsageFacts {
  /** The request id answered to the client; undefined: `requestSeq` names it (see `requestIdOf`). */
  readonly requestId?: string | undefined
  /** With `requestId` undefined: this process's request number, formatted by the chunk's `requestTag`. */
  readonly requestSeq?: number | undefined
  readonly apiKeyId: string | undefined
  readonly service: ServiceName
  readonly protocol: UsageRow["protocol"]
  readonly endpoint: string
  readonly asset?: string | undefined
  readonly quote?: string | undefined
  readonly source?: string | undefined
  readonly price?: number | undefined
  readonly code: ResponseCode
  /** HTTP status when it is not the code's own (admin answers). */
  readonly status?: number | undefined
  readonly latencyUs: number
  readonly clientIp: string
  readonly bytesOut: number
  readonly createdAt: number
}

/** Bytes of randomness in a UUIDv7 id (its 74 random bits, rounded up). */
export const ID_RANDOM_BYTES = 10

/** The string fields of a row, in the order of a row's refs. */
export const STRING_FIELDS = ["request_id", "api_key_id", "service", "protocol", "endpoint", "asset", "quote", "source", "error_code", "client_ip"] as const
const REFS = STRING_FIELDS.length
const [R_REQUEST, R_KEY, R_SERVICE, R_PROTOCOL, R_ENDPOINT, R_ASSET, R_QUOTE, R_SOURCE, R_ERROR, R_IP] = STRING_FIELDS.map((_, i) => i) as [
  number, number, number, number, number, number, number, number, number, number
]
/** A ref to no string: a null field (for request_id: the id is made from `requestSeq`). */
export const NULL_REF = -1
const INT32_MAX = 2_147_483_647

export interface UsageChunk {
  readonly rows: number
  readonly node: string
  readonly region: string
  /** Prefix of the request ids the chunk makes from `requestSeq`. */
  readonly requestTag: string
  /** Every distinct string of the chunk's rows, referenced by index from `refs`. */
  readonly strings: ReadonlyArray<string>
  /** `STRING_FIELDS.length` per row: index into `strings`, or -1 (null; for request_id: made from `requestSeq`). */
  readonly refs: Int32Array<ArrayBuffer>
  /** ID_RANDOM_BYTES per row: the random part of the row's UUIDv7 id, drawn on the serving thread. */
  readonly random: Uint8Array<ArrayBuffer>
  readonly createdAt: Float64Array<ArrayBuffer>
  readonly requestSeq: Float64Array<ArrayBuffer>
  /** NaN: null. */
  readonly price: Float64Array<ArrayBuffer>
  readonly statusCode: Int32Array<ArrayBuffer>
  readonly latencyUs: Int32Array<ArrayBuffer>
  readonly bytesOut: Int32Array<ArrayBuffer>
}

export class UsageChunkError extends Error {
  override readonly name = "UsageChunkError"
}

export interface UsageChunkBuilder {
  /** Add one row; answers the rows now in the chunk. */
  readonly record: (facts: UsageFacts) => number
  readonly rows: () => number
  /** The chunk so far (undefined if empty); the builder starts a new one. */
  readonly take: () => UsageChunk | undefined
}

export interface UsageChunkOptions {
  readonly capacity: number
  readonly node: string
  readonly region: string
  readonly requestTag: string
  /** Fills its argument with cryptographically random bytes (node's randomFillSync). */
  readonly fillRandom: (bytes: Uint8Array) => void
}

const clampInt32 = (n: number): number => (n > INT32_MAX ? INT32_MAX : n < -INT32_MAX ? -INT32_MAX : Math.trunc(n) || 0)

export const makeUsageChunkBuilder = (options: UsageChunkOptions): UsageChunkBuilder => {
  const capacity = Math.max(1, Math.floor(options.capacity))
  let strings: Array<string> = []
  let index = new Map<string, number>()
  let refs = new Int32Array(capacity * REFS)
  let random = new Uint8Array(capacity * ID_RANDOM_BYTES)
  let createdAt = new Float64Array(capacity)
  let requestSeq = new Float64Array(capacity)
  let price = new Float64Array(capacity)
  let statusCode = new Int32Array(capacity)
  let latencyUs = new Int32Array(capacity)
  let bytesOut = new Int32Array(capacity)
  let rows = 0
  options.fillRandom(random)

  // A field mostly repeats its last value (the same key, asset, client): compare with that
  // before the Map lookup, which showed in the serving thread's profile.
  let lastString: Array<string | undefined> = Array.from<string | undefined>({ length: REFS })
  const lastRef = new Int32Array(REFS)
  const ref = (field: number, s: string | undefined | null): number => {
    if (s === undefined || s === null) return NULL_REF
    if (s === lastString[field]) return lastRef[field]!
    let i = index.get(s)
    if (i === undefined) {
      i = strings.length
      strings.push(s)
      index.set(s, i)
    }
    lastString[field] = s
    lastRef[field] = i
    return i
  }

  const take = (): UsageChunk | undefined => {
    if (rows === 0) return undefined
    const chunk: UsageChunk = {
      rows, node: options.node, region: options.region, requestTag: options.requestTag, strings,
      refs: refs.subarray(0, rows * REFS), random: random.subarray(0, rows * ID_RANDOM_BYTES), createdAt: createdAt.subarray(0, rows),
      requestSeq: requestSeq.subarray(0, rows), price: price.subarray(0, rows), statusCode: statusCode.subarray(0, rows),
      latencyUs: latencyUs.subarray(0, rows), bytesOut: bytesOut.subarray(0, rows)
    }
    strings = []
    index = new Map()
    lastString = Array.from<string | undefined>({ length: REFS })
    refs = new Int32Array(capacity * REFS)
    random = new Uint8Array(capacity * ID_RANDOM_BYTES)
    createdAt = new Float64Array(capacity)
    requestSeq = new Float64Array(capacity)
    price = new Float64Array(capacity)
    statusCode = new Int32Array(capacity)
    latencyUs = new Int32Array(capacity)
    bytesOut = new Int32Array(capacity)
    rows = 0
    options.fillRandom(random)
    return chunk
  }

  const record = (f: UsageFacts): number => {
    // A full chunk should have been taken; if not, the oldest facts are not overwritten: a new chunk is not started here.
    if (rows === capacity) throw new UsageChunkError(`usage chunk full (${capacity} rows): take it first`)
    const r = rows
    const o = r * REFS
    refs[o + R_REQUEST] = f.requestId === undefined ? NULL_REF : ref(R_REQUEST, f.requestId)
    refs[o + R_KEY] = ref(R_KEY, f.apiKeyId)
    refs[o + R_SERVICE] = ref(R_SERVICE, f.service)
    refs[o + R_PROTOCOL] = ref(R_PROTOCOL, f.protocol)
    refs[o + R_ENDPOINT] = ref(R_ENDPOINT, f.endpoint)
    refs[o + R_ASSET] = ref(R_ASSET, f.asset)
    refs[o + R_QUOTE] = ref(R_QUOTE, f.quote)
    refs[o + R_SOURCE] = ref(R_SOURCE, f.source)
    refs[o + R_ERROR] = f.code === "OK" ? NULL_REF : ref(R_ERROR, f.code)
    refs[o + R_IP] = ref(R_IP, f.clientIp)
    createdAt[r] = f.createdAt
    requestSeq[r] = f.requestSeq ?? 0
    price[r] = f.price ?? Number.NaN
    statusCode[r] = f.status ?? statusOf(f.code)
    latencyUs[r] = clampInt32(f.latencyUs)
    bytesOut[r] = clampInt32(f.bytesOut)
    rows = r + 1
    return rows
  }

  return { record, rows: () => rows, take }
}

/** Every column has room for `rows` rows (a chunk arrives from another thread). Throws UsageChunkError. */
const checkShape = (c: UsageChunk): void => {
  const n = c.rows
  if (!Number.isInteger(n) || n < 0) throw new UsageChunkError(`rows must be a whole number, got ${n}`)
  const short = ([
    ["refs", c.refs.length, n * REFS], ["random", c.random.length, n * ID_RANDOM_BYTES], ["createdAt", c.createdAt.length, n],
    ["requestSeq", c.requestSeq.length, n], ["price", c.price.length, n], ["statusCode", c.statusCode.length, n],
    ["latencyUs", c.latencyUs.length, n], ["bytesOut", c.bytesOut.length, n]
  ] as const).find(([, length, needed]) => length < needed)
  if (short !== undefined) throw new UsageChunkError(`${short[0]} holds ${short[1]} values, ${n} rows need ${short[2]}`)
}

/** Every ref points into `strings`, required fields are present, service and protocol are known. Throws UsageChunkError. */
const checkRefs = (c: UsageChunk): void => {
  const strings = c.strings.length
  for (let r = 0; r < c.rows; r++) {
    for (let field = 0; field < REFS; field++) {
      const i = c.refs[r * REFS + field]!
      const nullable = field !== R_SERVICE && field !== R_PROTOCOL && field !== R_ENDPOINT && field !== R_IP
      if (i === NULL_REF ? !nullable : !(Number.isInteger(i) && i >= 0 && i < strings)) {
        throw new UsageChunkError(`row ${r}: ${STRING_FIELDS[field]} ${i === NULL_REF ? "is missing" : `refers to string ${i}, the chunk has ${strings}`}`)
      }
    }
    const service = c.strings[c.refs[r * REFS + R_SERVICE]!]!
    const protocol = c.strings[c.refs[r * REFS + R_PROTOCOL]!]!
    if (!isUsageService(service)) throw new UsageChunkError(`row ${r}: unknown service ${service.slice(0, 20)}`)
    if (!isUsageProtocol(protocol)) throw new UsageChunkError(`row ${r}: unknown protocol ${protocol.slice(0, 20)}`)
  }
}

/** A chunk holds together: every column long enough, every ref valid. Throws UsageChunkError. */
export const checkChunk = (c: UsageChunk): void => {
  checkShape(c)
  checkRefs(c)
}

/** A chunk's rows. Throws UsageChunkError for a chunk that does not hold together. */
export const rowsOfChunk = (c: UsageChunk): Array<UsageRow> => {
  checkChunk(c)
  const { strings, refs } = c
  const nullable = (i: number): string | null => (i === NULL_REF ? null : strings[i]!)
  const rows: Array<UsageRow> = []
  for (let r = 0; r < c.rows; r++) {
    const o = r * REFS
    const createdAt = c.createdAt[r]!
    const price = c.price[r]!
    const requestRef = refs[o + R_REQUEST]!
    rows.push({
      id: uuidv7(createdAt, c.random, r * ID_RANDOM_BYTES),
      request_id: requestRef === NULL_REF ? requestIdOf(c.requestTag, c.requestSeq[r]!) : strings[requestRef]!,
      api_key_id: nullable(refs[o + R_KEY]!),
      service: strings[refs[o + R_SERVICE]!] as UsageRow["service"],
      protocol: strings[refs[o + R_PROTOCOL]!] as UsageRow["protocol"],
      endpoint: strings[refs[o + R_ENDPOINT]!]!,
      asset: nullable(refs[o + R_ASSET]!),
      quote: nullable(refs[o + R_QUOTE]!),
      source: nullable(refs[o + R_SOURCE]!),
      price: Number.isNaN(price) ? null : price,
      status_code: c.statusCode[r]!,
      error_code: nullable(refs[o + R_ERROR]!),
      latency_us: c.latencyUs[r]!,
      client_ip: strings[refs[o + R_IP]!]!,
      node: c.node,
      region: c.region,
      bytes_out: c.bytesOut[r]!,
      created_at: createdAt
    })
  }
  return rows
}
