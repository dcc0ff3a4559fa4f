import { assert, describe, layer } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"
import { migrate } from "../src/layers/migrations/index.ts"
import { handleUsageMessages } from "../src/programs/queuedWriter/handler.ts"
import { freshPgLayer } from "./support/services.ts"
import { monthlyCounters, MONTH_START, usageLogBody, storedIds, usageRow } from "./queuedWriterSupport.ts"

const logs: Array<string> = []
const CapturedLogs = Logger.layer([Logger.make(({ message }) => {
  logs.push((Array.isArray(message) ? message : [message]).map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join(" "))
})])

const Database = Layer.effectDiscard(migrate).pipe(Layer.provideMerge(freshPgLayer("queued_writer_handler", 4)))

const emptyTables = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`TRUNCATE usage_logs, api_key_usage_monthly`
  logs.length = 0
})

/** The first day of the UTC month of `ms`, as the counters' `month` reads. */
const monthOf = (ms: number) => `${new Date(ms).toISOString().slice(0, 7)}-01`
const MONTH = monthOf(MONTH_START)

describe("handleUsageMessages (the queued writer's handler) on PostgreSQL", () => {
  layer(Layer.merge(Database, CapturedLogs))((it) => {
    it.effect("stores good messages once, names poison ones, and a message delivered twice adds no row and no count twice", () =>
      Effect.gen(function*() {
        yield* emptyTables
        const key = randomUUID()
        // Now: rows in today's day partition of usage_logs (the others of this file land in the default partition).
        const now = Date.now()
        const first = [usageRow({ api_key_id: key, created_at: now }), usageRow({ api_key_id: key, created_at: now + 1 })]
        const second = [usageRow({ api_key_id: key, service: "LRS", endpoint: "/report", created_at: now + 2 })]
        const messages = [
          { id: "m-good-1", body: usageLogBody(first) },
          { id: "m-poison", body: "{\"type\":\"usage_log\",\"v\":2}" },
          { id: "m-good-2", body: usageLogBody(second) },
          // The same message again in the same receive (a producer retry sent it twice).
          { id: "m-good-1-again", body: usageLogBody(first) }
        ]
        const outcome = yield* handleUsageMessages(messages)
        assert.deepStrictEqual([...outcome.stored].sort(), ["m-good-1", "m-good-1-again", "m-good-2"])
        assert.deepStrictEqual(outcome.poison.map((p) => p.id), ["m-poison"])
        assert.match(outcome.poison[0]!.reason, /version 2/)
        assert.strictEqual(outcome.rows, 5)
        assert.strictEqual(outcome.inserted, 3)
        assert.isTrue(logs.some((l) => l.includes("poison message m-poison: ") && l.includes("version 2")), logs.join("\n"))

        // Delivered again later (visibility expired mid-write), beside a new message of the same key:
        // only the new row is stored, and the key's counters grow by it alone.
        const third = [usageRow({ api_key_id: key, created_at: now + 3 })]
        const again = yield* handleUsageMessages([messages[0]!, messages[2]!, { id: "m-good-3", body: usageLogBody(third) }])
        assert.strictEqual(again.inserted, 1)
        assert.deepStrictEqual(again.stored, ["m-good-1", "m-good-2", "m-good-3"])

        assert.deepStrictEqual(yield* storedIds, [...first, ...second, ...third].map((r) => r.id).sort())
        assert.deepStrictEqual(yield* monthlyCounters, [{ api_key_id: key, month: monthOf(now), requests: 4, queries: 3, reports: 1 }])
        const sql = yield* SqlClient.SqlClient
        const partitions = yield* sql<{ readonly p: string }>`SELECT DISTINCT tableoid::regclass::text AS p FROM usage_logs`
        assert.deepStrictEqual(partitions.map((r) => r.p), [`usage_logs_${new Date(now).toISOString().slice(0, 10).replaceAll("-", "")}`])
      }))

    it.effect("counts per key and month what the quota charges: answered LPO queries (each asset of /prices), answered LRS reports", () =>
      Effect.gen(function*() {
        yield* emptyTables
        const [a, b] = [randomUUID(), randomUUID()].sort() as [string, string]
        const nextMonth = Date.UTC(2027, 0, 2)
        const rows = [
          usageRow({ api_key_id: a, endpoint: "/prices", asset: "BTC,ETH,SOL" }),
          usageRow({ api_key_id: a, status_code: 429, error_code: "RATE_LIMITED" }),
          usageRow({ api_key_id: a, service: "LRS", endpoint: "/report", status_code: 500, error_code: "INTERNAL" }),
          usageRow({ api_key_id: a, created_at: nextMonth }),
          usageRow({ api_key_id: b, protocol: "udp" }),
          usageRow({ api_key_id: null, status_code: 401, error_code: "INVALID_KEY" })
        ]
        const outcome = yield* handleUsageMessages([{ id: "m", body: usageLogBody(rows) }])
        assert.strictEqual(outcome.inserted, 6)
        assert.deepStrictEqual(yield* monthlyCounters, [
          { api_key_id: a, month: MONTH, requests: 3, queries: 3, reports: 0 },
          { api_key_id: a, month: "2027-01-01", requests: 1, queries: 1, reports: 0 },
          { api_key_id: b, month: MONTH, requests: 1, queries: 1, reports: 0 }
        ])
      }))

    it.effect("a message whose rows the database refuses is poison; the rest of the batch is stored", () =>
      Effect.gen(function*() {
        yield* emptyTables
        const good = [usageRow(), usageRow()]
        const outcome = yield* handleUsageMessages([
          { id: "m-good", body: usageLogBody(good) },
          { id: "m-bad-id", body: usageLogBody([usageRow({ id: "not-a-uuid" })]) }
        ])
        assert.deepStrictEqual(outcome.stored, ["m-good"])
        assert.deepStrictEqual(outcome.poison.map((p) => p.id), ["m-bad-id"])
        assert.match(outcome.poison[0]!.reason, /refused by the database: .*uuid/)
        assert.deepStrictEqual(yield* storedIds, good.map((r) => r.id).sort())
      }))

    it.effect("a database failure fails the whole batch: nothing stored, nothing counted, no message done", () =>
      Effect.gen(function*() {
        yield* emptyTables
        const sql = yield* SqlClient.SqlClient
        yield* sql`ALTER TABLE api_key_usage_monthly RENAME TO api_key_usage_monthly_away`
        const result = yield* Effect.flip(handleUsageMessages([{ id: "m", body: usageLogBody([usageRow()]) }])).pipe(
          Effect.ensuring(sql`ALTER TABLE api_key_usage_monthly_away RENAME TO api_key_usage_monthly`.pipe(Effect.orDie))
        )
        assert.strictEqual(result._tag, "UsageStoreError")
        assert.deepStrictEqual(yield* storedIds, [])
      }))
  })
})
