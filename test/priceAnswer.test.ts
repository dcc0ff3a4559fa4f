import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { EXCHANGES, type Tick } from "../src/domain/price.ts"
import { compileAnswer } from "../src/domain/priceAnswer.ts"

const NOW = 1_764_000_000_000
const STALE_MS = 30_000

const tickArb: fc.Arbitrary<Tick> = fc.record({
  exchange: fc.constantFrom(...EXCHANGES),
  asset: fc.constant("BTC"),
  quote: fc.constant("USD"),
  last: fc.double({ min: 90_000, max: 91_000, noNaN: true }),
  bid: fc.constant(undefined),
  ask: fc.constant(undefined),
  exchangeTs: fc.integer({ min: NOW - 10_000, max: NOW }),
  receivedAt: fc.constant(NOW)
})

interface Rendered {
  readonly ts: number
  readonly age_ms: number
  readonly sources: ReadonlyArray<{ readonly ts: number; readonly age_ms: number }>
}

describe("compileAnswer render", () => {
  it("gives every render the ages of its own instant, whatever instants came before (renders are reused within one)", () => {
    // Repeated and out-of-order instants: a reused render must never leak into another instant.
    const instants = fc.array(fc.integer({ min: NOW - 20_000, max: NOW + 5_000 }), { minLength: 1, maxLength: 30 })
      .chain((xs) => fc.shuffledSubarray([...xs, ...xs], { minLength: xs.length }))
    fc.assert(
      fc.property(fc.uniqueArray(tickArb, { minLength: 1, maxLength: 6, selector: (t) => t.exchange }), instants, (ticks, ats) => {
        // Every tick is fresh and priced, so there is always an answer to render.
        const answer = compileAnswer("BTC", "USD", ticks, undefined, NOW, STALE_MS, 10_000)
        expect(answer).toBeDefined()
        if (answer === undefined) return
        for (const at of ats) {
          const data = JSON.parse(answer.render(at)) as Rendered
          expect(data.age_ms).toBe(Math.max(0, at - data.ts))
          for (const s of data.sources) expect(s.age_ms).toBe(Math.max(0, at - s.ts))
        }
      })
    )
  })
})
