/**
 * No input makes a parser throw or emit a non-finite / non-positive price: arbitrary text,
 * truncated samples, samples with any field replaced by a wrong type or an absurd number, and
 * unknown channels (string fields replaced by arbitrary strings).
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { positiveDecimal } from "../src/domain/exchanges/decimal.ts"
import { PROTOCOLS } from "../src/domain/exchanges/index.ts"
import type { MarketSymbol, ParsedFrame } from "../src/domain/exchanges/protocol.ts"
import type { Tick } from "../src/domain/price.ts"
import { ALL_SAMPLES, marketMap, type ExchangeSamples } from "./exchanges.samples.ts"

const RECEIVED_AT = 1_700_000_000_000
const KINDS = new Set(["ticker", "ack", "heartbeat", "pong", "error", "ignored"])
const RUNS = 400

/** JSON fragments that decode to hostile values: Infinity (1e400), 0 (1e-400), 2^64, numeric-looking strings. */
const HOSTILE_JSON = [
  "1e400",
  "-1e400",
  "1e-400",
  "18446744073709551616",
  "-1",
  "0",
  '"1e400"',
  '"NaN"',
  '"Infinity"',
  '"-1"',
  '"0"',
  '""',
  '"0x10"',
  '" 5"',
  "null",
  "true",
  "[]",
  "{}",
  '[1e400]',
  '{"price":"1e400"}'
]

const PLACEHOLDER = "__fuzz_placeholder__"

type Path = ReadonlyArray<string | number>

const pathsOf = (value: unknown, prefix: Path = []): ReadonlyArray<Path> => {
  if (Array.isArray(value)) return value.flatMap((v, i) => [[...prefix, i], ...pathsOf(v, [...prefix, i])])
  if (typeof value === "object" && value !== null)
    return Object.entries(value).flatMap(([k, v]) => [[...prefix, k], ...pathsOf(v, [...prefix, k])])
  return []
}

/** Deep copy of `value` with the node at `path` replaced (or deleted when `replacement` is undefined). */
const replaceAt = (value: unknown, path: Path, replacement: unknown): unknown => {
  const [head, ...rest] = path
  if (head === undefined) return replacement
  if (Array.isArray(value)) {
    const copy: Array<unknown> = [...value]
    copy[head as number] = replaceAt(copy[head as number], rest, replacement)
    return copy
  }
  const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) }
  if (rest.length === 0 && replacement === undefined) delete copy[head]
  else copy[head] = replaceAt(copy[head], rest, replacement)
  return copy
}

const replacementArb: fc.Arbitrary<{ readonly raw: string } | { readonly value: unknown }> = fc.oneof(
  fc.constantFrom(...HOSTILE_JSON).map((raw) => ({ raw })),
  fc.jsonValue({ maxDepth: 2 }).map((value) => ({ value })),
  fc.string({ maxLength: 12 }).map((value) => ({ value })),
  fc.double().map((value) => ({ value })),
  fc.constant({ value: undefined })
)

/** A sample with 1–3 of its fields (at any depth) replaced, deleted, or made hostile. */
const mutatedArb = (sample: string): fc.Arbitrary<string> => {
  const parsed: unknown = JSON.parse(sample)
  const paths = pathsOf(parsed)
  if (paths.length === 0) return fc.constant(sample)
  const mutation = fc.tuple(fc.constantFrom(...paths), replacementArb)
  return fc.array(mutation, { minLength: 1, maxLength: 3 }).map((mutations) => {
    let current: unknown = parsed
    const raws: Array<string> = []
    for (const [path, replacement] of mutations) {
      if ("raw" in replacement) {
        current = replaceAt(current, path, `${PLACEHOLDER}${raws.length}`)
        raws.push(replacement.raw)
      } else {
        current = replaceAt(current, path, replacement.value)
      }
    }
    let text = JSON.stringify(current) ?? "null"
    raws.forEach((raw, i) => {
      text = text.replace(`"${PLACEHOLDER}${i}"`, raw)
    })
    return text
  })
}

const truncatedArb = (sample: string): fc.Arbitrary<string> =>
  fc.nat({ max: sample.length }).map((n) => sample.slice(0, n))

const validPrice = (x: number | undefined): boolean => x === undefined || (Number.isFinite(x) && x > 0)

const assertTick = (tick: Tick, samples: ExchangeSamples): void => {
  expect(tick.exchange).toBe(samples.exchange)
  expect(validPrice(tick.last) && validPrice(tick.bid) && validPrice(tick.ask)).toBe(true)
  expect(tick.last ?? tick.bid ?? tick.ask).toBeDefined()
  expect(tick.exchangeTs === undefined || Number.isFinite(tick.exchangeTs)).toBe(true)
  expect(tick.receivedAt).toBe(RECEIVED_AT)
  expect(samples.markets.some((m: MarketSymbol) => m.asset === tick.asset && m.quote === tick.quote)).toBe(true)
}

const assertFrame = (frame: ParsedFrame, samples: ExchangeSamples): void => {
  expect(KINDS.has(frame.kind)).toBe(true)
  for (const tick of frame.ticks) assertTick(tick, samples)
  for (const reply of frame.replies) expect(typeof reply).toBe("string")
  if (frame.kind === "error") expect(typeof frame.error).toBe("string")
}

describe.each(ALL_SAMPLES.map((s) => [s.exchange, s] as const))("%s parser under hostile input", (_, samples) => {
  const protocol = PROTOCOLS[samples.exchange]
  const markets = marketMap(samples.markets)
  const frames = [...samples.tickerFrames, ...samples.otherFrames]
  const parse = (raw: string): void => assertFrame(protocol.parseFrame(raw, markets, RECEIVED_AT), samples)
  const parseRest = (body: string): void => {
    for (const { market } of samples.restBodies) {
      const tick = protocol.parseRestTicker(body, market, RECEIVED_AT)
      if (tick !== undefined) assertTick(tick, samples)
    }
  }

  it("the untouched samples yield ticks (so the mutations below start from live paths)", () => {
    for (const raw of samples.tickerFrames) expect(protocol.parseFrame(raw, markets, RECEIVED_AT).ticks.length).toBeGreaterThan(0)
    for (const { market, body } of samples.restBodies) expect(protocol.parseRestTicker(body, market, RECEIVED_AT)).toBeDefined()
  })

  it("arbitrary text and arbitrary JSON", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json(), fc.string({ unit: "binary" })), (raw) => {
        parse(raw)
        parseRest(raw)
      }),
      { numRuns: RUNS }
    )
  })

  it("truncated samples", () => {
    const all = [...frames, ...samples.restBodies.map((r) => r.body)]
    fc.assert(
      fc.property(fc.constantFrom(...all).chain(truncatedArb), (raw) => {
        parse(raw)
        parseRest(raw)
      }),
      { numRuns: RUNS }
    )
  })

  it("frames with fields replaced by wrong types, hostile numbers or unknown channel names", () => {
    const jsonFrames = frames.filter((f) => f.startsWith("{"))
    fc.assert(fc.property(fc.constantFrom(...jsonFrames).chain(mutatedArb), parse), { numRuns: RUNS * 3 })
  })

  it("REST bodies with fields replaced the same way", () => {
    const bodies = samples.restBodies.map((r) => r.body)
    fc.assert(fc.property(fc.constantFrom(...bodies).chain(mutatedArb), parseRest), { numRuns: RUNS * 2 })
  })

  it("every hostile number in a price field is dropped, never passed on", () => {
    for (const raw of samples.tickerFrames) {
      for (const hostile of ['"1e400"', "1e400", '"NaN"', '"-1"', "-1", "0", '""', "null"]) {
        const text = raw.replace(/("(?:price|best_bid|best_ask|b|a|k|bid|ask|last|highest_bid|lowest_ask|bidPx|askPx)":)("[^"]*"|[-0-9.e]+)/g, `$1${hostile}`)
        const frame = protocol.parseFrame(text, markets, RECEIVED_AT)
        assertFrame(frame, samples)
        expect(frame.ticks).toEqual([])
      }
    }
  })
})

describe("positiveDecimal", () => {
  /** The specification the hand-written character checks must match. */
  const PLAIN_DECIMAL = /^(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/
  const reference = (s: string): number | undefined => {
    const n = Number(s)
    return s.length <= 64 && PLAIN_DECIMAL.test(s) && n > 0 && Number.isFinite(n) ? n : undefined
  }

  it("accepts exactly the plain positive finite decimals", () => {
    const tricky = fc.string({ unit: fc.constantFrom(..."0123456789.eE+-xXoObB _I\t"), maxLength: 10 })
    fc.assert(
      fc.property(fc.oneof(tricky, fc.string(), fc.double().map(String)), (s) => {
        expect(positiveDecimal(s)).toBe(reference(s))
      }),
      { numRuns: 5_000 }
    )
  })
})

describe("parsers and pathological JSON", () => {
  it("deeply nested or huge frames do not throw", () => {
    const deep = "[".repeat(200_000) + "]".repeat(200_000)
    const wide = JSON.stringify({ data: Array.from({ length: 5_000 }, () => ({ symbol: "X", last: "1" })) })
    for (const protocol of Object.values(PROTOCOLS)) {
      for (const raw of [deep, wide, "\u0000", "\uD800"]) {
        expect(() => protocol.parseFrame(raw, new Map(), RECEIVED_AT)).not.toThrow()
        expect(() => protocol.parseRestTicker(raw, { asset: "X", quote: "Y", symbol: "X" }, RECEIVED_AT)).not.toThrow()
      }
    }
  })
})

describe("error frames with hostile codes", () => {
  it("never throw when a code is an object that cannot become text", async () => {
    const { PROTOCOLS } = await import("../src/domain/exchanges/index.ts")
    const hostile = { toString: "" }
    const frames = [
      JSON.stringify({ id: 0, method: "subscribe", code: hostile, result: {} }),
      JSON.stringify({ event: "error", code: hostile, msg: 1 }),
      JSON.stringify({ event: "notice", code: hostile })
    ]
    for (const protocol of Object.values(PROTOCOLS)) {
      for (const frame of frames) expect(() => protocol.parseFrame(frame, new Map(), Date.now())).not.toThrow()
    }
  })
})
