import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { UsageWriteError, UsageWriter } from "../../services/UsageSink.ts"
import { storeUsageMessages } from "./usageStore.ts"

/**
 * The usage thread's writer when rows go straight to the database (no SQS_QUEUE_URL): the batch's
 * `usage_log` bodies stored as the queued writer stores a receive's messages (usageStore.ts), so
 * both ways fill usage_logs and the monthly counters alike.
 */
export const UsageWriterDatabase = Layer.effect(UsageWriter, Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  return UsageWriter.of({
    kind: "database",
    write: (bodies) =>
      storeUsageMessages(bodies.map((body, i) => ({ id: String(i), body }))).pipe(
        Effect.map((batch) => batch.poison.map((p) => ({ body: bodies[Number(p.id)]!, reason: p.reason }))),
        Effect.provideService(SqlClient.SqlClient, sql),
        Effect.mapError((e) => new UsageWriteError({ reason: "Database", message: e.message }))
      )
  })
}))
