import { Schema } from "effect"
import { UsageSinkStats } from "../services/UsageSink.ts"

/**
 * Messages between the serving thread (UsageSinkThreaded) and the usage thread (usageThread.ts).
 * Rows travel as chunks of `encodeUsageLine` text; the usage thread acknowledges a chunk once it is
 * written (to SQS or the database), or, after a failed write, once every row of it is in its sink,
 * from where it is written or spooled, never dropped.
 */
export const ToUsageThread = Schema.Union([
  Schema.Struct({ type: Schema.Literal("rows"), seq: Schema.Number, chunk: Schema.String, rows: Schema.Number }),
  Schema.Struct({ type: Schema.Literal("params"), values: Schema.Record(Schema.String, Schema.String) }),
  Schema.Struct({ type: Schema.Literal("stop") })
])
export type ToUsageThread = typeof ToUsageThread.Type

export const FromUsageThread = Schema.Union([
  Schema.Struct({ type: Schema.Literal("ready") }),
  Schema.Struct({ type: Schema.Literal("ack"), seq: Schema.Number }),
  Schema.Struct({ type: Schema.Literal("stats"), stats: UsageSinkStats }),
  Schema.Struct({ type: Schema.Literal("stopped"), stats: UsageSinkStats })
])
export type FromUsageThread = typeof FromUsageThread.Type

/** What the usage thread is started with (worker_threads `workerData`). */
export const UsageThreadData = Schema.Struct({ params: Schema.Record(Schema.String, Schema.String) })
