/**
 * The 12-field HTTP response envelope (spec: "The response envelope"): a fast serialiser for
 * the server and an Effect Schema for clients and tests to decode responses.
 */
import { Schema } from "effect"
import { RESPONSE_CODES, type ResponseCode } from "./errorCodes.ts"
import { LANGS, type Lang } from "./messages.ts"

export const SERVICES = ["LPO", "LRS", "WEBHOOK", "RECEIPT", "ADMIN"] as const
export type ServiceName = (typeof SERVICES)[number]

/** RFC 3339 UTC timestamp for epoch ms. */
export const rfc3339 = (ms: number): string => {
  // Many answers share a millisecond; formatting a Date is the costly part.
  if (ms !== lastMs) {
    lastMs = ms
    lastText = new Date(ms).toISOString()
  }
  return lastText
}
let lastMs = Number.NaN
let lastText = ""

const RFC3339_SHAPE = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$/

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] as const
const isLeapYear = (year: number): boolean => (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0
/** Own table rather than Date.UTC, which maps years 0..99 to 1900..1999. */
const daysInMonth = (year: number, month: number): number =>
  month === 2 && isLeapYear(year) ? 29 : (DAYS_IN_MONTH[month - 1] ?? 0)

/** RFC 3339 date-time with real calendar and clock ranges (Date.parse would roll Feb 30 over to March). */
export const isRfc3339 = (s: string): boolean => {
  const m = RFC3339_SHAPE.exec(s)
  if (m === null) return false
  const field = (i: number): number => Number(m[i] ?? "0") // absent offset groups mean "Z"
  const month = field(2)
  const day = field(3)
  return (
    month >= 1 &&
    month <= 12 &&
    day >= 1 &&
    day <= daysInMonth(field(1), month) &&
    field(4) <= 23 &&
    field(5) <= 59 &&
    field(6) <= 60 && // 60: leap second
    field(7) <= 23 &&
    field(8) <= 59
  )
}

/** A finite, non-negative integer: the serialiser never emits NaN/Infinity, which are not JSON. */
const wholeMicros = (latencyUs: number): number =>
  Number.isFinite(latencyUs) ? Math.max(0, Math.round(latencyUs)) : 0

/** Distinct (code, service, message) heads one writer keeps; others are serialised each time. */
const MAX_CACHED_HEADS = 1_024

export interface EnvelopeWriterArgs {
  readonly service: ServiceName
  readonly code: ResponseCode
  readonly message: string
  readonly lang: Lang
  readonly dataJson: string
  readonly requestId: string
  readonly timestamp: string
  readonly latencyUs: number
}

/**
 * The envelope as a JSON string, keys in spec order, for one server. It runs on every response:
 * the fields that repeat from one answer to the next (success, service, code and message before
 * `data`; node, region, version and lang after the latency) are serialised once and reused, so an
 * answer serialises only its own four values. `dataJson` must already be serialised JSON of an
 * object, or "null".
 */
export const makeEnvelopeWriter = (server: { readonly node: string; readonly region: string; readonly version: string }) => {
  const heads = new Map<ResponseCode, Map<ServiceName, Map<string, string>>>()
  let cachedHeads = 0
  const tails = new Map<Lang, string>()
  const serverJson = `,"node":${JSON.stringify(server.node)},"region":${JSON.stringify(server.region)},"version":${JSON.stringify(server.version)},"lang":`

  const headOf = (service: ServiceName, code: ResponseCode, message: string): string => {
    let byService = heads.get(code)
    if (byService === undefined) heads.set(code, byService = new Map())
    let byMessage = byService.get(service)
    if (byMessage === undefined) byService.set(service, byMessage = new Map())
    const cached = byMessage.get(message)
    if (cached !== undefined) return cached
    const head = `{"success":${code === "OK"},"service":${JSON.stringify(service)},"code":${JSON.stringify(code)},"message":${JSON.stringify(message)},"data":`
    if (cachedHeads < MAX_CACHED_HEADS) {
      byMessage.set(message, head)
      cachedHeads++
    }
    return head
  }
  const tailOf = (lang: Lang): string => {
    let tail = tails.get(lang)
    if (tail === undefined) tails.set(lang, tail = `${serverJson}${JSON.stringify(lang)}}`)
    return tail
  }

  return (a: EnvelopeWriterArgs): string =>
    headOf(a.service, a.code, a.message) + a.dataJson + ',"request_id":' + JSON.stringify(a.requestId) +
    ',"timestamp":' + JSON.stringify(a.timestamp) + ',"latency_us":' + wholeMicros(a.latencyUs) + tailOf(a.lang)
}

export const Envelope = Schema.Struct({
  success: Schema.Boolean,
  service: Schema.Literals(SERVICES),
  code: Schema.Literals(RESPONSE_CODES),
  message: Schema.String,
  data: Schema.NullOr(Schema.Record(Schema.String, Schema.Unknown)),
  request_id: Schema.String,
  timestamp: Schema.String.check(Schema.makeFilter((s: string) => isRfc3339(s) || "Expected an RFC 3339 timestamp")),
  latency_us: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  node: Schema.String,
  region: Schema.String,
  version: Schema.String,
  lang: Schema.Literals(LANGS)
}).check(Schema.makeFilter((e) => e.success === (e.code === "OK") || "success must be true exactly when code is OK"))

export type Envelope = typeof Envelope.Type
