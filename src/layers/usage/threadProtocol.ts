import { Schema } from "effect"
import { UsageSinkStats } from "../../services/UsageSink.ts"

/** A `UsageChunk` as it arrives from the other thread (postMessage keeps typed arrays typed). */
export const UsageChunkMessage = Schema.Struct({
  rows: Schema.Number,
  node: Schema.String,
  region: Schema.String,
  requestTag: Schema.String,
  strings: Schema.Array(Schema.String),
  refs: Schema.instanceOf(Int32Array),
  random: Schema.instanceOf(Uint8Array),
  createdAt: Schema.instanceOf(Float64Array),
  requestSeq: Schema.instanceOf(Float64Array),
  price: Schema.instanceOf(Float64Array),
  statusCode: Schema.instanceOf(Int32Array),
  latencyUs: Schema.instanceOf(Int32Array),
  bytesOut: Schema.instanceOf(Int32Array)
})

/**
 * Messages between the serving thread (UsageSinkThreaded) and the usage thread (usageThread.ts).
 * Rows travel as column chunks (domain/usageChunk.ts); the usage thread acknowledges a chunk once
 * it is written (to SQS or the database), or, after a failed write, once every row of it is in its
 * batcher, from where it is written or spooled, never dropped.
 */
export const ToUsageThread = Schema.Union([
  Schema.Struct({ type: Schema.Literal("rows"), seq: Schema.Number, chunk: UsageChunkMessage }),
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
