import { Context, Data, type Effect, Schema } from "effect"
import type { UsageFacts } from "../domain/usageChunk.ts"

export class UsageWriteError extends Data.TaggedError("UsageWriteError")<{
  readonly reason: "Database" | "Queue"
  readonly message: string
}> {}

/** A body the destination will never take (its rows refused), and why. */
export interface RefusedBody {
  readonly body: string
  readonly reason: string
}

/**
 * Where the usage thread's batches go: `usage_log` message bodies (src/domain/usageQueueMessage.ts)
 * to SQS, or stored in the database as the queued writer stores them. All or nothing: on failure
 * none of the bodies counts as written (a retry may write some twice; ids make that harmless).
 * Bodies the destination can never take are answered back, for the spool's `.bad` files.
 */
export class UsageWriter extends Context.Service<UsageWriter, {
  readonly kind: "database" | "sqs"
  readonly write: (bodies: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<RefusedBody>, UsageWriteError>
}>()("tb/UsageWriter") {}

export const UsageSinkStats = Schema.Struct({
  buffered: Schema.Number,
  written: Schema.Number,
  batches: Schema.Number,
  failures: Schema.Number,
  spooled: Schema.Number,
  replayed: Schema.Number,
  lastBatchMs: Schema.Number
})
export type UsageSinkStats = typeof UsageSinkStats.Type

export const ZERO_USAGE_STATS: UsageSinkStats = { buffered: 0, written: 0, batches: 0, failures: 0, spooled: 0, replayed: 0, lastBatchMs: 0 }

/** Counts of two sinks (or of threads that ran one after the other) together; the later batch time wins. */
export const addUsageStats = (a: UsageSinkStats, b: UsageSinkStats): UsageSinkStats => ({
  buffered: a.buffered + b.buffered,
  written: a.written + b.written,
  batches: a.batches + b.batches,
  failures: a.failures + b.failures,
  spooled: a.spooled + b.spooled,
  replayed: a.replayed + b.replayed,
  lastBatchMs: b.lastBatchMs
})

/**
 * Every served request's usage row, as the hot path hands it over: the request's facts, after the
 * answer is sent. `record` is synchronous and never blocks the answer; the row gets its id and is
 * written in batches in the background, spilled to disk when the writer is down, and flushed on
 * shutdown.
 */
export class UsageSink extends Context.Service<UsageSink, {
  readonly record: (facts: UsageFacts) => void
  readonly stats: () => UsageSinkStats
}>()("tb/UsageSink") {}
