import { Layer } from "effect"
import { COUNTER_NAMES, countersToRecord, GAUGES } from "../domain/runtimeCounters.ts"
import { RuntimeStats } from "../services/RuntimeStats.ts"

/** The counters in one typed array; reset keeps the gauges, which their owners set. */
export const RuntimeStatsLive = Layer.sync(RuntimeStats, () => {
  const values = new Float64Array(COUNTER_NAMES.length)
  return RuntimeStats.of({
    values,
    startedAt: Date.now(),
    snapshot: () => countersToRecord(values),
    reset: () => {
      const kept = GAUGES.map((i) => values[i] ?? 0)
      values.fill(0)
      GAUGES.forEach((i, n) => void (values[i] = kept[n] ?? 0))
    }
  })
})
