import { Context, Data, type Effect, Schema } from "effect"
import type { UsageRow } from "../domain/usage.ts"
import type { UsageChunk, UsageFacts } from "../domain/usageChunk.ts"

export class UsageWriteError extends Data.TaggedError("UsageWriteError")<{
  readonly reason: "Database" | "Queue"
  readonly message: string
}> {}

/** Where batches of usage rows go: the database (multi-row insert) or SQS. */
export class UsageWriter extends Context.Service<UsageWriter, {
  readonly kind: "database" | "sqs"
  /** All or nothing: on failure none of the rows counts as written (a retry may write some twice; ids make that harmless). */
  readonly write: (rows: ReadonlyArray<UsageRow>) => Effect.Effect<void, UsageWriteError>
  /** The serving thread's chunks as they are (SQS ships their columns without making rows). All or nothing, as `write`. */
  readonly writeChunks: (chunks: ReadonlyArray<UsageChunk>) => Effect.Effect<void, UsageWriteError>
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

/**
 * Rows waiting for the writer (on the usage thread): `usage_batch_size` rows or `usage_flush_ms`
 * per write, retried on failure, spilled to the spool past `usage_buffer_max_rows`, flushed on
 * shutdown. `add` is synchronous.
 */
export class UsageBatcher extends Context.Service<UsageBatcher, {
  readonly add: (row: UsageRow) => void
  readonly stats: () => UsageSinkStats
}>()("tb/UsageBatcher") {}
