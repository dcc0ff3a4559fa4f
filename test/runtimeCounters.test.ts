import { describe, expect, it } from "vitest"
import { COUNTER, COUNTER_NAMES, countersToRecord } from "../src/domain/runtimeCounters.ts"

describe("runtime counters", () => {
  it("has 25 counters whose literal indexes match their positions", () => {
    expect(COUNTER_NAMES).toHaveLength(25)
    COUNTER_NAMES.forEach((name, i) => expect(COUNTER[name]).toBe(i))
    expect(Object.keys(COUNTER).sort()).toEqual([...COUNTER_NAMES].sort())
  })

  it("reads a values array back by name", () => {
    const values = new Float64Array(25).map((_, i) => i * 10)
    const record = countersToRecord(values)
    expect(record.requests_total).toBe(0)
    expect(record.cluster_reconcile_failures).toBe(230)
    expect(record.anonymous_rows_dropped).toBe(240)
  })
})
