/**
 * /reports/usage's row source against the real PostgreSQL: every page equals the same SQL over the
 * same rows, another key's rows never appear, and keyset (cursor) paging stays exact while rows
 * arrive, where offset paging would repeat rows.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"
import { migrate } from "../src/layers/migrations/index.ts"
import { UsageReportsDatabase } from "../src/layers/reports/UsageReportsDatabase.ts"
import { decodeCursor, encodeCursor } from "../src/programs/lrs/cursor.ts"
import { type ReportRow, UsageReports, type UsageRowsQuery } from "../src/services/UsageReports.ts"
import { freshPgLayer } from "./support/services.ts"
import { ReaderSqlFromWriter } from "../src/layers/DatabaseLive.ts"

const DAY = 86_400_000
const NOW = Date.now()
const KEY_A = randomUUID()
const KEY_B = randomUUID()

/**
 * `n` rows of `key` over [start, start + span) at whole-millisecond times, many sharing a time
 * (every time is used by 3 rows), so ties on created_at are decided by id.
 */
const insertRows = (key: string, n: number, start: number, span: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`
      INSERT INTO usage_logs (id, request_id, api_key_id, service, protocol, endpoint, asset, quote, source, price,
                              status_code, error_code, latency_us, client_ip, node, region, bytes_out, created_at)
      SELECT gen_random_uuid(), 'r-' || g, ${key}::uuid, (ARRAY['LPO', 'LPO', 'LRS'])[1 + g % 3], (ARRAY['http', 'udp'])[1 + g % 2],
             (ARRAY['/price', '/prices', '/reports/usage', 'price'])[1 + (g / 3) % 4],
             (ARRAY['BTC', 'ETH', 'SOL', NULL])[1 + (g / 5) % 4], 'USD', (ARRAY['consensus', 'kraken', NULL])[1 + (g / 7) % 3],
             CASE WHEN g % 4 = 0 THEN NULL ELSE 97000.125 + g END,
             (ARRAY[200, 200, 200, 404, 429])[1 + (g / 11) % 5], CASE WHEN g % 17 = 0 THEN 'UNKNOWN_ASSET' END,
             (g * 37) % 100000, '10.0.0.' || (g % 200), 'n' || (g % 3), 'local', 100 + g % 900,
             ${new Date(start).toISOString()}::timestamptz + (floor(random() * ${span}::float8 / 3) * 3)::int * interval '1 millisecond'
      FROM generate_series(1, ${n}::int) g`
  })

interface SqlRow extends ReportRow {
  readonly api_key_id: string
}

/** What the page must hold: the same filter and order in plain SQL. */
const expectedIds = (q: UsageRowsQuery) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql.unsafe<{ id: string }>(`
      SELECT id::text AS id FROM usage_logs
      WHERE api_key_id = $1::uuid AND created_at >= $2::timestamptz AND created_at < $3::timestamptz
        AND ($4::text IS NULL OR asset = $4) AND ($5::text IS NULL OR service = $5)
      ORDER BY created_at DESC, id DESC`,
      [q.apiKeyId, new Date(q.from).toISOString(), new Date(q.to).toISOString(), q.asset ?? null, q.service ?? null])
    return rows.map((r) => r.id)
  })

const rowsOf = (q: UsageRowsQuery) => Effect.flatMap(UsageReports, (r) => r.rows(q))

/** Every page from the first, following next (through its cursor text, as a client does). */
const allByCursor = (q: UsageRowsQuery, between?: (page: number) => Effect.Effect<void, unknown, SqlClient.SqlClient>) =>
  Effect.gen(function*() {
    const ids: Array<string> = []
    let after = q.after
    for (let page = 0; ; page++) {
      const result = yield* rowsOf({ ...q, after })
      ids.push(...result.rows.map((r) => r.id))
      if (result.next === undefined) return ids
      if (between !== undefined) yield* between(page)
      after = decodeCursor(encodeCursor(result.next))
      assert.isDefined(after)
    }
  })

const query = (over: Partial<UsageRowsQuery>): UsageRowsQuery => ({
  apiKeyId: KEY_A, from: NOW - 3 * DAY, to: NOW + 1, asset: undefined, service: undefined, pageSize: 37, offset: 0, after: undefined, ...over
})

describe("UsageReportsDatabase (real PostgreSQL)", () => {
  const PgLive = freshPgLayer("reports_usage", 4)
  const TestLive = UsageReportsDatabase.pipe(
    Layer.provideMerge(ReaderSqlFromWriter),
    Layer.provideMerge(PgLive)
  )

  it.live("pages equal SQL over the same rows: filters, offsets, cursors, every column", () =>
    Effect.gen(function*() {
      yield* migrate
      yield* insertRows(KEY_A, 3_000, NOW - 3 * DAY, 3 * DAY - 1_000)
      yield* insertRows(KEY_B, 1_000, NOW - 3 * DAY, 3 * DAY - 1_000)
      const cases: ReadonlyArray<Partial<UsageRowsQuery>> = [
        {}, { asset: "BTC" }, { service: "LRS" }, { asset: "SOL", service: "LPO" }, { from: NOW - DAY, to: NOW - DAY / 2 }, { pageSize: 1000 }, { pageSize: 1 , from: NOW - DAY / 20 }
      ]
      for (const c of cases) {
        const q = query(c)
        const expected = yield* expectedIds(q)
        assert.isAbove(expected.length, 0, `rows for ${JSON.stringify(c)}`)
        assert.deepStrictEqual(yield* allByCursor(q), expected, `cursor pages ${JSON.stringify(c)}`)
        const third = yield* rowsOf({ ...q, offset: 2 * q.pageSize })
        assert.deepStrictEqual(third.rows.map((r) => r.id), expected.slice(2 * q.pageSize, 3 * q.pageSize), `offset page ${JSON.stringify(c)}`)
      }
      // Every column as the database has it.
      const sql = yield* SqlClient.SqlClient
      const page = yield* rowsOf(query({ pageSize: 200 }))
      const stored = yield* sql.unsafe<SqlRow>(`
        SELECT id::text AS id, request_id, api_key_id::text AS api_key_id, service, protocol, endpoint, asset, quote, source, price, status_code, error_code,
               latency_us, client_ip, node, region, bytes_out, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_at
        FROM usage_logs WHERE id = ANY($1::uuid[])`, [page.rows.map((r) => r.id)])
      const byId = new Map(stored.map((r) => [r.id, r]))
      for (const row of page.rows) {
        const { api_key_id, ...expected } = byId.get(row.id)!
        assert.strictEqual(api_key_id, KEY_A)
        assert.deepStrictEqual(row, { ...expected, price: expected.price === null ? null : Number(expected.price) })
      }
    }).pipe(Effect.provide(TestLive)), 120_000)

  it.live("never answers another key's rows", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const bIds = new Set((yield* sql<{ id: string }>`SELECT id::text AS id FROM usage_logs WHERE api_key_id = ${KEY_B}::uuid`).map((r) => r.id))
      assert.isAbove(bIds.size, 0)
      const aIds = yield* allByCursor(query({ pageSize: 500 }))
      assert.isAbove(aIds.length, 0)
      assert.isTrue(aIds.every((id) => !bIds.has(id)), "a row of key B answered to key A")
      const asB = yield* allByCursor(query({ apiKeyId: KEY_B, pageSize: 500 }))
      assert.deepStrictEqual(new Set(asB), bIds)
      assert.deepStrictEqual(yield* allByCursor(query({ apiKeyId: randomUUID() })), [])
    }).pipe(Effect.provide(TestLive)), 60_000)

  it.live("cursor paging is stable while new rows arrive (offset paging is not)", () =>
    Effect.gen(function*() {
      const q = query({ pageSize: 50 })
      const before = yield* expectedIds(q)
      // Between pages, new rows arrive (newer than every page already read, some at the same millisecond as the newest).
      const arrive = () => insertRows(KEY_A, 60, NOW - 2, 3)
      const paged = yield* allByCursor(q, (page) => (page < 5 ? arrive() : Effect.void))
      assert.strictEqual(new Set(paged).size, paged.length, "no row twice")
      assert.deepStrictEqual(paged, before, "exactly the rows there were when paging began")
      // The same with offsets repeats rows that the arrivals pushed down.
      const first = yield* rowsOf({ ...q, offset: 0 })
      yield* arrive()
      const second = yield* rowsOf({ ...q, offset: q.pageSize })
      const repeated = second.rows.filter((r) => first.rows.some((f) => f.id === r.id))
      assert.isAbove(repeated.length, 0, "offset paging repeats rows when rows arrive")
    }).pipe(Effect.provide(TestLive)), 60_000)
})
