import { Effect, Layer, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { Cache } from "../services/Cache.ts"
import { Probes } from "../services/Probes.ts"

/** Probes the database and the cache every 2 s (each answer bounded to 2 s). */
export const ProbesLive = Layer.effect(Probes, Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const cache = yield* Cache
  let database = false
  let cacheOk = false
  const probe = Effect.all([
    sql`SELECT 1`.pipe(Effect.timeout("2 seconds"), Effect.as(true), Effect.catch(() => Effect.succeed(false))),
    cache.ping.pipe(Effect.timeout("2 seconds"), Effect.as(true), Effect.catch(() => Effect.succeed(false)))
  ], { concurrency: 2 }).pipe(Effect.map(([d, c]) => {
    database = d
    cacheOk = c
  }))
  yield* probe
  yield* probe.pipe(Effect.repeat(Schedule.spaced("2 seconds")), Effect.forkScoped)
  return Probes.of({ database: () => database, cache: () => cacheOk })
}))
