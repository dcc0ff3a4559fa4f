import { Context, Data, type Effect } from "effect"

/** An SQS call failed as a whole (network, credentials, a queue that does not exist, entries that kept failing). */
export class SqsError extends Data.TaggedError("SqsError")<{
  /** The SQS action, e.g. "ReceiveMessage". */
  readonly operation: string
  readonly message: string
}> {}

/** String message attributes, name → value (the only kind this project sends: `type`). */
export type SqsMessageAttributes = Readonly<Record<string, string>>

export interface SqsOutgoingMessage {
  readonly body: string
  readonly attributes?: SqsMessageAttributes
}

export interface SqsReceivedMessage {
  /** SQS's MessageId: the same on every delivery of the message (Lambda's `itemIdentifier`). */
  readonly id: string
  /** Names this delivery; delete and visibility changes need it. A redelivery gets a new one. */
  readonly receiptHandle: string
  readonly body: string
  readonly attributes: SqsMessageAttributes
  /** ApproximateReceiveCount: 1 on the first delivery. */
  readonly receiveCount: number
}

export interface SqsReceiveOptions {
  /** 1..10 */
  readonly maxMessages: number
  /** Long polling: 0..20 seconds. */
  readonly waitSeconds: number
  /** How long the received messages stay hidden from other receivers, in seconds. */
  readonly visibilityTimeoutSeconds: number
}

/** Entries of a batch call that SQS refused while the call itself succeeded (HTTP 200 with `Failed`). */
export interface SqsBatchFailure {
  readonly receiptHandle: string
  readonly code: string
  readonly message: string
}

export interface SqsVisibilityChange {
  readonly receiptHandle: string
  readonly visibilityTimeoutSeconds: number
}

/**
 * One SQS queue (the usage-log queue), for the producer and the queued writer alike. Batch calls
 * take any number of entries and split them into requests of at most 10. Message size is the
 * caller's business (see the usage message encoder).
 */
export class Sqs extends Context.Service<Sqs, {
  readonly queueUrl: string
  /**
   * SendMessageBatch: entries SQS reports as `Failed` are sent again (a few times); fails with
   * SqsError when some are still refused, so a caller that retries may send others twice.
   */
  readonly sendBatch: (messages: ReadonlyArray<SqsOutgoingMessage>) => Effect.Effect<void, SqsError>
  /** ReceiveMessage with the receive count and all message attributes. Interrupting it aborts the long poll. */
  readonly receive: (options: SqsReceiveOptions) => Effect.Effect<ReadonlyArray<SqsReceivedMessage>, SqsError>
  /** DeleteMessageBatch. A handle refused (e.g. expired: the message was redelivered) is returned, not failed. */
  readonly deleteBatch: (receiptHandles: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<SqsBatchFailure>, SqsError>
  readonly changeVisibility: (change: SqsVisibilityChange) => Effect.Effect<void, SqsError>
  /** ChangeMessageVisibilityBatch; refused entries returned as for deleteBatch. */
  readonly changeVisibilityBatch: (changes: ReadonlyArray<SqsVisibilityChange>) => Effect.Effect<ReadonlyArray<SqsBatchFailure>, SqsError>
}>()("tb/Sqs") {}
