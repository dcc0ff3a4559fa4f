import { Effect, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"
import { UsageRow } from "../src/domain/usage.ts"
import type { QueueMessage } from "../src/programs/queuedWriter/handler.ts"

/** Helpers of the queued writer's tests (test/queuedWriter*.test.ts). */

/** A minute into the month, so a test's rows never straddle a month boundary. */
export const MONTH_START = Date.UTC(2026, 11, 1, 0, 1)

export const usageRow = (overrides: Partial<UsageRow> = {}): UsageRow => ({
  id: randomUUID(),
  request_id: `req-${randomUUID()}`,
  api_key_id: randomUUID(),
  service: "LPO",
  protocol: "http",
  endpoint: "/price",
  asset: "BTC",
  quote: "USD",
  source: "consensus",
  price: 97_000.5,
  status_code: 200,
  error_code: null,
  latency_us: 40,
  client_ip: "10.0.0.1",
  node: "node-a",
  region: "local",
  bytes_out: 200,
  created_at: MONTH_START + Math.floor(Math.random() * 86_400_000),
  ...overrides
})

const StandInMessage = Schema.fromJsonString(Schema.Struct({
  type: Schema.Literal("usage_log"),
  v: Schema.Literal(1),
  rows: Schema.Array(UsageRow)
}))

/** The usage message format as a plain JSON stand-in, until src/domain/usageQueueMessage.ts lands. */
export const standInBody = (rows: ReadonlyArray<UsageRow>): string => JSON.stringify({ type: "usage_log", v: 1, rows })

export const standInDecode = (body: string): QueueMessage => {
  const decoded = Schema.decodeUnknownExit(StandInMessage)(body)
  if (decoded._tag === "Failure") return { _tag: "Poison", reason: "not a usage_log message" }
  if (decoded.value.rows.length === 0) return { _tag: "Poison", reason: "no rows" }
  return { _tag: "UsageLog", rows: decoded.value.rows }
}

/** Stored usage rows' ids (sorted, duplicates kept) and the counters, read back. */
export const storedIds = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ readonly id: string }>`SELECT id::text AS id FROM usage_logs ORDER BY id`
  return rows.map((r) => r.id)
})

export interface MonthlyCounter {
  readonly api_key_id: string
  readonly month: string
  readonly requests: number
  readonly queries: number
  readonly reports: number
}

export const monthlyCounters = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  return yield* sql<MonthlyCounter>`
    SELECT api_key_id::text AS api_key_id, to_char(month, 'YYYY-MM-DD') AS month,
           requests::int AS requests, queries::int AS queries, reports::int AS reports
    FROM api_key_usage_monthly ORDER BY api_key_id, month`
})
