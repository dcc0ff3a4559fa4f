import { Cause, Effect, Exit, Layer, ManagedRuntime, Schema } from "effect"
import { DatabaseLive } from "../../layers/DatabaseLive.ts"
import { withModule } from "../../layers/Logging.ts"
import { MigrationsLive } from "../../layers/MigrationsLive.ts"
import { BaseLive } from "../layers.ts"
import { UsageStoreError } from "../../layers/usage/usageStore.ts"
import { handleUsageMessages } from "../queuedWriter/handler.ts"

/**
 * The Lambda entry of the queued writer (`trinity-beast/lambda/queued-writer`, handler
 * `handler`): an SQS event source mapping with ReportBatchItemFailures calls it with up to its
 * batch size of messages, and the same handler as `tb queued-writer` stores them.
 */

/** A message attribute of the Lambda event (camelCase, unlike the SQS API). */
const SqsEventMessageAttribute = Schema.Struct({
  dataType: Schema.String,
  stringValue: Schema.optionalKey(Schema.NullOr(Schema.String)),
  binaryValue: Schema.optionalKey(Schema.NullOr(Schema.String)),
  stringListValues: Schema.optionalKey(Schema.Array(Schema.String)),
  binaryListValues: Schema.optionalKey(Schema.Array(Schema.String))
})

/** One record of the event. Only `messageId` and `body` are needed; the rest is checked loosely, as Lambda documents it. */
const SqsEventRecord = Schema.Struct({
  messageId: Schema.String,
  receiptHandle: Schema.optionalKey(Schema.String),
  body: Schema.String,
  attributes: Schema.optionalKey(Schema.Record(Schema.String, Schema.String)),
  messageAttributes: Schema.optionalKey(Schema.Record(Schema.String, SqsEventMessageAttribute)),
  md5OfBody: Schema.optionalKey(Schema.String),
  eventSource: Schema.optionalKey(Schema.String),
  eventSourceARN: Schema.optionalKey(Schema.String),
  awsRegion: Schema.optionalKey(Schema.String)
})

/** The event Lambda's SQS event source mapping sends (the `SQSEvent` of the aws-lambda types). */
export const SqsEvent = Schema.Struct({ Records: Schema.Array(SqsEventRecord) })
export type SqsEvent = typeof SqsEvent.Type

/** The partial batch response: the messages to be delivered again (here, poison: left for the redrive policy). */
export interface SqsBatchResponse {
  readonly batchItemFailures: Array<{ readonly itemIdentifier: string }>
}

/** The event's messages stored; poison ones reported. A database failure fails the whole invocation. */
export const handleSqsEvent = (event: unknown) =>
  Effect.gen(function*() {
    const { Records } = yield* Schema.decodeUnknownEffect(SqsEvent)(event)
    if (Records.length === 0) return { batchItemFailures: [] }
    const outcome = yield* handleUsageMessages(Records.map((r) => ({ id: r.messageId, body: r.body })))
    yield* Effect.logDebug(`stored ${outcome.rows} rows (${outcome.inserted} new) from ${outcome.stored.length} messages; ${outcome.poison.length} poison`)
    return { batchItemFailures: outcome.poison.map((p) => ({ itemIdentifier: p.id })) } satisfies SqsBatchResponse
  }).pipe(withModule("queued-writer"))

/**
 * Database pool (and configuration, logging, secrets) built at the first invocation and kept
 * while the execution environment lives, so warm invocations reuse its connections. Migrations
 * run once per environment, as at any program's start (idempotent, under an advisory lock).
 */
const QueuedWriterLambdaLive = MigrationsLive.pipe(Layer.provideMerge(DatabaseLive), Layer.provideMerge(BaseLive))

let runtime: ManagedRuntime.ManagedRuntime<Layer.Success<typeof QueuedWriterLambdaLive>, Layer.Error<typeof QueuedWriterLambdaLive>> | undefined

/** Closes the pool (tests; Lambda itself just freezes or ends the environment). */
export const disposeQueuedWriterLambda = async (): Promise<void> => {
  const current = runtime
  runtime = undefined
  await current?.dispose()
}

export const handler = async (event: SqsEvent): Promise<SqsBatchResponse> => {
  runtime ??= ManagedRuntime.make(QueuedWriterLambdaLive)
  const exit = await runtime.runPromiseExit(handleSqsEvent(event))
  if (Exit.isSuccess(exit)) return exit.value
  const error = Cause.squash(exit.cause)
  // A failed start (the database out of reach at the first invocation) is not kept: the next invocation builds again.
  if (!(error instanceof UsageStoreError)) await disposeQueuedWriterLambda()
  // Thrown: Lambda fails the whole batch, and every message of it is delivered again.
  throw error instanceof Error ? error : new Error(Cause.pretty(exit.cause))
}
