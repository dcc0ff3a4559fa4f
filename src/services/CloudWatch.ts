import { Context, Data, type Effect } from "effect"
import type { Datum } from "../domain/minuteFigures.ts"

/**
 * `refused`: CloudWatch answered that it will never take these datums (a 4xx other than
 * throttling); sending them again is pointless. Otherwise (throttled, 5xx, network) a later try
 * may succeed.
 */
export class CloudWatchError extends Data.TaggedError("CloudWatchError")<{
  readonly refused: boolean
  readonly message: string
}> {}

/** Amazon CloudWatch metrics: one PutMetricData call per `put` (at most 1,000 datums). */
export class CloudWatch extends Context.Service<CloudWatch, {
  readonly put: (namespace: string, datums: ReadonlyArray<Datum>) => Effect.Effect<void, CloudWatchError>
}>()("tb/CloudWatch") {}

/** PutMetricData's limit on datums per call. */
export const CLOUDWATCH_MAX_DATUMS = 1_000
