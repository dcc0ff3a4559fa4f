import { Context, Data, type Effect, Schema } from "effect"
import type { UsageRow } from "../domain/usage.ts"

export class UsageWriteError extends Data.TaggedError("UsageWriteError")<{
  readonly reason: "Database" | "Queue"
  readonly message: string
}> {}

/** Where batches of usage rows go: the database (multi-row insert) or SQS. */
export class UsageWriter extends Context.Service<UsageWriter, {
  readonly kind: "database" | "sqs"
  readonly write: (rows: ReadonlyArray<UsageRow>) => Effect.Effect<void, UsageWriteError>
  /**
   * Rows already encoded as `encodeUsageLine` text, as chunks (lines joined by ","), written
   * without being decoded into objects first. Only writers that can ship the text as it is have
   * it (SQS). All or nothing: on failure none of the chunks counts as written.
   */
  readonly writeEncoded?: (chunks: ReadonlyArray<EncodedChunk>) => Effect.Effect<void, UsageWriteError>
}>()("tb/UsageWriter") {}

/** `rows` usage rows as `encodeUsageLine` texts joined by ",". */
export interface EncodedChunk {
  readonly chunk: string
  readonly rows: number
}

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
 * Every served request's usage row. `record` is synchronous and never blocks the answer; rows are
 * written in batches in the background, spilled to disk when the writer is down, and flushed on
 * shutdown.
 */
export class UsageSink extends Context.Service<UsageSink, {
  readonly record: (row: UsageRow) => void
  readonly stats: () => UsageSinkStats
}>()("tb/UsageSink") {}
