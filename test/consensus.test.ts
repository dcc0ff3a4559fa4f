import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { consensus, median, sourcePrice } from "../src/domain/consensus.ts"
import { EXCHANGES, type SourceQuote, type Tick } from "../src/domain/price.ts"

const quote = (price: number, i = 0): SourceQuote => ({
  exchange: EXCHANGES[i % EXCHANGES.length] ?? "coinbase",
  price,
  bid: null,
  ask: null,
  ts: 1_700_000_000_000,
  age_ms: 0
})
const quotes = (prices: ReadonlyArray<number>): ReadonlyArray<SourceQuote> => prices.map(quote)

const tick = (fields: Partial<Pick<Tick, "last" | "bid" | "ask">>): Tick => ({
  exchange: "okx",
  asset: "BTC",
  quote: "USDT",
  last: undefined,
  bid: undefined,
  ask: undefined,
  exchangeTs: undefined,
  receivedAt: 0,
  ...fields
})

const finite = fc.double({ min: -1e9, max: 1e9, noNaN: true })
const price = fc.double({ min: 1e-6, max: 1e9, noNaN: true })
const maxDeviation = fc.double({ min: 0, max: 2_000, noNaN: true })

/** A permutation of xs driven by random sort keys. */
const permutationOf = <A>(xs: ReadonlyArray<A>): fc.Arbitrary<ReadonlyArray<A>> =>
  fc
    .array(fc.double({ noNaN: true }), { minLength: xs.length, maxLength: xs.length })
    .map((keys) => xs.map((x, i) => [keys[i] ?? 0, x] as const).sort((a, b) => a[0] - b[0]).map(([, x]) => x))

describe("median", () => {
  it("answers the middle value, or the mean of the two middle values", () => {
    expect(median([5])).toBe(5)
    expect(median([3, 1, 2])).toBe(2)
    expect(median([4, 1, 3, 2])).toBe(2.5)
    expect(median([1, 1, 100, 100])).toBe(50.5)
  })

  it("has at least half the values on each side, lies within [min, max], ignores order", () => {
    fc.assert(
      fc.property(
        fc.array(finite, { minLength: 1, maxLength: 25 }).chain((xs) => fc.tuple(fc.constant(xs), permutationOf(xs))),
        ([xs, shuffled]) => {
          const m = median(xs)
          expect(m).toBeGreaterThanOrEqual(Math.min(...xs))
          expect(m).toBeLessThanOrEqual(Math.max(...xs))
          expect(xs.filter((x) => x <= m).length * 2).toBeGreaterThanOrEqual(xs.length)
          expect(xs.filter((x) => x >= m).length * 2).toBeGreaterThanOrEqual(xs.length)
          if (xs.length % 2 === 1) expect(xs).toContain(m)
          // Numerically equal: 0 and -0 compare equal, so which of them a stable sort puts in the middle depends on order.
          expect(median(shuffled) === m).toBe(true)
        }
      )
    )
  })

  it("does not modify its input", () => {
    const xs = [3, 1, 2]
    median(xs)
    expect(xs).toEqual([3, 1, 2])
  })
})

describe("sourcePrice", () => {
  it("takes the mid of an uncrossed book", () => {
    expect(sourcePrice(tick({ bid: 100, ask: 102, last: 250 }))).toEqual({ price: 101, basis: "mid" })
    expect(sourcePrice(tick({ bid: 100, ask: 100 }))).toEqual({ price: 100, basis: "mid" })
  })

  it("falls back to last when the book is crossed or one-sided, and gives nothing without either", () => {
    expect(sourcePrice(tick({ bid: 977.59, ask: 977.35, last: 977.65 }))).toEqual({ price: 977.65, basis: "last" })
    expect(sourcePrice(tick({ bid: 100, last: 99 }))).toEqual({ price: 99, basis: "last" })
    expect(sourcePrice(tick({ ask: 100 }))).toBeUndefined()
    expect(sourcePrice(tick({ bid: 102, ask: 100 }))).toBeUndefined()
    expect(sourcePrice(tick({}))).toBeUndefined()
  })

  it("rejects non-positive or non-finite inputs even if a parser let one through", () => {
    expect(sourcePrice(tick({ bid: 0, ask: 100, last: 5 }))).toEqual({ price: 5, basis: "last" })
    expect(sourcePrice(tick({ bid: 1, ask: Number.POSITIVE_INFINITY }))).toBeUndefined()
    expect(sourcePrice(tick({ last: Number.NaN }))).toBeUndefined()
  })

  it("a mid always lies between bid and ask, even for extreme prices", () => {
    fc.assert(
      fc.property(fc.double({ min: 1e-300, max: 1.7e308, noNaN: true }), fc.double({ min: 1e-300, max: 1.7e308, noNaN: true }), (a, b) => {
        const [bid, ask] = a <= b ? [a, b] : [b, a]
        const result = sourcePrice(tick({ bid, ask }))
        expect(result?.basis).toBe("mid")
        expect(result?.price).toBeGreaterThanOrEqual(bid)
        expect(result?.price).toBeLessThanOrEqual(ask)
      })
    )
  })
})

describe("consensus", () => {
  it("is undefined without sources", () => {
    expect(consensus([], 100)).toBeUndefined()
    expect(consensus(quotes([0, -1, Number.NaN]), 100)).toBeUndefined()
  })

  it("rejects a source far from the median of the others and prices the rest", () => {
    const result = consensus(quotes([100, 101, 100.5, 150]), 100)
    expect(result?.price).toBe(100.5)
    expect(result?.used.map((q) => q.price)).toEqual([100, 101, 100.5])
    expect(result?.rejected.map((q) => q.price)).toEqual([150])
    expect(result?.spread_bps).toBe(99.5)
  })

  it("rejects nothing with one or two sources, however far apart", () => {
    expect(consensus(quotes([100]), 1)).toMatchObject({ price: 100, rejected: [], spread_bps: 0 })
    const two = consensus(quotes([100, 300]), 1)
    expect(two).toMatchObject({ price: 200, rejected: [], spread_bps: 10_000 })
  })

  it("rejects invalid prices up front", () => {
    const result = consensus(quotes([100, Number.NaN, 0, 101]), 10)
    expect(result?.used.map((q) => q.price)).toEqual([100, 101])
    expect(result?.rejected).toHaveLength(2)
  })

  it("uses everyone when every source disagrees with the others (2-2 split)", () => {
    const result = consensus(quotes([100, 100, 200, 200]), 50)
    expect(result).toMatchObject({ price: 150, rejected: [] })
  })

  it("price, used set and spread do not depend on the order of sources", () => {
    fc.assert(
      fc.property(
        fc.array(price, { minLength: 1, maxLength: 9 }).chain((ps) => fc.tuple(fc.constant(ps), permutationOf(ps))),
        maxDeviation,
        ([ps, shuffled], maxDev) => {
          const a = consensus(quotes(ps), maxDev)
          const b = consensus(quotes(shuffled), maxDev)
          expect(b?.price).toBe(a?.price)
          expect(b?.spread_bps).toBe(a?.spread_bps)
          const sortedUsed = (c: typeof a) => (c?.used ?? []).map((q) => q.price).sort((x, y) => x - y)
          expect(sortedUsed(b)).toEqual(sortedUsed(a))
        }
      )
    )
  })

  it("stays within [min, max] of the inputs, never rejects all, and partitions the sources", () => {
    fc.assert(
      fc.property(fc.array(price, { minLength: 1, maxLength: 12 }), maxDeviation, (ps, maxDev) => {
        const result = consensus(quotes(ps), maxDev)
        expect(result).toBeDefined()
        expect(result?.price).toBeGreaterThanOrEqual(Math.min(...ps))
        expect(result?.price).toBeLessThanOrEqual(Math.max(...ps))
        expect(result?.used.length).toBeGreaterThan(0)
        expect((result?.used.length ?? 0) + (result?.rejected.length ?? 0)).toBe(ps.length)
        expect(result?.spread_bps).toBeGreaterThanOrEqual(0)
      })
    )
  })

  it("one arbitrary outlier among >= 3 honest clustered sources cannot move the price outside them", () => {
    const scenario = fc
      .record({
        maxDev: fc.double({ min: 0, max: 1_000, noNaN: true }),
        base: fc.double({ min: 1e-3, max: 1e7, noNaN: true }),
        honestCount: fc.integer({ min: 3, max: 8 }),
        outlier: fc.oneof(price, fc.double({ min: 1e-9, max: 1e15, noNaN: true })),
        position: fc.nat()
      })
      .chain((s) =>
        fc
          .array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: s.honestCount, maxLength: s.honestCount })
          .map((fractions) => ({
            ...s,
            // Spread of the honest cluster: within maxDev/4 bps of its lowest member.
            honest: fractions.map((f) => s.base * (1 + (f * s.maxDev) / 4 / 1e4))
          }))
      )
    fc.assert(
      fc.property(scenario, ({ maxDev, honest, outlier, position }) => {
        const at = position % (honest.length + 1)
        const all = [...honest.slice(0, at), outlier, ...honest.slice(at)]
        const result = consensus(quotes(all), maxDev)
        expect(result?.price).toBeGreaterThanOrEqual(Math.min(...honest))
        expect(result?.price).toBeLessThanOrEqual(Math.max(...honest))
        // No honest source is thrown out because of the outlier.
        for (const h of honest) expect(result?.used.some((q) => q.price === h)).toBe(true)
      }),
      { numRuns: 500 }
    )
  })
})
