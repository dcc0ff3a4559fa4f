import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { RESPONSE_CODES } from "../src/domain/errorCodes.ts"
import { rfc3339 } from "../src/domain/envelope.ts"
import {
  encodeErrorReply,
  encodePriceReply,
  formatUdpRequest,
  makePairTable,
  MAX_DATAGRAM_BYTES,
  mayReplyUnauthenticated,
  newPriceSpans,
  parseUdpRequest,
  priceReplyBody,
  scanPriceRequest,
  type UdpRequest,
  writePriceReply
} from "../src/domain/udpCodec.ts"

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
const IDENT = ALNUM + "_-"

const identArb = (maxLength: number) => fc.string({ unit: fc.constantFrom(...IDENT), minLength: 1, maxLength })
const symbolArb = fc.string({ unit: fc.constantFrom(...ALNUM), minLength: 1, maxLength: 15 })
const ridArb = fc.option(identArb(32), { nil: undefined })
const dateArb = fc.integer({ min: 0, max: 253_402_300_799_999 }).chain((ms) => {
  const iso = rfc3339(ms)
  return fc.constantFrom(iso, iso.slice(0, 10), `${iso.slice(0, 19)}+05:30`, `${iso.slice(0, 19)}-08:00`, iso.toLowerCase())
})

const priceArb: fc.Arbitrary<UdpRequest> = fc.record({
  _tag: fc.constant("price" as const),
  apiKey: identArb(128),
  asset: symbolArb,
  quote: fc.option(symbolArb, { nil: undefined }),
  rid: ridArb
})
const summaryArb: fc.Arbitrary<UdpRequest> = fc.oneof(
  fc.record({
    _tag: fc.constant("summary" as const),
    apiKey: identArb(128),
    from: fc.constant(undefined),
    to: fc.constant(undefined),
    rid: ridArb
  }),
  fc.record({ _tag: fc.constant("summary" as const), apiKey: identArb(128), from: dateArb, to: dateArb, rid: ridArb })
)
const requestArb = fc.oneof(priceArb, summaryArb)

const bytes = (s: string): Uint8Array => Buffer.from(s, "latin1")
const parse = (s: string) => parseUdpRequest(bytes(s))
/** What the parser reports for a valid request: symbols upper-cased. */
const normalised = (r: UdpRequest): UdpRequest =>
  r._tag === "price" ? { ...r, asset: r.asset.toUpperCase(), quote: r.quote?.toUpperCase() } : r

/** A request that already has every optional field, so one more token can only be too many. */
const fullRequestArb = fc.oneof(
  priceArb.map((r) => ({ ...r, rid: r.rid ?? "rid" })),
  fc.record({
    _tag: fc.constant("summary" as const),
    apiKey: identArb(128),
    from: dateArb,
    to: dateArb,
    rid: identArb(32)
  })
)

describe("parseUdpRequest", () => {
  it("parses what formatUdpRequest writes, with or without a trailing newline", () => {
    fc.assert(
      fc.property(requestArb, fc.constantFrom("", "\n", "\r\n"), (request, eol) => {
        const line = formatUdpRequest(request) + eol
        fc.pre(line.length <= MAX_DATAGRAM_BYTES)
        expect(parse(line)).toEqual(normalised(request))
      })
    )
  })

  it("parses the spec's examples", () => {
    expect(parse("v1 price tb_abc BTC")).toEqual({
      _tag: "price",
      apiKey: "tb_abc",
      asset: "BTC",
      quote: undefined,
      rid: undefined
    })
    expect(parse("v1 price tb_abc eth/usdt r-1\n")).toEqual({
      _tag: "price",
      apiKey: "tb_abc",
      asset: "ETH",
      quote: "USDT",
      rid: "r-1"
    })
    expect(parse("v1 summary k 2025-11-01 2025-11-24T00:00:00Z q7")).toEqual({
      _tag: "summary",
      apiKey: "k",
      from: "2025-11-01",
      to: "2025-11-24T00:00:00Z",
      rid: "q7"
    })
    // One extra token after the key is a rid, even if it looks like a date.
    expect(parse("v1 summary k 2025-11-01")).toEqual({
      _tag: "summary",
      apiKey: "k",
      from: undefined,
      to: undefined,
      rid: "2025-11-01"
    })
  })

  it("never throws on arbitrary bytes and always gives a tagged result", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1024 }), (datagram) => {
        const result = parseUdpRequest(datagram)
        expect(["price", "summary", "malformed"]).toContain(result._tag)
        if (result._tag === "malformed") {
          expect(result.reason.length).toBeGreaterThan(0)
          if (result.rid !== undefined) expect(result.rid).toMatch(/^[A-Za-z0-9_-]{1,32}$/)
        }
        if (datagram.length > MAX_DATAGRAM_BYTES) expect(result._tag).toBe("malformed")
      }),
      { numRuns: 500 }
    )
  })

  it("never throws on arbitrary printable lines that look almost right", () => {
    const token = fc.oneof(
      fc.constantFrom("v1", "v2", "price", "summary", "BTC/USD", "/", "BTC/", "2025-01-01", "2025-02-30"),
      fc.string({ unit: "grapheme-ascii", maxLength: 20 })
    )
    fc.assert(
      fc.property(fc.array(token, { maxLength: 8 }), (tokens) => {
        const result = parse(tokens.join(" "))
        expect(["price", "summary", "malformed"]).toContain(result._tag)
      })
    )
  })

  it("rejects doubled, leading or trailing spaces and tabs", () => {
    fc.assert(
      fc.property(requestArb, fc.nat(), fc.constantFrom("  ", "\t", " \t", "\u000b"), (request, at, gap) => {
        const line = formatUdpRequest(request)
        const spaces = [...line].flatMap((c, i) => (c === " " ? [i] : []))
        const i = spaces[at % spaces.length] ?? 0
        expect(parse(line.slice(0, i) + gap + line.slice(i + 1))._tag).toBe("malformed")
        expect(parse(" " + line)._tag).toBe("malformed")
        expect(parse(line + " ")._tag).toBe("malformed")
        expect(parse(line + " \n")._tag).toBe("malformed")
      })
    )
  })

  it("rejects an extra token after a complete request", () => {
    fc.assert(
      fc.property(fullRequestArb, identArb(10), (request, extra) => {
        expect(parse(`${formatUdpRequest(request)} ${extra}`)._tag).toBe("malformed")
      })
    )
  })

  it("rejects any non-ASCII or control byte", () => {
    const badByte = fc.oneof(fc.integer({ min: 0, max: 0x1f }), fc.integer({ min: 0x7f, max: 0xff }))
    fc.assert(
      fc.property(requestArb, fc.nat(), badByte, (request, at, b) => {
        const line = bytes(formatUdpRequest(request))
        const i = at % (line.length + 1)
        // A lone "\n" at the very end is the tolerated line ending.
        fc.pre(!(b === 0x0a && i === line.length))
        const datagram = new Uint8Array([...line.subarray(0, i), b, ...line.subarray(i)])
        expect(parseUdpRequest(datagram)._tag).toBe("malformed")
      })
    )
  })

  it("rejects datagrams over MAX_DATAGRAM_BYTES even when otherwise valid", () => {
    const longest = `v1 summary ${"k".repeat(128)} ${"2025-11-24T12:00:00.123456789+05:30"} ${"2025-11-24T12:00:00.123456789+05:30"} ${"r".repeat(32)}`
    expect(parse(longest)._tag).toBe("summary")
    expect(parseUdpRequest(new Uint8Array(MAX_DATAGRAM_BYTES + 1).fill(0x41))._tag).toBe("malformed")
  })

  it.each([
    ["", "empty"],
    ["\n", "only a newline"],
    ["v2 price k BTC", "another version"],
    ["V1 price k BTC", "version is case-sensitive"],
    ["v1 PRICE k BTC", "command is case-sensitive"],
    ["v1 quote k BTC", "unknown command"],
    ["v1", "no command"],
    ["v1 price", "no key"],
    ["v1 price k", "no asset"],
    ["v1 price k BTC r1 extra", "too many fields"],
    [`v1 price ${"k".repeat(129)} BTC`, "key too long"],
    ["v1 price k.y BTC", "bad key char"],
    ["v1 price k BTCBTCBTCBTCBTCB", "asset of 16 chars"],
    ["v1 price k BTC/USDUSDUSDUSDUSDU", "quote of 16 chars"],
    ["v1 price k BTC/", "empty quote"],
    ["v1 price k /USD", "empty asset"],
    ["v1 price k BTC/USD/EUR", "two slashes"],
    ["v1 price k BT-C", "dash in asset"],
    [`v1 price k BTC ${"r".repeat(33)}`, "rid too long"],
    ["v1 price k BTC r/1", "bad rid char"],
    ["v1 price k BTC\r", "lone CR"],
    ["v1 price k BTC\n\n", "two newlines"],
    ["v1 summary", "summary without key"],
    ["v1 summary k 2025-01-01 2025-01-02 r1 x", "summary with 4 extras"],
    ["v1 summary k 2025-02-30 2025-03-01", "impossible from"],
    ["v1 summary k 2025-01-01 tomorrow", "bad to"],
    ["v1 summary k 2025-01-01 2025-01-02T00:00:00", "to without zone"]
  ])("%j is malformed (%s)", (line) => {
    expect(parse(line)._tag).toBe("malformed")
  })

  it("recovers the rid of a malformed request only from where a rid belongs", () => {
    expect(parse("v1 price k BT-C r9")).toMatchObject({ _tag: "malformed", rid: "r9" })
    expect(parse("v1 price k.y BTC r9")).toMatchObject({ _tag: "malformed", rid: "r9" })
    expect(parse("v1 summary k 2025-02-30 2025-03-01 s1")).toMatchObject({ _tag: "malformed", rid: "s1" })
    expect(parse("v1 price k BTC r/9")).toMatchObject({ _tag: "malformed", rid: undefined })
    expect(parse("v2 price k BTC r9")).toMatchObject({ _tag: "malformed", rid: undefined })
    expect(parse("v1 price k BTC r9 x")).toMatchObject({ _tag: "malformed", rid: undefined })
    expect(parse("v1 price  k BTC r9")).toMatchObject({ _tag: "malformed", rid: undefined })
  })
})

describe("replies", () => {
  const finitePrice = fc.double({ noNaN: true, noDefaultInfinity: true })

  it("a price reply parses to exactly the spec's fields, in order", () => {
    fc.assert(
      fc.property(
        ridArb,
        symbolArb,
        symbolArb,
        finitePrice,
        fc.constantFrom("consensus", "coinbase", "kraken"),
        fc.nat(),
        fc.oneof(fc.nat(), fc.double({ min: -10, max: 1e7, noNaN: true })),
        (rid, asset, quote, price, source, ts, ageMs) => {
          const reply = encodePriceReply(rid, priceReplyBody(asset, quote, price, source, ts), ageMs)
          const text = reply.toString("utf8")
          expect(text).not.toContain("\n")
          const parsed = JSON.parse(text) as Record<string, unknown>
          const expected = {
            ok: true,
            ...(rid === undefined ? {} : { rid }),
            asset,
            quote,
            price: price === 0 ? 0 : price, // JSON has no negative zero
            source,
            ts,
            age_ms: Math.max(0, Math.round(ageMs))
          }
          expect(Object.keys(parsed)).toEqual(Object.keys(expected))
          expect(parsed).toEqual(expected)
        }
      )
    )
  })

  it("writes a non-finite price as null rather than invalid JSON", () => {
    const body = priceReplyBody("BTC", "USD", Number.NaN, "consensus", 1)
    expect(JSON.parse(encodePriceReply(undefined, body, Number.POSITIVE_INFINITY).toString())).toEqual({
      ok: true,
      asset: "BTC",
      quote: "USD",
      price: null,
      source: "consensus",
      ts: 1,
      age_ms: 0
    })
  })

  it("an error reply parses to exactly ok, rid (when given) and code", () => {
    fc.assert(
      fc.property(ridArb, fc.constantFrom(...RESPONSE_CODES), (rid, code) => {
        const parsed = JSON.parse(encodeErrorReply(rid, code).toString("utf8")) as Record<string, unknown>
        const expected = { ok: false, ...(rid === undefined ? {} : { rid }), code }
        expect(Object.keys(parsed)).toEqual(Object.keys(expected))
        expect(parsed).toEqual(expected)
      })
    )
  })

  it("matches the spec's reply shapes byte for byte", () => {
    const body = priceReplyBody("BTC", "USD", 97000.12, "consensus", 1732490000000)
    expect(body).toBe(`"asset":"BTC","quote":"USD","price":97000.12,"source":"consensus","ts":1732490000000`)
    expect(encodePriceReply("a1", body, 12).toString()).toBe(`{"ok":true,"rid":"a1",${body},"age_ms":12}`)
    expect(encodeErrorReply("a1", "RATE_LIMITED").toString()).toBe(`{"ok":false,"rid":"a1","code":"RATE_LIMITED"}`)
    expect(encodeErrorReply(undefined, "BAD_REQUEST").toString()).toBe(`{"ok":false,"code":"BAD_REQUEST"}`)
  })
})

describe("mayReplyUnauthenticated", () => {
  it("holds exactly when the reply is no longer than the request", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.uint8Array({ maxLength: 600 }), (reply, request) => {
        expect(mayReplyUnauthenticated(reply, request)).toBe(reply.length <= request.length)
      })
    )
  })

  it("forbids an error reply to a short malformed probe", () => {
    const probe = bytes("v1 x")
    expect(mayReplyUnauthenticated(encodeErrorReply(undefined, "BAD_REQUEST"), probe)).toBe(false)
  })
})

/** Strings of `chars` whose length is spread evenly over [min, max] (fast-check favours short ones). */
const sized = (chars: string, min: number, max: number) =>
  fc.integer({ min, max }).chain((n) => fc.string({ unit: fc.constantFrom(...chars), minLength: n, maxLength: n }))

describe("the hot path's price scan, pair table and reply writer", () => {
  /** Datagrams near the price grammar, and arbitrary bytes: where a fast path could drift from the parser. */
  const nearDatagram = fc.oneof(
    priceArb.chain((r) => fc.constantFrom("", "\n", "\r\n", "\r", " ", "\t").map((eol) => bytes(formatUdpRequest(r) + eol))),
    fc.array(fc.oneof(fc.constantFrom("v1", "price", "summary", "tb_key", "BTC", "BTC/USD", "/", "BTC/", "/USD", "r-1", "é", "\u0000", ""), identArb(20)), { maxLength: 7 })
      .map((tokens) => Buffer.from(tokens.join(" "), "utf8")),
    // Fields just inside and just past their length limits (key 128, symbols 15, rid 32).
    fc.tuple(sized(IDENT, 120, 132), sized(ALNUM, 12, 17), fc.option(sized(ALNUM, 0, 17)), fc.option(sized(IDENT, 29, 35)))
      .map(([key, asset, quote, rid]) => bytes(`v1 price ${key} ${asset}${quote === null ? "" : `/${quote}`}${rid === null ? "" : ` ${rid}`}`)),
    fc.uint8Array({ maxLength: 600 })
  )

  it("scans a price request exactly when the parser parses one, to the same fields", () => {
    const spans = newPriceSpans()
    fc.assert(fc.property(nearDatagram, (datagram) => {
      const parsed = parseUdpRequest(datagram)
      const scanned = scanPriceRequest(datagram, spans)
      expect(scanned).toBe(parsed._tag === "price")
      if (parsed._tag !== "price") return
      const text = (start: number, end: number) => Buffer.from(datagram).toString("latin1", start, end)
      const pair = makePairTable(4)(datagram, spans.pairStart, spans.pairEnd)
      expect({
        apiKey: text(spans.keyStart, spans.keyEnd),
        asset: pair.asset,
        quote: pair.quote,
        rid: spans.ridStart < 0 ? undefined : text(spans.ridStart, spans.ridEnd)
      }).toEqual({ apiKey: parsed.apiKey, asset: parsed.asset, quote: parsed.quote, rid: parsed.rid })
    }), { numRuns: 3_000 })
  })

  it("the pair table answers what the bytes say, whatever collides in a table of two slots", () => {
    const pairText = fc.tuple(symbolArb, fc.option(symbolArb, { nil: undefined })).map(([a, q]) => (q === undefined ? a : `${a}/${q}`))
    fc.assert(fc.property(fc.array(pairText, { minLength: 1, maxLength: 30 }), (pairs) => {
      const table = makePairTable(2)
      for (const p of [...pairs, ...pairs]) {
        const framed = Buffer.from(`xx ${p} yy`, "latin1")
        const [asset, quote] = p.split("/")
        expect(table(framed, 3, 3 + p.length)).toEqual({ asset: asset!.toUpperCase(), quote: quote?.toUpperCase() })
      }
    }))
  })

  it("writes the same bytes as encodePriceReply, the rid copied from the datagram", () => {
    const spans = newPriceSpans()
    fc.assert(fc.property(
      priceArb, fc.double({ noNaN: true, noDefaultInfinity: true }), fc.nat(), fc.oneof(fc.nat(), fc.double({ min: -10, max: 1e7 }), fc.constantFrom(Number.NaN, 1e300, Number.POSITIVE_INFINITY)),
      (request, price, ts, ageMs) => {
        const datagram = bytes(formatUdpRequest(request))
        fc.pre(scanPriceRequest(datagram, spans))
        const body = priceReplyBody(request._tag === "price" ? request.asset : "BTC", "USD", price, "consensus", ts)
        const written = writePriceReply(datagram, spans.ridStart, spans.ridEnd, Buffer.from(body, "utf8"), ageMs)
        expect(written.toString("latin1")).toBe(encodePriceReply(request.rid, body, ageMs).toString("latin1"))
      }
    ))
  })
})
