import { Effect, Layer, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { migrate } from "./migrations/index.ts"
import { maintainUsagePartitions } from "./migrations/partitions.ts"
import { Params } from "../services/Params.ts"
import { withModule } from "./Logging.ts"

/** Serialises migrations when several nodes start at once against one database. */
const MIGRATION_LOCK = 7_261_534

export const migrateLocked = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  return yield* sql.withTransaction(Effect.andThen(sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`, migrate))
}).pipe(withModule("migrate"))

/** Run migrations (idempotent) before anything reads the schema. */
export const MigrationsLive = Layer.effectDiscard(migrateLocked.pipe(
  Effect.tap((r) => r.applied.length > 0 ? Effect.logInfo("migrations applied", r.applied).pipe(withModule("migrate")) : Effect.void)
))

/** Day partitions ahead and retention behind, every six hours. */
export const PartitionMaintenance = Layer.effectDiscard(Effect.gen(function*() {
  const params = yield* Params
  const maintain = Effect.suspend(() =>
    maintainUsagePartitions({ now: Date.now(), daysAhead: 7, retentionDays: params.int("usage_retention_days") })
  ).pipe(
    Effect.tap((r) => r.dropped.length > 0 ? Effect.logInfo("usage partitions dropped", r.dropped) : Effect.void),
    Effect.catch((e) => Effect.logWarning("partition maintenance failed", e.message)),
    withModule("partitions")
  )
  yield* maintain.pipe(Effect.repeat(Schedule.spaced("6 hours")), Effect.delay("1 minute"), Effect.forkScoped)
}))
