import { Effect } from "effect"
import type { SqlClient } from "effect/sql"
import { withModule } from "../../layers/Logging.ts"
import {
  type DecodeQueueMessage, type QueuedMessage, type StoredBatch, storeUsageMessages, type UsageStoreError
} from "../../layers/usage/usageStore.ts"

/**
 * The queued writer's work, shared by `tb queued-writer` and the Lambda entry: the messages'
 * rows stored (src/layers/usage/usageStore.ts, the same code the usage thread writes the database
 * with), and a log line for each poison message naming its SQS message id and why.
 */
export const handleUsageMessages = (
  messages: ReadonlyArray<QueuedMessage>,
  decode?: DecodeQueueMessage
): Effect.Effect<StoredBatch, UsageStoreError, SqlClient.SqlClient> =>
  storeUsageMessages(messages, decode).pipe(
    Effect.tap((batch) =>
      Effect.forEach(batch.poison, (p) =>
        Effect.logWarning(`poison message ${p.id}: ${p.reason}`).pipe(Effect.annotateLogs({ messageId: p.id, reason: p.reason })), { discard: true })),
    withModule("queued-writer")
  )
