import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { DEFAULT_PARAMS, mergeParams, paramRows, type ParamName, type ParamValues, validateParam } from "../domain/params.ts"
import { Cache } from "../services/Cache.ts"
import { type ParamRow, Params, ParamsError } from "../services/Params.ts"
import { withModule } from "./Logging.ts"
import { spacedBy } from "./paramSchedule.ts"

export const APP_CONFIG_KEY = "app:config"
export const PARAMS_CHANNEL = "app:config:changed"

/**
 * Aurora `application_parameters` → Valkey hash `app:config` → this process. Refreshed on a
 * Schedule (`params_refresh_ms`); a change made on any node is also pushed over pub/sub so it
 * lands everywhere at once, and at the latest within one refresh if the message is missed.
 */
export const ParamsLive = Layer.effect(Params, Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const cache = yield* Cache
  let values: ParamValues = DEFAULT_PARAMS

  const fromDatabase = sql<{ name: string; value: string }>`SELECT name, value FROM application_parameters`.pipe(
    Effect.map((rows) => Object.fromEntries(rows.map((r) => [r.name, r.value])))
  )
  const publishToCache = (record: Readonly<Record<string, string>>) =>
    cache.hsetMany([{ key: APP_CONFIG_KEY, values: record }]).pipe(Effect.ignore)

  const refresh = fromDatabase.pipe(
    Effect.tap(publishToCache),
    Effect.catch(() => cache.hgetall(APP_CONFIG_KEY)),
    Effect.map((record) => void (values = mergeParams(values, record))),
    Effect.catch((e) => Effect.logWarning("parameters not refreshed; keeping the last values", e.message)),
    withModule("params"),
    Effect.withSpan("Params.refresh")
  )

  const set = (changes: Readonly<Record<string, string>>) =>
    Effect.gen(function*() {
      const entries = Object.entries(changes)
      if (entries.length === 0) return yield* new ParamsError({ reason: "Invalid", message: "no parameters given" })
      for (const [k, v] of entries) {
        const problem = validateParam(k, v)
        if (problem !== undefined) return yield* new ParamsError({ reason: "Invalid", message: problem })
      }
      yield* sql.withTransaction(Effect.forEach(entries, ([name, value]) =>
        sql`UPDATE application_parameters SET value = ${value}, updated_at = now() WHERE name = ${name}`, { discard: true })).pipe(
        Effect.mapError((e) => new ParamsError({ reason: "Storage", message: e.message }))
      )
      const record = Object.fromEntries(entries)
      values = mergeParams(values, record)
      yield* publishToCache(record)
      yield* cache.publish(PARAMS_CHANNEL, JSON.stringify(record)).pipe(Effect.ignore)
      yield* Effect.logInfo("parameters changed", record).pipe(withModule("params"))
      return values
    }).pipe(Effect.withSpan("Params.set"))

  const profiles = sql<{ profile: string; name: string; value: string }>`SELECT profile, name, value FROM parameter_profiles ORDER BY profile, name`.pipe(
    Effect.map((rows) => {
      const out: Record<string, Record<string, string>> = {}
      for (const r of rows) (out[r.profile] ??= {})[r.name] = r.value
      return out
    }),
    Effect.mapError((e) => new ParamsError({ reason: "Storage", message: e.message }))
  )

  yield* refresh
  // Pushes from other nodes: apply the changed values directly.
  yield* cache.subscribe(PARAMS_CHANNEL, (message) => {
    try {
      const parsed: unknown = JSON.parse(message)
      if (typeof parsed === "object" && parsed !== null) values = mergeParams(values, parsed as Record<string, string>)
    } catch {
      // A foreign or corrupt message changes nothing; the scheduled refresh still converges.
    }
  }).pipe(Effect.catch((e) => Effect.logWarning("parameter push channel unavailable", e.message).pipe(withModule("params"))))
  yield* refresh.pipe(
    Effect.repeat(spacedBy(() => Number(values.params_refresh_ms))),
    Effect.forkScoped
  )

  return Params.of({
    current: () => values,
    int: (name: ParamName) => Number(values[name]),
    bool: (name: ParamName) => values[name] === "true",
    list: Effect.sync((): ReadonlyArray<ParamRow> => paramRows(values)),
    profiles,
    set,
    applyProfile: (profile) =>
      Effect.gen(function*() {
        const all = yield* profiles
        const chosen = all[profile]
        if (chosen === undefined) return yield* new ParamsError({ reason: "UnknownProfile", message: `unknown profile ${profile}` })
        return yield* set(chosen)
      }),
    refresh
  })
}))
