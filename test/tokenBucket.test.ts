import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { type BucketLimits, type BucketState, debit, fullBucket, refill, tryTake } from "../src/domain/tokenBucket.ts"

const EPS = 1e-9

/** Rates in quarter tokens/s are exact binary fractions, so the exact-count bound needs no slack. */
const limitsArb: fc.Arbitrary<BucketLimits> = fc.record({
  ratePerSec: fc.integer({ min: 0, max: 40_000 }).map((q) => q / 4),
  burst: fc.integer({ min: 0, max: 200 })
})
const positiveLimitsArb: fc.Arbitrary<BucketLimits> = fc.record({
  ratePerSec: fc.oneof(fc.integer({ min: 1, max: 40_000 }).map((q) => q / 4), fc.double({ min: 0.001, max: 1e5, noNaN: true })),
  burst: fc.integer({ min: 1, max: 200 })
})
const epochArb = fc.integer({ min: 0, max: 2_000_000_000_000 })

/** Any state a bucket can be in, including debt down to -burst and a stale over-full state. */
const stateFor = (limits: BucketLimits) =>
  fc.record({
    tokens: fc.double({ min: -limits.burst, max: limits.burst * 2, noNaN: true }),
    updatedAt: epochArb
  })

describe("tokenBucket", () => {
  it("a full bucket allows exactly floor(burst) immediate takes", () => {
    fc.assert(
      fc.property(limitsArb, epochArb, (limits, now) => {
        let state = fullBucket(limits, now)
        let allowed = 0
        for (let i = 0; i < limits.burst + 5; i++) {
          const r = tryTake(state, limits, now)
          state = r.state
          if (r.allowed) allowed++
        }
        expect(allowed).toBe(Math.floor(limits.burst))
      })
    )
  })

  it("tokens never exceed burst, whatever the sequence of operations and clock jumps", () => {
    const op = fc.record({
      kind: fc.constantFrom("take", "debit", "refill"),
      dt: fc.integer({ min: -5_000, max: 60_000 }),
      n: fc.integer({ min: 0, max: 20 })
    })
    fc.assert(
      fc.property(limitsArb, epochArb, fc.array(op, { maxLength: 60, size: "max" }), (limits, start, ops) => {
        let state: BucketState = fullBucket(limits, start)
        let now = start
        for (const o of ops) {
          now += o.dt
          state = o.kind === "take"
            ? tryTake(state, limits, now, o.n).state
            : o.kind === "debit"
            ? debit(state, limits, now, o.n)
            : refill(state, limits, now)
          expect(state.tokens).toBeLessThanOrEqual(limits.burst)
        }
      })
    )
  })

  it("over [0,T] the tokens granted never exceed burst + rate*T/1000 (exact)", () => {
    const attempt = fc.record({ dt: fc.integer({ min: 0, max: 500 }), n: fc.integer({ min: 1, max: 3 }) })
    fc.assert(
      fc.property(limitsArb, epochArb, fc.array(attempt, { maxLength: 300, size: "max" }), (limits, start, attempts) => {
        let state = fullBucket(limits, start)
        let now = start
        let granted = 0
        for (const a of attempts) {
          now += a.dt
          const r = tryTake(state, limits, now, a.n)
          state = r.state
          if (r.allowed) granted += a.n
        }
        expect(granted).toBeLessThanOrEqual(limits.burst + (limits.ratePerSec * (now - start)) / 1000)
      }),
      { numRuns: 300 }
    )
  })

  it("a steady client polling every ms gets the sustained rate, not less", () => {
    // rate <= 1000/s and burst >= 2: each poll takes what one ms adds, so no refill overflows the burst.
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1_000 }), fc.integer({ min: 2, max: 50 }), (rate, burst) => {
        const limits = { ratePerSec: rate, burst }
        let state = fullBucket(limits, 0)
        let granted = 0
        for (let t = 0; t <= 1_000; t++) {
          const r = tryTake(state, limits, t)
          state = r.state
          if (r.allowed) granted++
        }
        // Exactly burst + rate in real arithmetic; float sums may land the last token a hair late.
        expect(granted).toBeGreaterThanOrEqual(Math.min(burst + rate, 1001) - 1)
        expect(granted).toBeLessThanOrEqual(burst + rate)
      }),
      { numRuns: 50 }
    )
  })

  it("a denied take succeeds after waiting retryAfterMs, and not 1 ms earlier", () => {
    fc.assert(
      fc.property(
        positiveLimitsArb.chain((limits) =>
          fc.tuple(fc.constant(limits), stateFor(limits), fc.integer({ min: 0, max: 10_000 }), fc.integer({ min: 1, max: limits.burst }))
        ),
        ([limits, state, dt, n]) => {
          const now = state.updatedAt + dt
          const r = tryTake(state, limits, now, n)
          if (r.allowed) {
            expect(r.retryAfterMs).toBe(0)
            return
          }
          expect(Number.isInteger(r.retryAfterMs)).toBe(true)
          expect(r.retryAfterMs).toBeGreaterThan(0)
          expect(tryTake(r.state, limits, now + r.retryAfterMs, n).allowed).toBe(true)
          if (r.retryAfterMs > 1) expect(tryTake(r.state, limits, now + r.retryAfterMs - 1, n).allowed).toBe(false)
        }
      ),
      { numRuns: 500 }
    )
  })

  it("retryAfterMs is exact where the closed form rounds up one ms too many", () => {
    // (1 - 0.059) * 1000 / 1 = 941.0000000000001 in floats, yet 0.059 + 0.941 reaches 1.
    const limits = { ratePerSec: 1, burst: 5 }
    const r = tryTake({ tokens: 0.059, updatedAt: 0 }, limits, 0)
    expect(r.retryAfterMs).toBe(941)
    expect(tryTake(r.state, limits, 941).allowed).toBe(true)
  })

  it("retryAfterMs is exact where the closed form comes out one ms short", () => {
    // ceil(1.001 * 1000 / 7) = 143, yet -0.001 + 7 * 143 / 1000 is a hair below 1 in floats.
    const limits = { ratePerSec: 7, burst: 5 }
    const r = tryTake({ tokens: -0.001, updatedAt: 0 }, limits, 0)
    expect(r.retryAfterMs).toBe(144)
    expect(tryTake(r.state, limits, 144).allowed).toBe(true)
  })

  it("remaining is floor(tokens) after the attempt and never negative", () => {
    fc.assert(
      fc.property(
        limitsArb.chain((l) => fc.tuple(fc.constant(l), stateFor(l), fc.integer({ min: 0, max: 5_000 }), fc.integer({ min: 0, max: 5 }))),
        ([limits, state, dt, n]) => {
          const r = tryTake(state, limits, state.updatedAt + dt, n)
          expect(r.remaining).toBe(Math.max(0, Math.floor(r.state.tokens)))
          expect(r.remaining).toBeGreaterThanOrEqual(0)
          if (r.allowed) expect(r.state.tokens).toBeCloseTo(refill(state, limits, state.updatedAt + dt).tokens - n, 6)
        }
      )
    )
  })

  it("refill is monotonic in time and composes", () => {
    fc.assert(
      fc.property(
        limitsArb.chain((l) => fc.tuple(fc.constant(l), stateFor(l))),
        fc.integer({ min: 0, max: 100_000 }),
        fc.integer({ min: 0, max: 100_000 }),
        ([limits, state], d1, d2) => {
          const t1 = state.updatedAt + d1
          const t2 = t1 + d2
          const early = refill(state, limits, t1)
          const late = refill(state, limits, t2)
          expect(early.tokens).toBeLessThanOrEqual(late.tokens + EPS)
          expect(Math.abs(refill(early, limits, t2).tokens - late.tokens)).toBeLessThan(EPS * Math.max(1, limits.burst))
        }
      )
    )
  })

  it("refill adds rate*elapsed up to burst", () => {
    const limits = { ratePerSec: 5, burst: 10 }
    const empty = { tokens: 0, updatedAt: 1_000 }
    expect(refill(empty, limits, 1_200).tokens).toBe(1)
    expect(refill(empty, limits, 2_000).tokens).toBe(5)
    expect(refill(empty, limits, 60_000).tokens).toBe(10)
    expect(refill(empty, limits, 2_000).updatedAt).toBe(2_000)
  })

  it("a clock going backwards never adds tokens and keeps updatedAt", () => {
    fc.assert(
      fc.property(
        limitsArb.chain((l) => fc.tuple(fc.constant(l), stateFor(l))),
        fc.integer({ min: 1, max: 1_000_000 }),
        ([limits, state], back) => {
          const now = state.updatedAt - back
          const refilled = refill(state, limits, now)
          expect(refilled.tokens).toBeLessThanOrEqual(state.tokens)
          expect(refilled.updatedAt).toBe(state.updatedAt)
          const taken = tryTake(state, limits, now)
          expect(taken.state.tokens).toBeLessThanOrEqual(state.tokens)
          expect(taken.state.updatedAt).toBe(state.updatedAt)
        }
      )
    )
  })

  it("debit subtracts but never goes below -burst*debtCapFactor", () => {
    fc.assert(
      fc.property(
        limitsArb.chain((l) => fc.tuple(fc.constant(l), stateFor(l))),
        fc.integer({ min: 0, max: 10_000 }),
        fc.double({ min: 0, max: 1e6, noNaN: true }),
        fc.option(fc.double({ min: 0, max: 10, noNaN: true }), { nil: undefined }),
        ([limits, state], dt, n, factor) => {
          const now = state.updatedAt + dt
          const after = debit(state, limits, now, n, factor)
          const floor = -limits.burst * (factor ?? 1)
          expect(after.tokens).toBeGreaterThanOrEqual(floor)
          const expected = Math.max(floor, refill(state, limits, now).tokens - n)
          expect(after.tokens).toBeCloseTo(expected, 9)
        }
      )
    )
  })

  it("a debt is paid back by refill at the configured rate", () => {
    const limits = { ratePerSec: 10, burst: 10 }
    const indebted = debit(fullBucket(limits, 0), limits, 0, 1_000)
    expect(indebted.tokens).toBe(-10)
    expect(tryTake(indebted, limits, 0).retryAfterMs).toBe(1_100)
    expect(tryTake(indebted, limits, 1_100).allowed).toBe(true)
  })

  it("rate 0: the burst is all there will ever be", () => {
    const limits = { ratePerSec: 0, burst: 3 }
    let state = fullBucket(limits, 0)
    for (let i = 0; i < 3; i++) {
      const r = tryTake(state, limits, i)
      expect(r.allowed).toBe(true)
      state = r.state
    }
    const denied = tryTake(state, limits, 1e12)
    expect(denied.allowed).toBe(false)
    expect(denied.remaining).toBe(0)
    expect(denied.retryAfterMs).toBe(Number.POSITIVE_INFINITY)
  })

  it("burst 0: nothing is ever allowed except taking 0", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000 }), epochArb, fc.integer({ min: 0, max: 1e9 }), (rate, start, dt) => {
        const limits = { ratePerSec: rate, burst: 0 }
        const state = fullBucket(limits, start)
        const r = tryTake(state, limits, start + dt)
        expect(r.allowed).toBe(false)
        expect(r.retryAfterMs).toBe(Number.POSITIVE_INFINITY)
        expect(tryTake(state, limits, start + dt, 0).allowed).toBe(true)
      })
    )
  })

  it("asking for more than burst is denied with an infinite wait", () => {
    const limits = { ratePerSec: 100, burst: 5 }
    const r = tryTake(fullBucket(limits, 0), limits, 0, 6)
    expect(r.allowed).toBe(false)
    expect(r.remaining).toBe(5)
    expect(r.retryAfterMs).toBe(Number.POSITIVE_INFINITY)
  })

  it("rejects a negative take", () => {
    const limits = { ratePerSec: 1, burst: 1 }
    expect(() => tryTake(fullBucket(limits, 0), limits, 0, -1)).toThrow(RangeError)
  })
})

describe("debit regressions", () => {
  it("raises a state already below the debt floor even when nothing is debited", () => {
    const after = debit({ tokens: -5e-324, updatedAt: 0 }, { ratePerSec: 0, burst: 1 }, 0, 0, 0)
    expect(after.tokens).toBeGreaterThanOrEqual(0)
    const deep = debit({ tokens: -50, updatedAt: 0 }, { ratePerSec: 0, burst: 10 }, 0, 0)
    expect(deep.tokens).toBe(-10)
  })
})
