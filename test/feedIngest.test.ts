import { describe, expect, it } from "vitest"
import { measureFeedIngest, sampleFrames } from "../bench/feedIngest.ts"
import { EXCHANGES } from "../src/domain/price.ts"

describe("feed ingest benchmark", () => {
  it("samples frames from every exchange's simulator", () => {
    const frames = sampleFrames(4, 5)
    expect(new Set(frames.map((f) => f.exchange))).toEqual(new Set(EXCHANGES))
  })

  it("measures ticks through parser and cache against a JSON.parse baseline", () => {
    const r = measureFeedIngest({ durationMs: 60, warmupMs: 10, rounds: 4, marketsPerExchange: 5 })
    for (const e of EXCHANGES) expect(r.ticksByExchange[e]).toBeGreaterThan(0)
    expect(r.ticksPerPass).toBe(Object.values(r.ticksByExchange).reduce((a, b) => a + b, 0))
    expect(r.ticksPerSec).toBeGreaterThan(0)
    expect(r.baselinePerSec).toBeGreaterThan(0)
    expect(r.ratio).toBeCloseTo(r.ticksPerSec / r.baselinePerSec, 10)
  })
})
