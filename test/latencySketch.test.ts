import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  bucketOf,
  bucketValue,
  decodeSketch,
  EMPTY_SKETCH,
  encodeSketch,
  type LatencySketch,
  mergeSketches,
  packSketch,
  quantile,
  sketchCount,
  sketchFromPairs,
  sketchOf,
  unpackSketch
} from "../src/domain/latencySketch.ts"

const MAX_LATENCY = 2 ** 31 - 1

/** PostgreSQL's percentile_disc(q), written out: the value of rank max(1, ceil(q·n)) ascending. */
const percentileDisc = (values: ReadonlyArray<number>, q: number): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.max(1, Math.ceil(q * sorted.length))
  return sorted[rank - 1]!
}

const withinOnePercent = (actual: number | undefined, exact: number) => {
  expect(actual).toBeDefined()
  expect(Math.abs(actual! - exact), `${actual} vs exact ${exact}`).toBeLessThanOrEqual(exact * 0.01)
}

/** Latencies as servers see them: zeros, a few µs, a lognormal-ish body, rare huge outliers. */
const latencyArb = fc.oneof(
  { weight: 1, arbitrary: fc.constant(0) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 300 }) },
  { weight: 4, arbitrary: fc.double({ min: 2, max: 16, noNaN: true }).map((e) => Math.round(Math.exp(e))) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: MAX_LATENCY }) }
)
const latenciesArb = fc.array(latencyArb, { minLength: 1, maxLength: 2000 })
const quantileArb = fc.oneof(fc.constantFrom(0, 0.5, 0.95, 0.99, 1), fc.double({ min: 0, max: 1, noNaN: true }))

const sketchArb: fc.Arbitrary<LatencySketch> = fc.array(latencyArb, { maxLength: 300 }).map(sketchOf)

describe("latencySketch", () => {
  it("stands for every integer latency by a value within 1 % (all up to 2 million, then sampled to 2^31)", () => {
    for (let x = 0; x <= 2_000_000; x++) {
      const value = bucketValue(bucketOf(x))
      if (Math.abs(value - x) > x * 0.01) expect.fail(`${x} → ${value}`)
    }
    fc.assert(fc.property(fc.integer({ min: 0, max: MAX_LATENCY }), (x) => {
      expect(Math.abs(bucketValue(bucketOf(x)) - x)).toBeLessThanOrEqual(x * 0.01)
    }), { numRuns: 20_000 })
  })

  it("answers small latencies exactly (0 and single-integer buckets)", () => {
    for (const x of [0, 1, 2, 3, 10, 50, 100, 120]) expect(bucketValue(bucketOf(x))).toBe(x)
    expect(bucketOf(0)).toBe(-1)
    expect(bucketOf(-5)).toBe(-1)
    expect(bucketOf(1)).toBe(0)
  })

  it("p50/p95/p99 and any quantile are within 1 % of percentile_disc over the same values", () => {
    fc.assert(fc.property(latenciesArb, quantileArb, (values, q) => {
      const sketch = sketchOf(values)
      withinOnePercent(quantile(sketch, q), percentileDisc(values, q))
      for (const p of [0.5, 0.95, 0.99]) withinOnePercent(quantile(sketch, p), percentileDisc(values, p))
    }), { numRuns: 500 })
  })

  it("uses percentile_disc's rank rule at the edges (q·n exactly an integer, q = 0, q = 1)", () => {
    // Two clusters far apart: the rule picks the cluster, so an off-by-one rank would be ~10x wrong.
    const values = [...Array.from({ length: 95 }, () => 100), ...Array.from({ length: 5 }, () => 1000)]
    expect(quantile(sketchOf(values), 0.95)).toBe(100)
    expect(quantile(sketchOf(values), 0.951)).toBe(1000)
    expect(quantile(sketchOf(values), 0)).toBe(100)
    expect(quantile(sketchOf(values), 1)).toBe(1000)
    expect(quantile(sketchOf([7]), 0.5)).toBe(7)
    expect(quantile(EMPTY_SKETCH, 0.5)).toBeUndefined()
  })

  it("merges by adding counts: the merge of two sketches is the sketch of both value sets", () => {
    fc.assert(fc.property(fc.array(latencyArb), fc.array(latencyArb), (a, b) => {
      const merged = mergeSketches(sketchOf(a), sketchOf(b))
      expect(merged).toEqual(sketchOf([...a, ...b]))
      expect(sketchCount(merged)).toBe(a.length + b.length)
    }))
    fc.assert(fc.property(sketchArb, sketchArb, sketchArb, (a, b, c) => {
      expect(mergeSketches(a, b)).toEqual(mergeSketches(b, a))
      expect(mergeSketches(mergeSketches(a, b), c)).toEqual(mergeSketches(a, mergeSketches(b, c)))
      expect(mergeSketches(a, EMPTY_SKETCH)).toEqual(a)
    }))
  })

  it("builds from (bucket, count) pairs in any order, as PostgreSQL's GROUP BY bucket gives them", () => {
    fc.assert(fc.property(fc.array(latencyArb), (values) => {
      const pairs = values.map((v) => [bucketOf(v), 1] as const).reverse()
      expect(sketchFromPairs(pairs)).toEqual(sketchOf(values))
    }))
  })

  it("round-trips through its compact text form", () => {
    fc.assert(fc.property(sketchArb, (sketch) => {
      const text = encodeSketch(sketch)
      expect(decodeSketch(text)).toEqual(sketch)
    }))
    expect(encodeSketch({ buckets: [-1, 0, 3], counts: [2, 1, 5] })).toBe("1:0x2,1,3x5")
    expect(encodeSketch(EMPTY_SKETCH)).toBe("1:")
  })

  it("round-trips through the packed bytes PostgreSQL aggregates into (int2 bucket, int4 count)", () => {
    fc.assert(fc.property(sketchArb, (sketch) => {
      const packed = packSketch(sketch)
      expect(packed.byteLength).toBe(sketch.buckets.length * 6)
      expect(unpackSketch(packed)).toEqual(sketch)
    }))
    // Big-endian, as int2send/int4send write them: the zero bucket once, bucket 2690 (2^31-1 µs) 2^31-1 times.
    expect([...packSketch({ buckets: [-1, 2690], counts: [1, 2 ** 31 - 1] })]).toEqual([0xff, 0xff, 0, 0, 0, 1, 0x0a, 0x82, 0x7f, 0xff, 0xff, 0xff])
    expect(() => packSketch({ buckets: [1], counts: [2 ** 31] })).toThrow(RangeError)
  })

  it("refuses any text it did not write, never answering part of a sketch", () => {
    for (const bad of ["", "2:1", "1:0,0", "1:-1", "1:1x0", "1:01", "1:1,", "1:1x", "1:x2", "1:1 ", "1:1,2,a"]) {
      expect(decodeSketch(bad), bad).toBeUndefined()
    }
    fc.assert(fc.property(fc.string(), (text) => {
      const decoded = decodeSketch(`1:${text}`)
      if (decoded !== undefined) expect(encodeSketch(decoded)).toBe(`1:${text}`)
    }))
  })
})
