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

/**
 * Every served request's usage row. `record` is synchronous and never blocks the answer; rows are
 * written in batches in the background, spilled to disk when the writer is down, and flushed on
 * shutdown.
 */
export class UsageSink extends Context.Service<UsageSink, {
  readonly record: (row: UsageRow) => void
  readonly stats: () => UsageSinkStats
}>()("tb/UsageSink") {}
