import { Context, Layer } from "effect"
import { COUNTER_NAMES, type CounterName, countersToRecord } from "../domain/runtimeCounters.ts"

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
      reset: () => values.fill(0)
    })
  })
}
