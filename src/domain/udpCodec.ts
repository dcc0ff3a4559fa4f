/**
 * UDP wire format (spec: "UDP on LPO_UDP_PORT", LRS UDP). One ASCII request per datagram,
 * fields separated by single spaces:
 *
 *     v1 price <api_key> <ASSET>[/<QUOTE>] [<rid>]
 *     v1 summary <api_key> [<from> <to>] [<rid>]
 *
 * and one single-line JSON reply per request. Parsing is on the hot path: one pass over the
 * bytes with a lookup table, no exceptions, and a result value for every input.
 */
import type { ResponseCode } from "./errorCodes.ts"
import { isRfc3339 } from "./envelope.ts"

/** Anything longer is malformed. */
export const MAX_DATAGRAM_BYTES = 512

export type UdpRequest =
  | {
    readonly _tag: "price"
    readonly apiKey: string
    readonly asset: string
    readonly quote: string | undefined
    readonly rid: string | undefined
  }
  | {
    readonly _tag: "summary"
    readonly apiKey: string
    readonly from: string | undefined
    readonly to: string | undefined
    readonly rid: string | undefined
  }

export type UdpParse =
  | UdpRequest
  | {
    readonly _tag: "malformed"
    readonly reason: string
    /** Only when a syntactically valid rid could be recovered from its expected position. */
    readonly rid: string | undefined
  }

const MAX_API_KEY_CHARS = 128
const MAX_SYMBOL_CHARS = 15
const MAX_RID_CHARS = 32
/** The longest request: v1 summary <key> <from> <to> <rid> */
const MAX_FIELDS = 6

const SPACE = 0x20
const SLASH = 0x2f
const LF = 0x0a
const CR = 0x0d

const ALNUM = 1
/** [A-Za-z0-9_-]: api keys and rids. */
const IDENT = 2
const CHAR_CLASS = (() => {
  const table = new Uint8Array(128)
  const mark = (from: string, to: string, flags: number) => {
    for (let c = from.charCodeAt(0); c <= to.charCodeAt(0); c++) table[c] = flags
  }
  mark("0", "9", ALNUM | IDENT)
  mark("A", "Z", ALNUM | IDENT)
  mark("a", "z", ALNUM | IDENT)
  mark("_", "_", IDENT)
  mark("-", "-", IDENT)
  return table
})()

/** Every byte in [start, end) has `flag`, and the length is 1..maxLength. Bytes are already known to be < 0x80. */
const allOfClass = (bytes: Uint8Array, start: number, end: number, flag: number, maxLength: number): boolean => {
  const length = end - start
  if (length < 1 || length > maxLength) return false
  for (let i = start; i < end; i++) {
    if (((CHAR_CLASS[bytes[i] ?? 0] ?? 0) & flag) === 0) return false
  }
  return true
}

const malformed = (reason: string, rid?: string): UdpParse => ({ _tag: "malformed", reason, rid })

/** YYYY-MM-DD or an RFC 3339 date-time (spec LRS: `from`/`to`). */
const isReportDate = (s: string): boolean => isRfc3339(s.length === 10 ? `${s}T00:00:00Z` : s)

export const parseUdpRequest = (datagram: Uint8Array): UdpParse => {
  let end = datagram.length
  if (end > MAX_DATAGRAM_BYTES) return malformed("datagram too long")
  if (end > 0 && datagram[end - 1] === LF) {
    end--
    if (end > 0 && datagram[end - 1] === CR) end--
  }
  if (end === 0) return malformed("empty datagram")

  // Field boundaries: starts[i]..ends[i]. One pass also rejects control and non-ASCII bytes.
  const starts: Array<number> = [0]
  const ends: Array<number> = []
  for (let i = 0; i < end; i++) {
    const b = datagram[i] ?? 0
    if (b === SPACE) {
      if (i === starts[starts.length - 1]) return malformed("empty field (leading or repeated space)")
      if (starts.length === MAX_FIELDS) return malformed("too many fields")
      ends.push(i)
      starts.push(i + 1)
    } else if (b < 0x21 || b > 0x7e) {
      return malformed("non-ASCII or control byte")
    }
  }
  if (starts[starts.length - 1] === end) return malformed("empty field (trailing space)")
  ends.push(end)

  const fieldCount = starts.length
  const text = Buffer.from(datagram.buffer, datagram.byteOffset, end).toString("latin1")
  const field = (i: number): string => text.slice(starts[i], ends[i])
  const isField = (i: number, flag: number, maxLength: number): boolean =>
    allOfClass(datagram, starts[i] ?? 0, ends[i] ?? 0, flag, maxLength)
  const isRid = (i: number): boolean => isField(i, IDENT, MAX_RID_CHARS)

  if (field(0) !== "v1") return malformed("unsupported version")
  const command = fieldCount > 1 ? field(1) : ""

  if (command === "price") {
    const hasRid = fieldCount === 5
    const rid = hasRid && isRid(4) ? field(4) : undefined
    if (fieldCount < 4) return malformed("price needs an api key and an asset")
    if (fieldCount > 5) return malformed("too many fields")
    if (hasRid && rid === undefined) return malformed("invalid rid")
    if (!isField(2, IDENT, MAX_API_KEY_CHARS)) return malformed("invalid api key", rid)
    const pairStart = starts[3] ?? 0
    const pairEnd = ends[3] ?? 0
    const slash = datagram.indexOf(SLASH, pairStart)
    const assetEnd = slash >= 0 && slash < pairEnd ? slash : pairEnd
    if (!allOfClass(datagram, pairStart, assetEnd, ALNUM, MAX_SYMBOL_CHARS)) return malformed("invalid asset", rid)
    if (assetEnd !== pairEnd && !allOfClass(datagram, assetEnd + 1, pairEnd, ALNUM, MAX_SYMBOL_CHARS)) {
      return malformed("invalid quote", rid)
    }
    return {
      _tag: "price",
      apiKey: field(2),
      asset: text.slice(pairStart, assetEnd).toUpperCase(),
      quote: assetEnd === pairEnd ? undefined : text.slice(assetEnd + 1, pairEnd).toUpperCase(),
      rid
    }
  }

  if (command === "summary") {
    // Extra fields after the key: 0 none; 1 rid; 2 from to; 3 from to rid.
    const extra = fieldCount - 3
    const hasRid = extra === 1 || extra === 3
    const rid = hasRid && isRid(fieldCount - 1) ? field(fieldCount - 1) : undefined
    if (extra < 0) return malformed("summary needs an api key")
    if (hasRid && rid === undefined) return malformed("invalid rid")
    if (!isField(2, IDENT, MAX_API_KEY_CHARS)) return malformed("invalid api key", rid)
    if (extra < 2) return { _tag: "summary", apiKey: field(2), from: undefined, to: undefined, rid }
    const from = field(3)
    const to = field(4)
    if (!isReportDate(from)) return malformed("invalid from", rid)
    if (!isReportDate(to)) return malformed("invalid to", rid)
    return { _tag: "summary", apiKey: field(2), from, to, rid }
  }

  return malformed("unknown command")
}

/** The request line a client sends (no trailing newline); the inverse of `parseUdpRequest`. */
export const formatUdpRequest = (request: UdpRequest): string => {
  const rid = request.rid === undefined ? "" : ` ${request.rid}`
  if (request._tag === "price") {
    const pair = request.quote === undefined ? request.asset : `${request.asset}/${request.quote}`
    return `v1 price ${request.apiKey} ${pair}${rid}`
  }
  const window = request.from === undefined || request.to === undefined ? "" : ` ${request.from} ${request.to}`
  return `v1 summary ${request.apiKey}${window}${rid}`
}

/** NaN and ±Infinity are not JSON; they would make the whole reply unparseable. */
const jsonNumber = (x: number): string => (Number.isFinite(x) ? String(x) : "null")

const ridMember = (rid: string | undefined): string => (rid === undefined ? "" : `,"rid":${JSON.stringify(rid)}`)

/**
 * The part of a success reply that only changes when the price changes, without braces:
 * `"asset":"BTC","quote":"USD","price":97000.12,"source":"consensus","ts":1732490000000`.
 * Callers cache it per price update so replies are not re-serialised per request.
 */
export const priceReplyBody = (asset: string, quote: string, price: number, source: string, ts: number): string =>
  `"asset":${JSON.stringify(asset)},"quote":${JSON.stringify(quote)},"price":${jsonNumber(price)}` +
  `,"source":${JSON.stringify(source)},"ts":${jsonNumber(ts)}`

export const encodePriceReply = (rid: string | undefined, body: string, ageMs: number): Buffer => {
  const age = Number.isFinite(ageMs) ? Math.max(0, Math.round(ageMs)) : 0
  return Buffer.from(`{"ok":true${ridMember(rid)},${body},"age_ms":${age}}`, "utf8")
}

export const encodeErrorReply = (rid: string | undefined, code: ResponseCode): Buffer =>
  Buffer.from(`{"ok":false${ridMember(rid)},"code":"${code}"}`, "utf8")

/** Anti-amplification: a reply to a malformed or unauthenticated datagram may be sent only if it is no longer than the request. */
export const mayReplyUnauthenticated = (reply: Uint8Array, request: Uint8Array): boolean =>
  reply.length <= request.length
