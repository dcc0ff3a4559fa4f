import { Data, Effect } from "effect"
import type { SqlClient } from "effect/sql"
import { messageOf } from "../../domain/errorMessage.ts"
import type { UsageRow } from "../../domain/usage.ts"
import { decodeQueueMessage, type QueueMessage } from "../../domain/usageQueueMessage.ts"
import { withModule } from "../../layers/Logging.ts"
import { insertUsageCounted, refusesTheRows, serverMessageOf } from "./usageStore.ts"

/** The message decoder: `decodeQueueMessage` (a test may pass another). */
export type DecodeQueueMessage = (body: string) => QueueMessage

/** A message as both entries receive it: SQS's MessageId and the body. */
export interface QueuedMessage {
  readonly id: string
  readonly body: string
}

export interface PoisonMessage {
  readonly id: string
  readonly reason: string
}

export interface StoredBatch {
  /** Messages whose rows are in the database now (new, or there already): done, to be deleted. */
  readonly stored: ReadonlyArray<string>
  /** Messages that can never be stored (undecodable, unknown type or version, rows the database refuses). */
  readonly poison: ReadonlyArray<PoisonMessage>
  /** Rows in the stored messages, and how many of them were new. */
  readonly rows: number
  readonly inserted: number
}

/** The database could not take the batch now (down, timed out): nothing counts as stored, every message is to be received again. */
export class UsageStoreError extends Data.TaggedError("UsageStoreError")<{
  readonly message: string
}> {}

interface Decoded {
  readonly id: string
  readonly rows: ReadonlyArray<UsageRow>
}

const decodeSafely = (decode: DecodeQueueMessage, body: string): QueueMessage => {
  try {
    return decode(body)
  } catch (cause) {
    return { _tag: "Poison", reason: `undecodable: ${messageOf(cause)}` }
  }
}

/**
 * A batch where the database refused some row: each message on its own, so the messages holding
 * such rows become poison and the others are stored. Rare (the decoder checks the rows' shape),
 * and one statement per message only then.
 */
const storeOneByOne = (decoded: ReadonlyArray<Decoded>) =>
  Effect.forEach(decoded, (message) =>
    insertUsageCounted(message.rows).pipe(
      Effect.map((inserted) => ({ _tag: "Stored" as const, id: message.id, rows: message.rows.length, inserted })),
      Effect.catchIf(refusesTheRows, (e) =>
        Effect.succeed({ _tag: "Poison" as const, id: message.id, reason: `rows refused by the database: ${serverMessageOf(e)}` }))
    ))

/**
 * The queued writer's work, shared by `tb queued-writer` and the Lambda entry: decode each
 * message; a poison one is reported (with a log line naming it and why) and never holds up the
 * others; all good rows go to usage_logs in one insert that also updates the per-key monthly
 * counters (see insertUsageCounted), duplicates ignored. Fails with UsageStoreError when the
 * database cannot take the batch: then no message is done.
 */
export const storeUsageMessages = (
  messages: ReadonlyArray<QueuedMessage>,
  decode: DecodeQueueMessage = decodeQueueMessage
): Effect.Effect<StoredBatch, UsageStoreError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const decoded: Array<Decoded> = []
    const poison: Array<PoisonMessage> = []
    for (const message of messages) {
      const outcome = decodeSafely(decode, message.body)
      if (outcome._tag === "Poison") poison.push({ id: message.id, reason: outcome.reason })
      else decoded.push({ id: message.id, rows: outcome.rows })
    }
    const allRows = decoded.flatMap((m) => m.rows)
    const stored: Array<string> = []
    let rows = 0
    let inserted = 0
    const batch = yield* insertUsageCounted(allRows).pipe(
      Effect.map((n) => ({ _tag: "Inserted" as const, n })),
      Effect.catchIf(refusesTheRows, (e) =>
        Effect.logWarning(`the database refused a row of the batch (${serverMessageOf(e)}); storing its ${decoded.length} messages one by one`).pipe(
          Effect.andThen(storeOneByOne(decoded)),
          Effect.map((outcomes) => ({ _tag: "OneByOne" as const, outcomes }))
        )),
      Effect.mapError((e) => new UsageStoreError({ message: serverMessageOf(e) }))
    )
    if (batch._tag === "Inserted") {
      stored.push(...decoded.map((m) => m.id))
      rows = allRows.length
      inserted = batch.n
    } else {
      for (const outcome of batch.outcomes) {
        if (outcome._tag === "Poison") {
          poison.push({ id: outcome.id, reason: outcome.reason })
          continue
        }
        stored.push(outcome.id)
        rows += outcome.rows
        inserted += outcome.inserted
      }
    }
    yield* Effect.forEach(poison, (p) =>
      Effect.logWarning(`poison message ${p.id}: ${p.reason}`).pipe(Effect.annotateLogs({ messageId: p.id, reason: p.reason })), { discard: true })
    return { stored, poison, rows, inserted }
  }).pipe(withModule("queued-writer"))
