import { Schema } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { RESPONSE_CODES } from "../src/domain/errorCodes.ts"
import { Envelope, isRfc3339, makeEnvelopeWriter, rfc3339, type ServiceName, SERVICES } from "../src/domain/envelope.ts"
import type { ResponseCode } from "../src/domain/errorCodes.ts"
import { type Lang, LANGS } from "../src/domain/messages.ts"

/** The per-answer and per-server fields of an envelope, as the tests generate them. */
interface EnvelopeMeta {
  readonly service: ServiceName
  readonly request_id: string
  readonly timestamp: string
  readonly latency_us: number
  readonly node: string
  readonly region: string
  readonly version: string
  readonly lang: Lang
}

const KEYS = [
  "success",
  "service",
  "code",
  "message",
  "data",
  "request_id",
  "timestamp",
  "latency_us",
  "node",
  "region",
  "version",
  "lang"
]

/** Strings that stress escaping: quotes, backslashes, control chars, line separators, astral and lone surrogates. */
const nastyString = fc.string({
  unit: fc.oneof(
    fc.constantFrom("\"", "\\", "\n", "\r", "\t", "\u0000", "\u001f", "\u007f", "\u2028", "\u2029", "é", "😀", "\ud800", "\udfff", "/"),
    fc.string({ unit: "binary", minLength: 1, maxLength: 1 })
  ),
  maxLength: 40
})

// Years 0000..9999 keep toISOString in the plain 4-digit form RFC 3339 requires.
const epochMsArb = fc.integer({ min: -62_167_219_200_000, max: 253_402_300_799_999 })

const metaArb: fc.Arbitrary<EnvelopeMeta> = fc.record({
  service: fc.constantFrom(...SERVICES),
  request_id: nastyString,
  timestamp: epochMsArb.map(rfc3339),
  latency_us: fc.oneof(fc.nat(), fc.double({ min: -1e6, max: 1e9, noNaN: true })),
  node: nastyString,
  region: nastyString,
  version: nastyString,
  lang: fc.constantFrom(...LANGS)
})

const dataArb = fc.oneof(fc.constant(null), fc.dictionary(nastyString, fc.jsonValue({ maxDepth: 3 }), { maxKeys: 6 }))

/** One writer per server identity, kept across runs, so cached heads and tails are read back too. */
const writers = new Map<string, ReturnType<typeof makeEnvelopeWriter>>()
const envelopeJson = (meta: EnvelopeMeta, code: ResponseCode, message: string, dataJson: string): string => {
  const server = { node: meta.node, region: meta.region, version: meta.version }
  const id = JSON.stringify(server)
  let write = writers.get(id)
  if (write === undefined) writers.set(id, write = makeEnvelopeWriter(server))
  return write({
    service: meta.service, code, message, lang: meta.lang, dataJson,
    requestId: meta.request_id, timestamp: meta.timestamp, latencyUs: meta.latency_us
  })
}

const decodeStrict = Schema.decodeUnknownSync(Envelope, { onExcessProperty: "error" })

const validEnvelope = () => ({
  success: false,
  service: "LPO",
  code: "RATE_LIMITED",
  message: "Rate limit exceeded; retry after the Retry-After interval.",
  data: null,
  request_id: "r-1",
  timestamp: "2025-11-24T12:00:00.000Z",
  latency_us: 42,
  node: "n1",
  region: "local",
  version: "0.1.0",
  lang: "en"
})

describe("makeEnvelopeWriter", () => {
  it("answers each call with its own fields while reusing what it cached, past its cache bound too", () => {
    const write = makeEnvelopeWriter({ node: "n\"1", region: "r", version: "v" })
    const messages = fc.oneof(fc.constantFrom("ok", "slow down", "é😀"), nastyString)
    fc.assert(
      fc.property(fc.array(fc.tuple(metaArb, fc.constantFrom(...RESPONSE_CODES), messages), { minLength: 1, maxLength: 20 }), (calls) => {
        for (const [meta, code, message] of calls) {
          const parsed = decodeStrict(JSON.parse(write({
            service: meta.service, code, message, lang: meta.lang, dataJson: "null",
            requestId: meta.request_id, timestamp: meta.timestamp, latencyUs: meta.latency_us
          })))
          expect([parsed.service, parsed.code, parsed.message, parsed.request_id, parsed.lang, parsed.node]).toEqual([meta.service, code, message, meta.request_id, meta.lang, "n\"1"])
        }
      }),
      { numRuns: 200 } // ~2,000 distinct messages: beyond the 1,024 heads one writer keeps
    )
  })
})

describe("envelope JSON", () => {
  it("has exactly the 12 keys in order, decodes with the schema, and round-trips every value", () => {
    fc.assert(
      fc.property(metaArb, fc.constantFrom(...RESPONSE_CODES), nastyString, dataArb, (meta, code, message, data) => {
        const dataJson = JSON.stringify(data)
        const json = envelopeJson(meta, code, message, dataJson)
        const parsed: unknown = JSON.parse(json)
        expect(Object.keys(parsed as object)).toEqual(KEYS)
        const envelope = decodeStrict(parsed)
        expect(envelope.success).toBe(code === "OK")
        expect(envelope.code).toBe(code)
        expect(envelope.message).toBe(message)
        expect(envelope.data).toEqual(JSON.parse(dataJson))
        expect(envelope.service).toBe(meta.service)
        expect(envelope.request_id).toBe(meta.request_id)
        expect(envelope.timestamp).toBe(meta.timestamp)
        expect(envelope.latency_us).toBe(Math.max(0, Math.round(meta.latency_us)))
        expect(envelope.node).toBe(meta.node)
        expect(envelope.region).toBe(meta.region)
        expect(envelope.version).toBe(meta.version)
        expect(envelope.lang).toBe(meta.lang)
      }),
      { numRuns: 300 }
    )
  })

  it("is a single line even when strings hold newlines", () => {
    fc.assert(
      fc.property(metaArb, nastyString, (meta, message) => {
        expect(envelopeJson(meta, "OK", message, "null")).not.toMatch(/[\n\r]/)
      })
    )
  })

  it("writes a non-finite latency as 0 so the output stays JSON", () => {
    for (const latency of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -5]) {
      const meta: EnvelopeMeta = { ...decodeStrict(validEnvelope()), latency_us: latency }
      expect((JSON.parse(envelopeJson(meta, "OK", "ok", "{}")) as { latency_us: unknown }).latency_us).toBe(0)
    }
  })
})

describe("Envelope schema", () => {
  it("accepts a well-formed envelope", () => {
    expect(decodeStrict(validEnvelope())).toEqual(validEnvelope())
  })

  it.each([
    ["an extra field", { extra: 1 }],
    ["a missing field", { lang: undefined }],
    ["success disagreeing with code", { success: true }],
    ["an unknown code", { code: "TEAPOT" }],
    ["an unknown service", { service: "FOO" }],
    ["an unknown lang", { lang: "xx" }],
    ["a fractional latency", { latency_us: 1.5 }],
    ["a negative latency", { latency_us: -1 }],
    ["array data", { data: [1, 2] }],
    ["string data", { data: "x" }],
    ["a date-only timestamp", { timestamp: "2025-11-24" }],
    ["a timestamp without zone", { timestamp: "2025-11-24T12:00:00" }],
    ["an impossible date", { timestamp: "2025-02-29T12:00:00Z" }]
  ])("rejects %s", (_, change) => {
    const input: Record<string, unknown> = { ...validEnvelope(), ...change }
    for (const [k, v] of Object.entries(change)) if (v === undefined) delete input[k]
    expect(() => decodeStrict(input)).toThrow()
  })
})

describe("timestamps", () => {
  it("rfc3339 gives a valid RFC 3339 UTC string that parses back to the same ms", () => {
    fc.assert(
      fc.property(epochMsArb, (ms) => {
        const s = rfc3339(ms)
        expect(isRfc3339(s)).toBe(true)
        expect(s.endsWith("Z")).toBe(true)
        expect(Date.parse(s)).toBe(ms)
      })
    )
  })

  it.each([
    ["2025-11-24T12:00:00Z", true],
    ["2025-11-24t12:00:00z", true],
    ["2025-11-24T12:00:00.123456+05:30", true],
    ["2024-02-29T00:00:00-08:00", true],
    ["2016-12-31T23:59:60Z", true],
    ["2016-12-31T23:59:61Z", false],
    ["2025-02-29T00:00:00Z", false],
    ["2025-04-31T00:00:00Z", false],
    ["2025-13-01T00:00:00Z", false],
    ["2025-00-10T00:00:00Z", false],
    ["2025-11-24T24:00:00Z", false],
    ["2025-11-24T12:60:00Z", false],
    ["2025-11-24T12:00:00+24:00", false],
    ["2025-11-24T12:00:00", false],
    ["2025-11-24 12:00:00Z", false],
    ["2025-11-24", false],
    ["1900-02-29T00:00:00Z", false],
    ["2000-02-29T00:00:00Z", true],
    ["", false]
  ])("isRfc3339(%j) is %s", (s, expected) => {
    expect(isRfc3339(s)).toBe(expected)
  })
})
