import { assert, describe, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { Redis } from "ioredis"
import { randomUUID } from "node:crypto"
import { afterAll } from "vitest"
import type { UsageRow } from "../src/domain/usage.ts"
import { unpackSketch } from "../src/domain/latencySketch.ts"
import {
  API_KEY_FIELDS, DAY_MS, dayIndexExpiresAt, DAYS_KEY, decodeRollupCell, indexKeysOf, rollupField, rollupKey, SYNC_STATE_KEY,
  timeIndexKey, usageRowFromHash, utcDay
} from "../src/domain/usageMirrorKeys.ts"
import { refreshUsageRollupDays } from "../src/layers/rollup/UsageRollupLive.ts"
import { migrate } from "../src/layers/migrations/index.ts"
import { nonEmptyRows } from "../src/layers/sqlRows.ts"
import { runSync, type SyncOptions } from "../src/programs/sync/syncJob.ts"
import { ReaderSql } from "../src/services/Database.ts"
import { freshPgLayer, freshRedis } from "./support/services.ts"
import { usageRow } from "./support/usageFacts.ts"

/** This file's Redis database (other test files use their own numbers). */
const REDIS_DB = 9
const redis = new Redis(freshRedis(REDIS_DB))
afterAll(() => redis.quit())

const Pg = freshPgLayer("sync", 4)
const Database = Layer.effect(ReaderSql, Effect.gen(function*() {
  return yield* SqlClient.SqlClient
})).pipe(
  Layer.provideMerge(Layer.effectDiscard(migrate).pipe(Layer.provideMerge(Pg)))
)

const HOUR = 3_600_000
const OPTIONS: SyncOptions = { full: false, lagMs: 6 * HOUR, batchSize: 250 }

const KEYS = [randomUUID(), randomUUID(), randomUUID()]
const ASSETS = ["BTC", "ETH", "odd:asset, \"quoted\"\n"]
const PRICES = [97_000.5, 0.1 + 0.2, 1e-7, 123_456_789.123_456_79, -0, 5e300]

/** A row at `createdAt` with varied columns: keyless, asset-less, NULL price and error code, hostile text. */
const row = (createdAt: number, n: number): UsageRow =>
  usageRow({
    created_at: createdAt,
    api_key_id: n % 5 === 0 ? null : KEYS[n % KEYS.length]!,
    asset: n % 7 === 0 ? null : ASSETS[n % ASSETS.length]!,
    price: n % 4 === 0 ? null : PRICES[n % PRICES.length]!,
    error_code: n % 6 === 0 ? "RATE_LIMITED" : null,
    status_code: n % 6 === 0 ? 429 : 200,
    request_id: `req-${n}-ü,"\t`,
    latency_us: n * 7 + 1,
    bytes_out: 100 + n
  })

const insertRows = (rows: ReadonlyArray<UsageRow>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    for (let i = 0; i < rows.length; i += 1_000) {
      yield* sql`INSERT INTO usage_logs ${sql.insert(nonEmptyRows(rows.slice(i, i + 1_000).map((r) => ({ ...r, created_at: new Date(r.created_at) }))))}`
    }
  })

const resetAll = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`TRUNCATE usage_logs, usage_daily_rollup, usage_daily_rollup_dim, usage_daily_rollup_days`
  yield* sql`UPDATE application_parameters SET value = '93' WHERE name = 'sync_row_days'`
  yield* Effect.promise(() => redis.flushdb())
})

/** Every key of the mirror's patterns (SCAN). */
const keysMatching = (pattern: string) =>
  Effect.promise(async () => {
    const out: Array<string> = []
    let cursor = "0"
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000)
      cursor = next
      out.push(...keys)
    } while (cursor !== "0")
    return out.sort()
  })

/** The mirror as data: rows by id, and each index key's members with scores. */
const mirror = Effect.gen(function*() {
  const hashKeys = (yield* keysMatching("usage:*")).filter((k) => !k.startsWith("usage:idx:") && !k.startsWith("usage:sync") && !k.startsWith("usage:rollup:"))
  const rows = new Map<string, UsageRow | undefined>()
  for (const k of hashKeys) rows.set(k.slice("usage:".length), usageRowFromHash(yield* Effect.promise(() => redis.hgetall(k))))
  const indexes = new Map<string, ReadonlyArray<string>>()
  for (const k of yield* keysMatching("usage:idx:*")) {
    if (k === DAYS_KEY || k.startsWith("usage:idx:day:")) continue
    indexes.set(k, yield* Effect.promise(() => redis.zrange(k, "0", "-1", "WITHSCORES")))
  }
  return { rows, indexes }
})

/** What the mirror must hold for the SQL rows with created_at >= from (and < to). */
const expected = (from: number, to = Number.POSITIVE_INFINITY) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const stored = yield* sql<{ id: string; request_id: string; api_key_id: string | null; service: UsageRow["service"]; protocol: UsageRow["protocol"]; endpoint: string; asset: string | null; quote: string | null; source: string | null; price: number | null; status_code: number; error_code: string | null; latency_us: number; client_ip: string; node: string; region: string; bytes_out: number; created_at: Date }>`
      SELECT id::text AS id, request_id, api_key_id::text AS api_key_id, service, protocol, endpoint, asset, quote, source, price,
        status_code, error_code, latency_us, client_ip, node, region, bytes_out, created_at
      FROM usage_logs WHERE created_at >= ${new Date(from)} ORDER BY created_at, id`
    const rows = new Map<string, UsageRow | undefined>()
    const members = new Map<string, Array<[number, string]>>()
    for (const r of stored) {
      const createdAt = r.created_at.getTime()
      if (createdAt >= to) continue
      rows.set(r.id, { ...r, created_at: createdAt })
      for (const k of indexKeysOf(r, utcDay(createdAt))) {
        const list = members.get(k) ?? []
        list.push([createdAt, r.id])
        members.set(k, list)
      }
    }
    const indexes = new Map<string, ReadonlyArray<string>>()
    for (const k of [...members.keys()].sort()) {
      // ZRANGE order: score, then member.
      const sorted = members.get(k)!.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
      indexes.set(k, sorted.flatMap(([score, id]) => [id, String(score)]))
    }
    return { rows, indexes }
  })

const sortedEntries = <V>(m: ReadonlyMap<string, V>) => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))

const assertMirrorEquals = (actual: { rows: ReadonlyMap<string, unknown>; indexes: ReadonlyMap<string, unknown> }, want: { rows: ReadonlyMap<string, unknown>; indexes: ReadonlyMap<string, unknown> }) => {
  assert.strictEqual(actual.rows.size, want.rows.size, "row hashes")
  assert.deepStrictEqual(sortedEntries(actual.rows), sortedEntries(want.rows))
  assert.deepStrictEqual([...actual.indexes.keys()].sort(), [...want.indexes.keys()].sort())
  assert.deepStrictEqual(sortedEntries(actual.indexes), sortedEntries(want.indexes))
}

const state = Effect.promise(() => redis.hgetall(SYNC_STATE_KEY))

describe("tb sync (in process) against PostgreSQL and Redis", () => {
  layer(Database, { timeout: 60_000, excludeTestServices: true })((it) => {
    it.effect("first run loads the 93-day window: one hash per row, day indexes by time, key and asset, TTLs; rows older than the window are left out", () =>
      Effect.gen(function*() {
        yield* resetAll
        const now = Date.now()
        // 96 days of history, one row every ~50 minutes, the oldest outside the window.
        const history = Array.from({ length: 2_800 }, (_, n) => row(now - n * 50 * 60_000 - 1_000, n))
        yield* insertRows(history)
        const result = yield* runSync(redis, OPTIONS)
        assert.strictEqual(result.mode, "full")
        assert.strictEqual(result.fullReason, "first run")
        const keepFrom = result.to - 93 * DAY_MS
        const want = yield* expected(keepFrom)
        assert.isAbove(want.rows.size, 2_600)
        assert.isBelow(want.rows.size, history.length)
        assert.strictEqual(result.rows, want.rows.size)
        assertMirrorEquals(yield* mirror, want)

        // Expiry: each hash with its row (created_at + 93 days), each index with its day.
        for (const r of history.slice(0, 50)) {
          assert.strictEqual(yield* Effect.promise(() => redis.pexpiretime(`usage:${r.id}`)), r.created_at + 93 * DAY_MS)
        }
        const day = utcDay(history[10]!.created_at)
        assert.strictEqual(yield* Effect.promise(() => redis.pexpiretime(timeIndexKey(day))), dayIndexExpiresAt(day, 93))

        const s = yield* state
        assert.strictEqual(Number(s["complete_through"]), result.to - OPTIONS.lagMs)
        assert.strictEqual(Number(s["synced_through"]), history[0]!.created_at)
        assert.strictEqual(s["row_days"], "93")
      }))

    it.effect("incremental runs read from complete_through; a late row (old created_at, inserted after a newer row was synced) is picked up; writes are idempotent", () =>
      Effect.gen(function*() {
        yield* resetAll
        const now = Date.now()
        yield* insertRows(Array.from({ length: 400 }, (_, n) => row(now - n * 10 * 60_000 - 1_000, n)))
        const first = yield* runSync(redis, OPTIONS)
        assert.strictEqual(first.mode, "full")
        const synced = Number((yield* state)["synced_through"])

        // Committed after the first run, created before rows it already synced: what the queued
        // writer or a spool replay does. One is within the lag, one older than complete_through.
        const late = row(synced - 2 * HOUR, 10_001)
        const tooLate = row(first.completeThrough - HOUR, 10_002)
        const fresh = [row(Date.now() - 500, 10_003), row(Date.now() - 400, 10_004)]
        yield* insertRows([late, tooLate, ...fresh])

        const second = yield* runSync(redis, OPTIONS)
        assert.strictEqual(second.mode, "incremental")
        assert.strictEqual(second.from, first.completeThrough)
        const m = yield* mirror
        assert.isDefined(m.rows.get(late.id), "a late row within the lag is synced")
        for (const r of fresh) assert.isDefined(m.rows.get(r.id))
        // Rows read twice (the lag window) are written twice: still one hash and one index entry each.
        const keepFrom = second.to - 93 * DAY_MS
        const want = yield* expected(keepFrom)
        want.rows.delete(tooLate.id)
        for (const [k, members] of want.indexes) {
          const at = members.indexOf(tooLate.id)
          if (at >= 0) want.indexes.set(k, [...members.slice(0, at), ...members.slice(at + 2)])
        }
        assertMirrorEquals(m, want)
        // Older than the lag: only a full run reaches it (docs/sync.md, "Late rows").
        assert.isUndefined(m.rows.get(tooLate.id))
        const full = yield* runSync(redis, { ...OPTIONS, full: true })
        assert.strictEqual(full.fullReason, "requested")
        assertMirrorEquals(yield* mirror, yield* expected(full.to - 93 * DAY_MS))
        // Once more in full: nothing is added twice.
        const size = yield* Effect.promise(() => redis.dbsize())
        const again = yield* runSync(redis, { ...OPTIONS, full: true })
        assert.strictEqual(again.rows, full.rows)
        assert.strictEqual(yield* Effect.promise(() => redis.dbsize()), size)
        assertMirrorEquals(yield* mirror, yield* expected(again.to - 93 * DAY_MS))
      }))

    it.effect("sync_row_days lowered: the next run is full, and hashes and index entries older than the new window are removed (whole days and the cutoff day's ZREMRANGEBYSCORE)", () =>
      Effect.gen(function*() {
        yield* resetAll
        const now = Date.now()
        const history = Array.from({ length: 1_000 }, (_, n) => row(now - n * 2 * HOUR - 1_000, n))
        yield* insertRows(history)
        yield* runSync(redis, OPTIONS)
        const sql = yield* SqlClient.SqlClient
        yield* sql`UPDATE application_parameters SET value = '30' WHERE name = 'sync_row_days'`
        const narrowed = yield* runSync(redis, OPTIONS)
        assert.strictEqual(narrowed.fullReason, "sync_row_days changed")
        const keepFrom = narrowed.to - 30 * DAY_MS
        assert.isAbove(narrowed.pruned.days, 50)
        assert.isAbove(narrowed.pruned.hashes, 600)
        assert.isAbove(narrowed.pruned.entries, 0)
        assertMirrorEquals(yield* mirror, yield* expected(keepFrom))
        // The days list keeps only days of the window; the TTLs follow the new window.
        const days = yield* Effect.promise(() => redis.zrange(DAYS_KEY, "0", "-1"))
        assert.strictEqual(days[0], utcDay(keepFrom))
        const kept = history.find((r) => r.created_at >= keepFrom + DAY_MS)!
        assert.strictEqual(yield* Effect.promise(() => redis.pexpiretime(`usage:${kept.id}`)), kept.created_at + 30 * DAY_MS)
        assert.strictEqual((yield* state)["row_days"], "30")
        // The next run is incremental again.
        assert.strictEqual((yield* runSync(redis, OPTIONS)).mode, "incremental")
      }))

    it.effect("prune, two days on: index entries older than the window go (whole days dropped, the cutoff day cut by score), hashes by their TTL", () =>
      Effect.gen(function*() {
        yield* resetAll
        const now = Date.now()
        const history = Array.from({ length: 1_200 }, (_, n) => row(now - n * 2 * HOUR - 1_000, n))
        yield* insertRows(history)
        yield* runSync(redis, { ...OPTIONS, nowMs: now })
        const later = now + 2 * DAY_MS
        const run = yield* runSync(redis, { ...OPTIONS, nowMs: later })
        assert.strictEqual(run.mode, "incremental")
        const cutoff = later - 93 * DAY_MS
        assert.isAtLeast(run.pruned.days, 1)
        assert.isAbove(run.pruned.entries, 0)
        // Indexes hold exactly the rows of the window.
        const m = yield* mirror
        const want = yield* expected(cutoff)
        assert.deepStrictEqual(sortedEntries(m.indexes), sortedEntries(want.indexes))
        // Hashes of rows now out of the window are still there only until their TTL, which lies
        // before the run's "now" (this Redis's clock has not moved two days on).
        for (const r of history.filter((h) => h.created_at < cutoff && h.created_at >= now - 93 * DAY_MS)) {
          const expiresAt = yield* Effect.promise(() => redis.pexpiretime(`usage:${r.id}`))
          if (expiresAt !== -2) assert.isAtMost(expiresAt, later)
        }
        const days = yield* Effect.promise(() => redis.zrange(DAYS_KEY, "0", "-1"))
        assert.strictEqual(days[0], utcDay(cutoff))
      }))

    it.effect("copies the daily rollup (usage_daily_rollup_dim) to usage:rollup:<key>:<day>, and a day refreshed again after late rows is copied again", () =>
      Effect.gen(function*() {
        yield* resetAll
        const sql = yield* SqlClient.SqlClient
        yield* sql`TRUNCATE usage_daily_rollup, usage_daily_rollup_dim, usage_daily_rollup_days`
        const today = Math.floor(Date.now() / DAY_MS) * DAY_MS
        const days = [today - 3 * DAY_MS, today - 2 * DAY_MS, today - DAY_MS]
        yield* insertRows(days.flatMap((d) => Array.from({ length: 120 }, (_, n) => row(d + n * 600_000 + 1, n))))
        yield* refreshUsageRollupDays(days)
        const first = yield* runSync(redis, OPTIONS)
        assert.strictEqual(first.rollupDays, 3)

        const copied = Effect.gen(function*() {
          const stored = yield* sql<{ api_key_id: string | null; day: string; dimension: string; value: string | null; requests: number; errors: number; bytes_out: number; latency_sketch: Uint8Array }>`
            SELECT api_key_id::text AS api_key_id, to_char(day, 'YYYY-MM-DD') AS day, dimension, value,
              requests::float8 AS requests, errors::float8 AS errors, bytes_out::float8 AS bytes_out, latency_sketch
            FROM usage_daily_rollup_dim`
          assert.isAbove(stored.length, 20)
          for (const r of stored) {
            const cell = decodeRollupCell((yield* Effect.promise(() => redis.hget(rollupKey(r.api_key_id, r.day), rollupField(r.dimension, r.value)))) ?? "")
            assert.isDefined(cell, `${r.api_key_id} ${r.day} ${r.dimension}:${r.value}`)
            assert.deepStrictEqual([cell!.requests, cell!.errors, cell!.bytes_out], [r.requests, r.errors, r.bytes_out])
            assert.deepStrictEqual(cell!.sketch, unpackSketch(r.latency_sketch))
          }
          const fields = yield* Effect.forEach(yield* keysMatching("usage:rollup:*:????-??-??"), (k) => Effect.promise(() => redis.hlen(k)))
          assert.strictEqual(fields.reduce((a, b) => a + b, 0), stored.length, "no field beyond the table's rows")
          return stored
        })
        yield* copied
        assert.deepStrictEqual(yield* Effect.promise(() => redis.zrange("usage:rollup:days", "0", "-1")), days.map(utcDay))

        // Late rows for the first day, the day rolled up again, the next sync copies it again.
        yield* insertRows(Array.from({ length: 30 }, (_, n) => row(days[0]! + 5_000 + n, 500 + n)))
        yield* refreshUsageRollupDays([days[0]!])
        const second = yield* runSync(redis, OPTIONS)
        assert.isAtLeast(second.rollupDays, 1)
        const total = (yield* copied).filter((r) => r.dimension === "day" && r.day === utcDay(days[0]!)).reduce((a, r) => a + r.requests, 0)
        assert.strictEqual(total, 150)
      }))

    it.effect("refreshes API keys (apikey:<hash>, no secret) and app:config", () =>
      Effect.gen(function*() {
        yield* resetAll
        const sql = yield* SqlClient.SqlClient
        const hash = `h${randomUUID().replaceAll("-", "")}`
        const inserted = yield* sql<{ id: string }>`INSERT INTO api_keys (key_hash, key_prefix, tier, lrs_enabled, expires_at)
          VALUES (${hash}, 'tb_abc', 'listener', true, ${new Date(Date.UTC(2030, 0, 1))}) RETURNING id::text AS id`
        const result = yield* runSync(redis, OPTIONS)
        assert.isAtLeast(result.apiKeys, 1)
        const copy = yield* Effect.promise(() => redis.hgetall(`apikey:${hash}`))
        assert.deepStrictEqual(Object.keys(copy).sort(), [...API_KEY_FIELDS].sort())
        assert.include(copy, { id: inserted[0]!.id, prefix: "tb_abc", tier: "listener", lrs_enabled: "true", status: "active", expires_at: String(Date.UTC(2030, 0, 1)) })
        const config = yield* Effect.promise(() => redis.hgetall("app:config"))
        assert.strictEqual(config["sync_row_days"], "93")
        assert.strictEqual(config["usage_retention_days"], "93")
      }))
  })
})
