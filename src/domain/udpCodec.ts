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

/** A reply's age_ms: a whole number of ms, 0 for nonsense, at most MAX_SAFE_INTEGER (so always plain digits). */
const replyAge = (ageMs: number): number => (Number.isFinite(ageMs) ? Math.min(Number.MAX_SAFE_INTEGER, Math.max(0, Math.round(ageMs))) : 0)

export const encodePriceReply = (rid: string | undefined, body: string, ageMs: number): Buffer => {
  const age = replyAge(ageMs)
  return Buffer.from(`{"ok":true${ridMember(rid)},${body},"age_ms":${age}}`, "utf8")
}

export const encodeErrorReply = (rid: string | undefined, code: ResponseCode): Buffer =>
  Buffer.from(`{"ok":false${ridMember(rid)},"code":"${code}"}`, "utf8")

/** Anti-amplification: a reply to a malformed or unauthenticated datagram may be sent only if it is no longer than the request. */
export const mayReplyUnauthenticated = (reply: Uint8Array, request: Uint8Array): boolean =>
  reply.length <= request.length

/**
 * Where the fields of a valid `v1 price` datagram lie: byte offsets, ends exclusive; `ridStart`
 * is -1 when there is no rid. Filled by `scanPriceRequest`, one per handler, reused.
 */
export interface PriceSpans {
  keyStart: number
  keyEnd: number
  /** `ASSET[/QUOTE]` as sent. */
  pairStart: number
  pairEnd: number
  ridStart: number
  ridEnd: number
}

export const newPriceSpans = (): PriceSpans => ({ keyStart: 0, keyEnd: 0, pairStart: 0, pairEnd: 0, ridStart: -1, ridEnd: -1 })

const PRICE_PREFIX = Buffer.from("v1 price ", "latin1")

/** The end of the field starting at `start` (the next space, or `end`) if all its bytes have `flag`, else -1. */
const fieldEnd = (bytes: Uint8Array, start: number, end: number, flag: number): number => {
  let i = start
  for (; i < end; i++) {
    const b = bytes[i]!
    if (b === SPACE) break
    if (b >= 0x80 || ((CHAR_CLASS[b] ?? 0) & flag) === 0) return -1
  }
  return i
}

/**
 * The hot path's parse of a price request: true exactly when `parseUdpRequest` would answer a
 * price request, and then `spans` holds its fields. Allocates nothing; anything else (malformed,
 * summary) is left to `parseUdpRequest`, which says what is wrong.
 */
export const scanPriceRequest = (datagram: Uint8Array, spans: PriceSpans): boolean => {
  let end = datagram.length
  if (end > MAX_DATAGRAM_BYTES) return false
  if (end > 0 && datagram[end - 1] === LF) {
    end--
    if (end > 0 && datagram[end - 1] === CR) end--
  }
  const prefix = PRICE_PREFIX.length
  if (end <= prefix) return false
  for (let i = 0; i < prefix; i++) if (datagram[i] !== PRICE_PREFIX[i]) return false
  const keyEnd = fieldEnd(datagram, prefix, end, IDENT)
  if (keyEnd < 0 || keyEnd === end || keyEnd - prefix < 1 || keyEnd - prefix > MAX_API_KEY_CHARS) return false
  const pairStart = keyEnd + 1
  // The asset, then an optional "/QUOTE": both 1..15 alphanumerics.
  let assetEnd = pairStart
  while (assetEnd < end && datagram[assetEnd] !== SLASH && datagram[assetEnd] !== SPACE) assetEnd++
  if (!allOfClass(datagram, pairStart, assetEnd, ALNUM, MAX_SYMBOL_CHARS)) return false
  let pairEnd = assetEnd
  if (assetEnd < end && datagram[assetEnd] === SLASH) {
    pairEnd = fieldEnd(datagram, assetEnd + 1, end, ALNUM)
    if (pairEnd < 0 || pairEnd - assetEnd - 1 < 1 || pairEnd - assetEnd - 1 > MAX_SYMBOL_CHARS) return false
  }
  let ridStart = -1
  let ridEnd = -1
  if (pairEnd < end) {
    ridStart = pairEnd + 1
    ridEnd = fieldEnd(datagram, ridStart, end, IDENT)
    if (ridEnd !== end || ridEnd - ridStart < 1 || ridEnd - ridStart > MAX_RID_CHARS) return false
  }
  spans.keyStart = prefix
  spans.keyEnd = keyEnd
  spans.pairStart = pairStart
  spans.pairEnd = pairEnd
  spans.ridStart = ridStart
  spans.ridEnd = ridEnd
  return true
}

/** An asset and quote as the parser reports them (upper case; quote undefined when not sent). */
export interface AssetPair {
  readonly asset: string
  readonly quote: string | undefined
}

/**
 * `ASSET[/QUOTE]` bytes to their strings, remembered in a small table by their bytes, so a pair
 * asked again costs a hash and a compare, not two new strings. `slots` must be a power of two.
 */
export const makePairTable = (slots: number) => {
  const keys = Array.from({ length: slots }, (): Uint8Array | undefined => undefined)
  const values = Array.from({ length: slots }, (): AssetPair | undefined => undefined)
  const mask = slots - 1
  return (bytes: Uint8Array, start: number, end: number): AssetPair => {
    let h = 0x811c9dc5 // FNV-1a
    for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193)
    const slot = (h >>> 0) & mask
    const known = keys[slot]
    if (known !== undefined && known.length === end - start) {
      let same = true
      for (let i = 0; i < known.length; i++) {
        if (known[i] !== bytes[start + i]) {
          same = false
          break
        }
      }
      if (same) return values[slot]!
    }
    const text = Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start).toString("latin1")
    const slash = text.indexOf("/")
    const pair: AssetPair = slash < 0
      ? { asset: text.toUpperCase(), quote: undefined }
      : { asset: text.slice(0, slash).toUpperCase(), quote: text.slice(slash + 1).toUpperCase() }
    keys[slot] = Uint8Array.from(bytes.subarray(start, end))
    values[slot] = pair
    return pair
  }
}

const REPLY_OK = Buffer.from('{"ok":true', "latin1")
const REPLY_RID = Buffer.from(',"rid":"', "latin1")
const REPLY_AGE = Buffer.from(',"age_ms":', "latin1")

/**
 * `encodePriceReply` written as bytes: the rid copied from the datagram (`ridStart` -1: none; its
 * bytes are [A-Za-z0-9_-], which JSON needs no escape for) and the answer's body bytes.
 */
export const writePriceReply = (datagram: Uint8Array, ridStart: number, ridEnd: number, body: Uint8Array, ageMs: number): Buffer => {
  const age = replyAge(ageMs)
  let digits = 1
  for (let p = 10; p <= age; p *= 10) digits++
  const ridBytes = ridStart < 0 ? 0 : REPLY_RID.length + (ridEnd - ridStart) + 1
  const out = Buffer.allocUnsafe(REPLY_OK.length + ridBytes + 1 + body.length + REPLY_AGE.length + digits + 1)
  out.set(REPLY_OK, 0)
  let o = REPLY_OK.length
  if (ridStart >= 0) {
    out.set(REPLY_RID, o)
    o += REPLY_RID.length
    for (let i = ridStart; i < ridEnd; i++) out[o++] = datagram[i]!
    out[o++] = 0x22 // "
  }
  out[o++] = 0x2c // ,
  out.set(body, o)
  o += body.length
  out.set(REPLY_AGE, o)
  o += REPLY_AGE.length
  // Digits of `age`, least significant last.
  for (let i = digits - 1, n = age; i >= 0; i--, n = Math.floor(n / 10)) out[o + i] = 0x30 + (n % 10)
  out[o + digits] = 0x7d // }
  return out
}
