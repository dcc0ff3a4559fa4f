/**
 * /reports/usage from the sync's Valkey mirror plus the database reader (real PostgreSQL and Redis
 * DB 15): rows older than the sync's complete_through come from Valkey (written by the sync's own
 * writer, then deleted from the database here to prove it), newer ones from the database, and the
 * pages equal the same rows sorted newest first: cursor and offset paging across the split,
 * filters, another key's rows never. Without a usable mirror, the database answers.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { Redis } from "ioredis"
import { randomUUID } from "node:crypto"
import type { UsageRow } from "../src/domain/usage.ts"
import { usageRowText, windowStart } from "../src/domain/usageMirrorKeys.ts"
import { migrate } from "../src/layers/migrations/index.ts"
import { makeMirrorRows } from "../src/layers/reports/UsageReportsMirror.ts"
import { writeSyncState, writeUsageRows } from "../src/layers/sync/usageMirrorValkey.ts"
import { decodeCursor, encodeCursor } from "../src/programs/lrs/cursor.ts"
import type { UsageRowsQuery } from "../src/services/UsageReports.ts"
import { freshPgLayer, freshRedis } from "./support/services.ts"

const REDIS_DB = 15
const redisUrl = freshRedis(REDIS_DB)
const DAY = 86_400_000
const NOW = Date.now()
const SPLIT = NOW - DAY - 12_345
const KEY_A = randomUUID()
const KEY_B = randomUUID()

/** `n` rows of a key over the last 5 days, 3 per millisecond used (ties decided by id). */
const makeRows = (key: string, n: number): Array<UsageRow> =>
  Array.from({ length: n }, (_, g) => ({
    id: randomUUID(), request_id: `m-${g}`, api_key_id: key, service: g % 3 === 0 ? "LRS" : "LPO", protocol: g % 2 === 0 ? "http" : "udp",
    endpoint: g % 3 === 0 ? "/reports/usage" : "/price", asset: [null, "BTC", "ETH"][g % 3] ?? null, quote: "USD", source: g % 4 === 0 ? null : "consensus",
    price: g % 5 === 0 ? null : 97000.125 + g, status_code: g % 7 === 0 ? 429 : 200, error_code: g % 7 === 0 ? "RATE_LIMITED" : null,
    latency_us: (g * 37) % 9000, client_ip: "10.0.0.9", node: "n1", region: "local", bytes_out: 100 + g,
    created_at: NOW - 5 * DAY + Math.floor(((g * 2_654_435_761) % (5 * DAY - 60_000)) / 3) * 3
  }))
const rowsA = makeRows(KEY_A, 1500)
const rowsB = makeRows(KEY_B, 400)

/** The expected answer: the key's rows in the window, filtered, newest first by (created_at, id). */
const expected = (q: UsageRowsQuery) =>
  [...rowsA, ...rowsB]
    .filter((r) => r.api_key_id === q.apiKeyId && r.created_at >= q.from && r.created_at < q.to)
    .filter((r) => (q.asset === undefined || r.asset === q.asset) && (q.service === undefined || r.service === q.service))
    .sort((a, b) => b.created_at - a.created_at || (a.id < b.id ? 1 : -1))
    .map((r) => r.id)

const query = (over: Partial<UsageRowsQuery>): UsageRowsQuery => ({
  apiKeyId: KEY_A, from: NOW - 5 * DAY, to: NOW, asset: undefined, service: undefined, pageSize: 37, offset: 0, after: undefined, ...over
})

describe("UsageReports from the Valkey mirror and the reader (real PostgreSQL and Redis)", () => {
  const PgLive = freshPgLayer("reports_mirror", 4)

  it.live("pages equal the rows newest first across the split: cursors, offsets, filters, only the caller's", () =>
    Effect.gen(function*() {
      yield* migrate
      const sql = yield* SqlClient.SqlClient
      const all = [...rowsA, ...rowsB]
      for (let i = 0; i < all.length; i += 500) {
        yield* sql`INSERT INTO usage_logs ${sql.insert(all.slice(i, i + 500).map((r) => ({ ...r, created_at: new Date(r.created_at) })) as never)}`
      }
      const redis = new Redis(redisUrl)
      yield* Effect.addFinalizer(() => Effect.promise(() => redis.quit()))
      // The sync's part: everything before the split into Valkey, with the sync's writer; then the
      // database forgets those rows, so only the mirror can answer them.
      const older = all.filter((r) => r.created_at < SPLIT)
      yield* writeUsageRows(redis, older.map(usageRowText), 93, windowStart(NOW, 93))
      yield* writeSyncState(redis, { complete_through: SPLIT, row_days: 93 })
      yield* sql`DELETE FROM usage_logs WHERE created_at < ${new Date(SPLIT)}`
      const rows = makeMirrorRows(redis, sql)

      const follow = (q: UsageRowsQuery) =>
        Effect.gen(function*() {
          const ids: Array<string> = []
          let after = q.after
          for (;;) {
            const page = yield* rows({ ...q, after })
            assert.strictEqual(page.source, "mirror")
            ids.push(...page.rows.map((r) => r.id))
            if (page.next === undefined) return ids
            after = decodeCursor(encodeCursor(page.next))
          }
        })
      const cases: ReadonlyArray<Partial<UsageRowsQuery>> = [
        {}, { asset: "BTC" }, { service: "LRS" }, { asset: "ETH", service: "LPO" }, { pageSize: 1000 },
        { from: NOW - 3 * DAY, to: SPLIT + 5 * 3_600_000 }, { from: NOW - 4 * DAY, to: SPLIT }, { from: SPLIT, to: NOW }
      ]
      for (const c of cases) {
        const q = query(c)
        const want = expected(q)
        assert.isAbove(want.length, 0, JSON.stringify(c))
        assert.deepStrictEqual(yield* follow(q), want, `cursor pages ${JSON.stringify(c)}`)
        for (const offset of [0, q.pageSize, 5 * q.pageSize, Math.max(0, want.length - 10)]) {
          const page = yield* rows({ ...q, offset })
          const got = page.rows.map((r) => r.id)
          assert.deepStrictEqual(got, want.slice(offset, offset + q.pageSize), `offset ${offset} ${JSON.stringify(c)}`)
        }
      }
      // A first page that ends exactly where the database's rows end goes on into the mirror.
      const recent = expected(query({ from: SPLIT }))
      const first = yield* rows(query({ pageSize: recent.length }))
      assert.deepStrictEqual(first.rows.map((r) => r.id), recent)
      assert.isDefined(first.next)
      const second = yield* rows(query({ pageSize: 5, after: first.next }))
      assert.deepStrictEqual(second.rows.map((r) => r.id), expected(query({})).slice(recent.length, recent.length + 5))
      // Every column as it was written.
      const byId = new Map(rowsA.map((r) => [r.id, r]))
      for (const r of (yield* rows(query({ pageSize: 1000, to: SPLIT }))).rows) {
        const { api_key_id, ...source } = byId.get(r.id)!
        assert.strictEqual(api_key_id, KEY_A)
        assert.deepStrictEqual(r, { ...source, created_at: new Date(source.created_at).toISOString() })
      }
      // Key B's rows never answer key A, and the other way round.
      const bIds = new Set(rowsB.map((r) => r.id))
      assert.isTrue((yield* follow(query({ pageSize: 500 }))).every((id) => !bIds.has(id)))
      assert.deepStrictEqual(yield* follow(query({ apiKeyId: KEY_B, pageSize: 500 })), expected(query({ apiKeyId: KEY_B })))
    }).pipe(Effect.provide(PgLive)), 120_000)

  it.live("without a usable mirror the database answers (nothing synced, a window older than the mirror keeps, Valkey gone)", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const recentOnly = expected(query({ from: SPLIT }))
      const redis = new Redis(redisUrl)
      // A window reaching further back than row_days keeps: the database (which here lacks the older rows).
      yield* writeSyncState(redis, { row_days: 2 })
      const narrow = yield* makeMirrorRows(redis, sql)(query({ pageSize: 1000 }))
      assert.strictEqual(narrow.source, "database")
      assert.deepStrictEqual(narrow.rows.map((r) => r.id), recentOnly)
      yield* writeSyncState(redis, { row_days: 93 })
      // Valkey gone: the database.
      yield* Effect.promise(() => redis.quit())
      const gone = yield* makeMirrorRows(redis, sql)(query({ pageSize: 1000 }))
      assert.strictEqual(gone.source, "database")
      assert.deepStrictEqual(gone.rows.map((r) => r.id), recentOnly)
      // Nothing synced: the database.
      const fresh = new Redis(redisUrl)
      yield* Effect.addFinalizer(() => Effect.promise(() => fresh.quit()))
      yield* Effect.promise(() => fresh.del("usage:sync"))
      yield* Effect.promise(() => fresh.ping())
      const unsynced = yield* makeMirrorRows(fresh, sql)(query({ pageSize: 1000 }))
      assert.strictEqual(unsynced.source, "database")
    }).pipe(Effect.provide(PgLive)), 60_000)
})
