import { Context, Layer } from "effect"
import { COUNTER_NAMES, type CounterName, countersToRecord, GAUGES } from "../domain/runtimeCounters.ts"

/**
 * Process-wide counters, bumped synchronously on the hot path (a typed-array increment).
 * Gauges (buffer sizes, in-flight lookups) are `set` by their owners.
 */
export class RuntimeStats extends Context.Service<RuntimeStats, {
  readonly values: Float64Array
  readonly startedAt: number
  readonly snapshot: () => Record<CounterName, number>
  readonly reset: () => void
}>()("tb/RuntimeStats") {
  static readonly layer = Layer.sync(RuntimeStats, () => {
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
}
