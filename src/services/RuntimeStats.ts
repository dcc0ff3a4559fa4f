import { Context } from "effect"
import type { CounterName } from "../domain/runtimeCounters.ts"

/**
 * Process-wide counters, bumped synchronously on the hot path (a typed-array increment).
 * Gauges (buffer sizes, in-flight lookups) are `set` by their owners.
 */
export class RuntimeStats extends Context.Service<RuntimeStats, {
  readonly values: Float64Array
  readonly startedAt: number
  readonly snapshot: () => Record<CounterName, number>
  readonly reset: () => void
}>()("tb/RuntimeStats") {}
