import { Effect, Schedule } from "effect"
import type { SqlClient } from "effect/sql"
import { withModule } from "../../layers/Logging.ts"
import { Metrics } from "../../services/Metrics.ts"
import { Sqs, type SqsReceivedMessage } from "../../services/Sqs.ts"
import { type StartupError, unreachableDependency } from "../../services/StartupError.ts"
import type { DecodeQueueMessage } from "../../layers/usage/usageStore.ts"
import { handleUsageMessages } from "./handler.ts"

export interface PollerOptions {
  /** Receives in flight at once, each with its batch (at most 10 messages). */
  readonly receivers: number
  /** How long a received batch stays hidden; renewed while its write runs. */
  readonly visibilityTimeoutSeconds: number
  readonly decode: DecodeQueueMessage
}

/** SQS's own limits: the longest long poll, the most messages per receive. */
const WAIT_SECONDS = 20
const MAX_MESSAGES = 10

/**
 * Between attempts while the database (or SQS) cannot be reached: 250 ms, doubling, at most 10 s,
 * for as long as it takes. A batch that cannot be written is held (its visibility renewed) rather
 * than returned to the queue: each return counts toward the redrive policy's maxReceiveCount, and
 * an outage must not send good messages to the dead-letter queue.
 */
const backoff = Schedule.min([Schedule.exponential("250 millis"), Schedule.spaced("10 seconds")])

/** Deletes the stored messages; a failure only means they come back and are found stored already. */
const deleteStored = (messages: ReadonlyArray<SqsReceivedMessage>, storedIds: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    if (storedIds.length === 0) return
    const sqs = yield* Sqs
    const stored = new Set(storedIds)
    const refused = yield* sqs.deleteBatch(messages.filter((m) => stored.has(m.id)).map((m) => m.receiptHandle)).pipe(
      Effect.retry(Schedule.max([Schedule.exponential("100 millis"), Schedule.recurs(3)]))
    )
    if (refused.length > 0) {
      yield* Effect.logInfo(`${refused.length} stored messages not deleted (${refused[0]!.code}); they will be delivered again and found stored`)
    }
  }).pipe(Effect.catch((e) => Effect.logWarning(`deleting stored messages failed (${e.message}); they will be delivered again and found stored`)))

/**
 * Keeps a batch hidden while it is in hand: every third of the visibility timeout, another full
 * timeout from now. Runs until interrupted.
 */
const keepHidden = (messages: ReadonlyArray<SqsReceivedMessage>, visibilityTimeoutSeconds: number) =>
  Effect.gen(function*() {
    const sqs = yield* Sqs
    const changes = messages.map((m) => ({ receiptHandle: m.receiptHandle, visibilityTimeoutSeconds }))
    yield* sqs.changeVisibilityBatch(changes).pipe(
      Effect.tap((refused) => refused.length > 0 ? Effect.logWarning(`visibility of ${refused.length} messages not extended (${refused[0]!.code})`) : Effect.void),
      Effect.catch((e) => Effect.logWarning(`extending the batch's visibility failed (${e.message})`)),
      Effect.delay(`${Math.max(1, visibilityTimeoutSeconds / 3)} seconds`),
      Effect.forever
    )
  })

/** Gives a batch back at once (visibility 0), for a batch abandoned at shutdown. */
const giveBack = (messages: ReadonlyArray<SqsReceivedMessage>) =>
  Effect.gen(function*() {
    const sqs = yield* Sqs
    yield* sqs.changeVisibilityBatch(messages.map((m) => ({ receiptHandle: m.receiptHandle, visibilityTimeoutSeconds: 0 })))
    yield* Effect.logInfo(`shutdown: ${messages.length} messages not written, returned to the queue`)
  }).pipe(Effect.catch((e) => Effect.logWarning(`returning a batch failed (${e.message}); it reappears when its visibility ends`)))

/**
 * One received batch: stored (retried on the backoff while the database is down), then its stored
 * messages deleted; poison ones stay for the redrive policy. Each attempt, and the delete after it,
 * runs to its end once started; an interruption (shutdown) between attempts gives the batch back.
 */
const handleBatch = (messages: ReadonlyArray<SqsReceivedMessage>, options: PollerOptions) =>
  Effect.gen(function*() {
    yield* Effect.forkScoped(keepHidden(messages, options.visibilityTimeoutSeconds))
    // Set once an attempt has written the batch: an interruption that arrives during that attempt
    // takes effect after it, and must not give back what is written.
    let written = false
    const metrics = yield* Metrics
    const started = performance.now()
    const attempt = handleUsageMessages(messages, options.decode).pipe(
      Effect.tap((outcome) => deleteStored(messages, outcome.stored)),
      Effect.tap(() => Effect.sync(() => void (written = true))),
      Effect.uninterruptible
    )
    const outcome = yield* attempt.pipe(
      Effect.tapError((e) => Effect.sync(() => metrics.queuedWriterRetry()).pipe(
        Effect.andThen(Effect.logWarning(`database unavailable (${e.message}); holding ${messages.length} messages and retrying`))
      )),
      Effect.retry(backoff),
      Effect.orDie, // the schedule never ends
      Effect.onInterrupt(() => (written ? Effect.void : giveBack(messages)))
    )
    metrics.queuedWriterBatch({
      messages: messages.length, stored: outcome.stored.length, poison: outcome.poison.length, rows: outcome.rows, inserted: outcome.inserted,
      seconds: (performance.now() - started) / 1000
    })
    yield* Effect.logDebug(`stored ${outcome.rows} rows (${outcome.inserted} new) from ${outcome.stored.length} messages; ${outcome.poison.length} poison`)
  }).pipe(Effect.scoped)

/** Handles a batch, if there is one. */
const handleAny = (messages: ReadonlyArray<SqsReceivedMessage>, options: PollerOptions) =>
  messages.length === 0 ? Effect.void : handleBatch(messages, options)

/** One receiver: handles `first`, then long polls, and handles each batch before the next receive. */
const receiver = (options: PollerOptions, first: ReadonlyArray<SqsReceivedMessage>): Effect.Effect<never, never, Sqs | SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sqs = yield* Sqs
    const receive = sqs.receive({ maxMessages: MAX_MESSAGES, waitSeconds: WAIT_SECONDS, visibilityTimeoutSeconds: options.visibilityTimeoutSeconds }).pipe(
      Effect.tapError((e) => Effect.logWarning(`receiving failed (${e.message}); retrying`)),
      Effect.retry(backoff),
      Effect.orDie // the schedule never ends
    )
    yield* handleAny(first, options)
    return yield* receive.pipe(Effect.flatMap((messages) => handleAny(messages, options)), Effect.forever)
  })

/**
 * `tb queued-writer`'s loop: `receivers` long polls in flight, each batch written by the shared
 * handler. Runs until interrupted (SIGTERM): receives in flight are aborted, a write in progress
 * finishes (and its messages are deleted), a batch waiting for the database is given back.
 * The queue must answer at start (one short receive, whose batch the first receiver handles):
 * else a StartupError naming SQS_QUEUE_URL. Later SQS failures are retried.
 */
export const runPoller = (options: PollerOptions): Effect.Effect<never, StartupError, Sqs | SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sqs = yield* Sqs
    const first = yield* sqs.receive({ maxMessages: MAX_MESSAGES, waitSeconds: 0, visibilityTimeoutSeconds: options.visibilityTimeoutSeconds }).pipe(
      Effect.mapError((e) => unreachableDependency("SQS_QUEUE_URL", `cannot receive from ${sqs.queueUrl} (${e.message.split("\n")[0]})`))
    )
    yield* Effect.logInfo(`receiving with ${options.receivers} long polls in flight, visibility timeout ${options.visibilityTimeoutSeconds} s`)
    return yield* Effect.forEach(Array.from({ length: options.receivers }, (_, i) => receiver(options, i === 0 ? first : [])), (r) => r, {
      concurrency: "unbounded"
    }).pipe(Effect.andThen(Effect.never))
  }).pipe(withModule("queued-writer"))
