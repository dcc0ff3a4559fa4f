import { describe, expect, it } from "vitest"
import { progressLine } from "../src/programs/sync/program.ts"

describe("tb sync progress line (stderr on a terminal)", () => {
  it("rows, batches, rate, share done and ETA: from the planner's estimate, else from the share of the range read", () => {
    // 30,000 of 120,000 expected rows in 10 s: 3,000 rows/s, 25 %, 30 s to go.
    expect(progressLine({ rows: 30_000, batches: 15, elapsedMs: 10_000, expectedRows: 120_000, rangeDone: 0.9 }))
      .toBe("sync: 30,000 rows  15 batches  3,000 rows/s  25% ETA 30s")
    // No estimate: half the range read in 100 s leaves 100 s.
    expect(progressLine({ rows: 500, batches: 1, elapsedMs: 100_000, expectedRows: undefined, rangeDone: 0.5 }))
      .toBe("sync: 500 rows  1 batches  5 rows/s  50% ETA 1m40s")
    // Past the estimate (rows came in since the planner counted): 100 %, no ETA.
    expect(progressLine({ rows: 200, batches: 1, elapsedMs: 3_600_000, expectedRows: 100, rangeDone: 0.2 }))
      .toBe("sync: 200 rows  1 batches  0 rows/s  100%")
    expect(progressLine({ rows: 1_000, batches: 1, elapsedMs: 1_000, expectedRows: 4_000_000, rangeDone: 0 }))
      .toBe("sync: 1,000 rows  1 batches  1,000 rows/s  0% ETA 1h06m")
  })
})
