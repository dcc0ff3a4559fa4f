import { Data, Effect, Redacted, type Scope } from "effect"
import { Redis } from "ioredis"
import { messageOf } from "../../domain/errorMessage.ts"
import {
  API_KEY_FIELDS, apiKeyHashKey, assetIndexKey, DAY_MS, dayIndexesKey, dayIndexExpiresAt, DAYS_KEY, dayStartOf, keyIndexKey, SYNC_STATE_KEY,
  timeIndexKey, usageHashArgs, usageHashKey, type UsageRowText, utcDay, utcDayStart
} from "../../domain/usageMirrorKeys.ts"
import { type StartupError, unreachableDependency } from "../../services/StartupError.ts"
import { respBatch, type RespPipeline } from "./respPipeline.ts"
import { checkValkeyUrl } from "../CacheValkey.ts"

/** A sync step that failed: Valkey refused or lost a command, or the database a query. */
export class SyncError extends Data.TaggedError("SyncError")<{
  readonly reason: "Valkey" | "Database"
  readonly message: string
}> {}

const valkeyFailed = (cause: unknown) => new SyncError({ reason: "Valkey", message: messageOf(cause) })

const CONNECT_TIMEOUT_MS = 5_000
/** A batch pipeline of a few thousand rows answers in milliseconds; a minute means the server is stuck. */
const COMMAND_TIMEOUT_MS = 60_000

/**
 * The sync's own Valkey connection (not the serving Cache: no 1 s command timeout, and raw
 * pipelines). Not reachable at start → a StartupError naming `variable` (exit 1).
 */
export const openSyncValkey = (url: Redacted.Redacted<string>, variable: string): Effect.Effect<Redis, StartupError, Scope.Scope> =>
  Effect.gen(function*() {
    yield* checkValkeyUrl(variable, url)
    let lastError: string | undefined
    const client = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const c = new Redis(Redacted.value(url), {
          lazyConnect: true,
          connectTimeout: CONNECT_TIMEOUT_MS,
          commandTimeout: COMMAND_TIMEOUT_MS,
          maxRetriesPerRequest: 0,
          // No reconnecting: a connection lost mid-run fails the run (exit 1), and the next run goes
          // on from the last whole slice. (ioredis 6 also keeps reconnect timers alive after a
          // disconnect() made while it is reconnecting, which kept the process from exiting.)
          retryStrategy: () => null
        })
        c.on("error", (e: Error & { code?: unknown }) => {
          lastError = typeof e.code === "string" ? e.code : e.message
        })
        return c
      }),
      (c) => Effect.promise(() => (c.status === "ready" ? c.quit().then(() => undefined, () => c.disconnect()) : Promise.resolve(c.disconnect()))).pipe(
        Effect.timeout("2 seconds"),
        Effect.catch(() => Effect.sync(() => c.disconnect()))
      )
    )
    const parsed = new URL(Redacted.value(url))
    const where = `${parsed.hostname}:${parsed.port === "" ? "6379" : parsed.port}`
    // A server that accepts and then drops connections makes ioredis retry forever: bound the wait.
    yield* Effect.tryPromise({ try: () => client.connect().then(() => client.ping()), catch: (e) => e }).pipe(
      Effect.timeoutOrElse({ duration: CONNECT_TIMEOUT_MS, orElse: () => Effect.fail(new Error(`no answer within ${CONNECT_TIMEOUT_MS / 1000} s`)) }),
      Effect.mapError((e) => unreachableDependency(variable, `cannot connect to ${where} (${lastError ?? messageOf(e)})`))
    )
    return client
  })

type Pipeline = ReturnType<Redis["pipeline"]>

const exec = (pipeline: Pipeline): Effect.Effect<Array<[Error | null, unknown]>, SyncError> =>
  Effect.tryPromise({
    try: async () => {
      const results = (await pipeline.exec()) ?? []
      const failed = results.find(([e]) => e !== null)
      if (failed?.[0]) throw failed[0]
      return results
    },
    catch: valkeyFailed
  })

const run = <A>(f: () => Promise<A>): Effect.Effect<A, SyncError> => Effect.tryPromise({ try: f, catch: valkeyFailed })

/** What one batch wrote: rows, and the newest created_at among them. */
export interface BatchWritten {
  readonly rows: number
  readonly newest: number
}

/** Commands for one pipeline: RESP text on the sync's bulk connection, or an ioredis pipeline (tests, other callers). */
const commandSink = (target: RespPipeline | Redis) => {
  if (target instanceof Redis) {
    const pipeline = target.pipeline()
    return {
      add: (...args: ReadonlyArray<string>) => void pipeline.call(args[0]!, ...args.slice(1)),
      addWith: (head: ReadonlyArray<string>, tail: ReadonlyArray<string>) => void pipeline.call(head[0]!, ...head.slice(1), ...tail),
      exec: async () => {
        const results = (await pipeline.exec()) ?? []
        const failed = results.find(([e]) => e !== null)
        if (failed?.[0]) throw failed[0]
      }
    }
  }
  const batch = respBatch()
  return { add: batch.add, addWith: batch.addWith, exec: () => target.exec(batch.done()) }
}

/**
 * Write a batch of rows as one pipeline: per row HSET `usage:<id>` + PEXPIREAT (created_at +
 * rowDays); per index key of the batch one ZADD of all its members + PEXPIREAT (day end + rowDays);
 * the days list and each day's set of index names. Every command is idempotent: writing the same
 * row again changes nothing, so a batch re-run after a crash adds no entry twice.
 * Rows older than `windowStartMs` are skipped (they would expire at once).
 */
export const writeUsageRows = (target: RespPipeline | Redis, rows: ReadonlyArray<UsageRowText>, rowDays: number, windowStartMs: number): Effect.Effect<BatchWritten, SyncError> =>
  Effect.suspend(() => {
    const batch = commandSink(target)
    const members = new Map<string, Array<string>>()
    const dayIndexes = new Map<string, Set<string>>()
    const keepMs = rowDays * DAY_MS
    let dayStart = Number.NaN
    let day = ""
    let timeKey = ""
    let names: Set<string> = new Set()
    let written = 0
    let newest = Number.NEGATIVE_INFINITY
    const add = (key: string, score: string, member: string) => {
      let list = members.get(key)
      if (list === undefined) {
        list = []
        members.set(key, list)
      }
      list.push(score, member)
    }
    const hset = ["HSET", ""]
    for (const row of rows) {
      const createdAt = Number(row.created_at)
      if (!(createdAt >= windowStartMs)) continue
      const start = utcDayStart(createdAt)
      if (start !== dayStart) {
        dayStart = start
        day = utcDay(createdAt)
        timeKey = timeIndexKey(day)
        let set = dayIndexes.get(day)
        if (set === undefined) {
          set = new Set()
          dayIndexes.set(day, set)
        }
        names = set
      }
      const hashKey = usageHashKey(row.id)
      hset[1] = hashKey
      batch.addWith(hset, usageHashArgs(row))
      batch.add("PEXPIREAT", hashKey, String(createdAt + keepMs))
      add(timeKey, row.created_at, row.id)
      if (row.api_key_id !== null) {
        const k = keyIndexKey(row.api_key_id, day)
        add(k, row.created_at, row.id)
        names.add(k)
      }
      if (row.asset !== null) {
        const k = assetIndexKey(row.asset, day)
        add(k, row.created_at, row.id)
        names.add(k)
      }
      if (createdAt > newest) newest = createdAt
      written++
    }
    if (written === 0) return Effect.succeed({ rows: 0, newest })
    const expiryOf = (d: string) => String(dayIndexExpiresAt(d, rowDays))
    for (const [key, list] of members) {
      batch.addWith(["ZADD", key], list)
      batch.add("PEXPIREAT", key, expiryOf(key.slice(-10)))
    }
    for (const [d, set] of dayIndexes) {
      batch.add("ZADD", DAYS_KEY, String(dayStartOf(d)), d)
      if (set.size > 0) {
        batch.addWith(["SADD", dayIndexesKey(d)], [...set])
        batch.add("PEXPIREAT", dayIndexesKey(d), expiryOf(d))
      }
    }
    return Effect.tryPromise({ try: batch.exec, catch: valkeyFailed }).pipe(Effect.as({ rows: written, newest }))
  })

/** The sync's state hash as numbers (absent fields are absent). */
export const readSyncState = (redis: Redis): Effect.Effect<Readonly<Record<string, number>>, SyncError> =>
  run(() => redis.hgetall(SYNC_STATE_KEY)).pipe(
    Effect.map((record) => Object.fromEntries(Object.entries(record).flatMap(([k, v]) => (Number.isFinite(Number(v)) ? [[k, Number(v)]] : []))))
  )

/**
 * Set state fields; the marks (complete_through, synced_through, rollup_through) only ever move forward (a slower concurrent run, or a full run
 * that starts older, never moves them back).
 */
const ADVANCE_SCRIPT = `
for i = 1, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if field == 'complete_through' or field == 'synced_through' or field == 'rollup_through' then
    local old = tonumber(redis.call('HGET', KEYS[1], field) or '')
    if old == nil or tonumber(value) > old then redis.call('HSET', KEYS[1], field, value) end
  else
    redis.call('HSET', KEYS[1], field, value)
  end
end
return 1`

export const writeSyncState = (redis: Redis, fields: Readonly<Record<string, string | number>>): Effect.Effect<void, SyncError> => {
  const args = Object.entries(fields).flatMap(([k, v]) => [k, String(v)])
  return args.length === 0 ? Effect.void : run(() => redis.eval(ADVANCE_SCRIPT, 1, SYNC_STATE_KEY, ...args)).pipe(Effect.asVoid)
}

/** A full run finished: forget where an interrupted one would have gone on. */
export const clearUnfinishedFull = (redis: Redis): Effect.Effect<void, SyncError> =>
  run(() => redis.hdel(SYNC_STATE_KEY, "full_through", "full_row_days")).pipe(Effect.asVoid)

/** What a prune removed. */
export interface Pruned {
  /** Days whose indexes were dropped whole. */
  readonly days: number
  /** Index entries removed from the day that straddles the cutoff. */
  readonly entries: number
  /** Row hashes deleted explicitly (only those whose own TTL had not yet removed them). */
  readonly hashes: number
}

const CHUNK = 5_000

/** UNLINK `usage:<id>` for ids, in chunks; returns how many existed. */
const unlinkHashes = (redis: Redis, ids: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    let removed = 0
    for (let i = 0; i < ids.length; i += CHUNK) {
      removed += yield* run(() => redis.unlink(...ids.slice(i, i + CHUNK).map(usageHashKey)))
    }
    return removed
  })

/**
 * Remove what is older than `cutoffMs` (now − rowDays): days wholly before it are dropped (their
 * index keys, their day set, and any row hash still there, found through the day's time index);
 * in the day that holds the cutoff, ZREMRANGEBYSCORE cuts every index below it. Row hashes expire
 * by their own TTL; `deleteHashes` also deletes those of the cut entries, for when rows were
 * written with a longer window than now (sync_row_days lowered).
 */
export const pruneUsageMirror = (redis: Redis, cutoffMs: number, deleteHashes: boolean): Effect.Effect<Pruned, SyncError> =>
  Effect.gen(function*() {
    const cutoffDayStart = utcDayStart(cutoffMs)
    const oldDays = yield* run(() => redis.zrangebyscore(DAYS_KEY, "-inf", `(${cutoffDayStart}`))
    let hashes = 0
    for (const day of oldDays) {
      const timeKey = timeIndexKey(day)
      for (;;) {
        const ids = yield* run(() => redis.zrange(timeKey, "0", String(CHUNK - 1)))
        if (ids.length === 0) break
        hashes += yield* unlinkHashes(redis, ids)
        yield* run(() => redis.zrem(timeKey, ...ids))
      }
      const names = yield* run(() => redis.smembers(dayIndexesKey(day)))
      for (let i = 0; i < names.length; i += CHUNK) yield* run(() => redis.unlink(...names.slice(i, i + CHUNK)))
      yield* run(() => redis.unlink(timeKey, dayIndexesKey(day)))
      yield* run(() => redis.zrem(DAYS_KEY, day))
    }
    const day = utcDay(cutoffMs)
    const timeKey = timeIndexKey(day)
    const below = `(${cutoffMs}`
    if (deleteHashes) {
      for (;;) {
        const ids = yield* run(() => redis.zrangebyscore(timeKey, "-inf", below, "LIMIT", 0, CHUNK))
        if (ids.length === 0) break
        hashes += yield* unlinkHashes(redis, ids)
        yield* run(() => redis.zrem(timeKey, ...ids))
      }
    }
    const names = yield* run(() => redis.smembers(dayIndexesKey(day)))
    let entries = 0
    for (let i = 0; i < names.length + 1; i += CHUNK) {
      const pipeline = redis.pipeline()
      if (i === 0) pipeline.zremrangebyscore(timeKey, "-inf", below)
      for (const name of names.slice(i, i + CHUNK)) pipeline.zremrangebyscore(name, "-inf", below)
      const results = yield* exec(pipeline)
      for (const [, n] of results) entries += Number(n)
    }
    return { days: oldDays.length, entries, hashes }
  })

/** One API key as the sync copies it (no secret: the key's SHA-256 is its name). */
export interface ApiKeyCopy {
  readonly id: string
  readonly key_hash: string
  readonly key_prefix: string
  readonly tier: string
  readonly lrs_enabled: boolean
  readonly status: string
  readonly expires_at: number | null
  readonly updated_at: number
}

/** HSET `apikey:<hash>` for every key (expires_at removed when the key no longer expires). */
export const writeApiKeys = (redis: Redis, keys: ReadonlyArray<ApiKeyCopy>): Effect.Effect<number, SyncError> =>
  Effect.gen(function*() {
    for (let i = 0; i < keys.length; i += CHUNK) {
      const pipeline = redis.pipeline()
      for (const k of keys.slice(i, i + CHUNK)) {
        const name = apiKeyHashKey(k.key_hash)
        const values: Record<(typeof API_KEY_FIELDS)[number], string> = {
          id: k.id, prefix: k.key_prefix, tier: k.tier, lrs_enabled: String(k.lrs_enabled), status: k.status,
          expires_at: k.expires_at === null ? "" : String(k.expires_at), updated_at: String(k.updated_at)
        }
        if (k.expires_at === null) {
          const { expires_at: _, ...rest } = values
          pipeline.hset(name, rest)
          pipeline.hdel(name, "expires_at")
        } else pipeline.hset(name, values)
      }
      yield* exec(pipeline)
    }
    return keys.length
  })

/** HSET `app:config` with the parameters (what ParamsLive publishes too). */
export const writeAppConfig = (redis: Redis, key: string, record: Readonly<Record<string, string>>): Effect.Effect<number, SyncError> =>
  Object.keys(record).length === 0 ? Effect.succeed(0) : run(() => redis.hset(key, record)).pipe(Effect.as(Object.keys(record).length))
