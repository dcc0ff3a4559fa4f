import { Effect, Stream } from "effect"
import type { SqlClient } from "effect/sql"
import type { Redis } from "ioredis"
import { unpackSketch } from "../../domain/latencySketch.ts"
import {
  DAY_MS, dayStartOf, encodeRollupCell, ROLLUP_DAYS_KEY, rollupExpiresAt, rollupField, rollupKey
} from "../../domain/usageMirrorKeys.ts"
import { SyncError } from "./usageMirrorValkey.ts"

/** Days refreshed this long before the last copy are looked at again: refreshes may commit out of order. */
const REFRESH_LAG_MS = 3_600_000

interface DimRow {
  readonly api_key_id: string | null
  readonly day: string
  readonly dimension: string
  readonly value: string | null
  readonly requests: string
  readonly errors: string
  readonly bytes_out: string
  readonly latency_sum: string
  readonly last_at: string
  readonly latency_sketch: Uint8Array
}

const KEYS_PER_PIPELINE = 500

/** Each hash under a temporary name, then RENAMEd over the day's old one (a reader sees one or the other, whole). */
const writeDay = (redis: Redis, hashes: ReadonlyArray<{ readonly name: string; readonly fields: Record<string, string> }>, expiresAt: number) =>
  Effect.tryPromise({
    try: async () => {
      const pipeline = redis.pipeline()
      for (const { name, fields } of hashes) {
        const temporary = `${name}:next`
        pipeline.del(temporary)
        pipeline.hset(temporary, fields)
        pipeline.pexpireat(temporary, expiresAt)
        pipeline.rename(temporary, name)
      }
      const results = (await pipeline.exec()) ?? []
      const failed = results.find(([e]) => e !== null)
      if (failed?.[0]) throw failed[0]
    },
    catch: (e: unknown) => new SyncError({ reason: "Valkey", message: e instanceof Error ? e.message : String(e) })
  })

export interface RollupCopied {
  readonly days: number
  readonly keys: number
  /** The newest refreshed_at copied (ms), to keep for the next run. */
  readonly through: number | undefined
}

const databaseFailed = (e: { readonly message: string }) => new SyncError({ reason: "Database", message: e.message })
const valkeyFailed = (e: unknown) => new SyncError({ reason: "Valkey", message: e instanceof Error ? e.message : String(e) })

/**
 * Copy the days of usage_daily_rollup_dim refreshed since `since` (ms; undefined = every day
 * within `retentionDays`) to `usage:rollup:<key>:<day>` hashes. A day's hash is written under a
 * temporary name and RENAMEd over the old one, so a reader sees the old day or the new one whole;
 * copying the same day again writes the same hash (idempotent, safe to interrupt).
 */
export const copyRollup = (reader: SqlClient.SqlClient, redis: Redis, since: number | undefined, nowMs: number, retentionDays: number): Effect.Effect<RollupCopied, SyncError> =>
  Effect.gen(function*() {
    const oldest = new Date(Math.floor(nowMs / DAY_MS) * DAY_MS - retentionDays * DAY_MS).toISOString().slice(0, 10)
    const days = yield* reader<{ day: string; refreshed_at: string }>`
      SELECT to_char(day, 'YYYY-MM-DD') AS day, floor(extract(epoch FROM refreshed_at) * 1000)::bigint::text AS refreshed_at
      FROM usage_daily_rollup_days
      WHERE day >= ${oldest}::date AND refreshed_at >= ${new Date((since ?? 0) - (since === undefined ? 0 : REFRESH_LAG_MS))}
      ORDER BY day`.pipe(Effect.mapError(databaseFailed))
    let keys = 0
    let through: number | undefined
    for (const { day, refreshed_at } of days) {
      const expiresAt = rollupExpiresAt(day, retentionDays)
      // Rows come key by key; a key's hash is whole once the next key starts.
      let current: { name: string; fields: Record<string, string> } | undefined
      let pending: Array<{ name: string; fields: Record<string, string> }> = []
      const flush = (all: boolean) => {
        if (pending.length === 0 || (!all && pending.length < KEYS_PER_PIPELINE)) return Effect.void
        const batch = pending
        pending = []
        keys += batch.length
        return writeDay(redis, batch, expiresAt)
      }
      yield* reader<DimRow>`
        SELECT api_key_id::text AS api_key_id, to_char(day, 'YYYY-MM-DD') AS day, dimension, value,
          requests::text AS requests, errors::text AS errors, bytes_out::text AS bytes_out, latency_sum::text AS latency_sum,
          floor(extract(epoch FROM last_at) * 1000)::bigint::text AS last_at, latency_sketch
        FROM usage_daily_rollup_dim WHERE day = ${day}::date ORDER BY api_key_id NULLS FIRST`.stream.pipe(
        Stream.mapError(databaseFailed),
        Stream.runForEach((r) => {
          const name = rollupKey(r.api_key_id, r.day)
          let step: Effect.Effect<void, SyncError> = Effect.void
          if (current?.name !== name) {
            if (current !== undefined) pending.push(current)
            current = { name, fields: {} }
            step = flush(false)
          }
          current.fields[rollupField(r.dimension, r.value)] = encodeRollupCell({
            requests: Number(r.requests), errors: Number(r.errors), bytes_out: Number(r.bytes_out),
            latency_sum: Number(r.latency_sum), last_at: Number(r.last_at), sketch: unpackSketch(r.latency_sketch)
          })
          return step
        })
      )
      if (current !== undefined) pending.push(current)
      yield* flush(true)
      yield* Effect.tryPromise({ try: () => redis.zadd(ROLLUP_DAYS_KEY, dayStartOf(day), day), catch: valkeyFailed })
      through = Math.max(through ?? 0, Number(refreshed_at))
    }
    // Days past the retention leave the list (their hashes expire by themselves).
    yield* Effect.tryPromise({ try: () => redis.zremrangebyscore(ROLLUP_DAYS_KEY, "-inf", `(${dayStartOf(oldest)}`), catch: valkeyFailed })
    return { days: days.length, keys, through }
  })
