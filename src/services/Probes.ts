import { Context, Effect, Layer, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { Cache } from "./Cache.ts"

/**
 * Storage reachability, probed in the background so /health and /ready answer from memory.
 */
export class Probes extends Context.Service<Probes, {
  readonly database: () => boolean
  readonly cache: () => boolean
}>()("tb/Probes") {
  static readonly layer = Layer.effect(Probes, Effect.gen(function*() {
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
}
