/**
 * The monthly report limit, counted cluster-wide in Valkey (real Redis, DB 3) by two nodes at once,
 * seeded from the month's report rows in PostgreSQL, and per node while Valkey is unreachable.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"
import { cacheValkeyLayer } from "../src/layers/CacheValkey.ts"
import { migrate } from "../src/layers/migrations/index.ts"
import { ReportQuotaLive } from "../src/layers/reports/ReportQuotaLive.ts"
import { ReportQuota } from "../src/services/UsageReports.ts"
import { freshPgLayer, freshRedis, REDIS_HOST, REDIS_PORT } from "./support/services.ts"
import { tcpRelay } from "./support/tcpRelay.ts"

const REDIS_DB = 3
const redisUrl = freshRedis(REDIS_DB)

/** One node's report counter over its own Valkey connection (`url`), sharing the database. */
const node = (url: string) =>
  Effect.map(Layer.build(ReportQuotaLive.pipe(Layer.provide(cacheValkeyLayer(Redacted.make(url))))), (ctx) => Context.get(ctx, ReportQuota))

describe("ReportQuota (real PostgreSQL and Redis)", () => {
  const PgLive = freshPgLayer("reports_quota", 4)

  it.live("two nodes hand out exactly the limit between them, and both see the count", () =>
    Effect.gen(function*() {
      yield* migrate
      const a = yield* node(redisUrl)
      const b = yield* node(redisUrl)
      const key = randomUUID()
      const now = Date.now()
      const answers = yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b)), (n) => n.admit(key, 5, now), { concurrency: 8 })
      assert.strictEqual(answers.filter((x) => x._tag === "Admitted").length, 5)
      const refused = answers.filter((x) => x._tag === "QuotaExceeded")
      assert.strictEqual(refused.length, 15)
      for (const r of refused) if (r._tag === "QuotaExceeded") assert.isAbove(r.retryAfterSec, 0)
      assert.strictEqual(yield* a.used(key, now), 5)
      assert.strictEqual(yield* b.used(key, now), 5)
      // Unlimited: always admitted, still counted.
      const unlimited = randomUUID()
      for (let i = 1; i <= 3; i++) assert.deepStrictEqual(yield* a.admit(unlimited, null, now), { _tag: "Admitted", limit: null, used: i })
    }).pipe(Effect.provide(PgLive)), 60_000)

  it.live("a report whose answer failed is taken back: only answered reports count", () =>
    Effect.gen(function*() {
      const a = yield* node(redisUrl)
      const key = randomUUID()
      const now = Date.now()
      assert.strictEqual((yield* a.admit(key, 2, now))._tag, "Admitted")
      assert.strictEqual((yield* a.admit(key, 2, now))._tag, "Admitted")
      yield* a.release(key, now)
      assert.strictEqual(yield* a.used(key, now), 1)
      assert.deepStrictEqual(yield* a.admit(key, 2, now), { _tag: "Admitted", limit: 2, used: 2 })
      assert.strictEqual((yield* a.admit(key, 2, now))._tag, "QuotaExceeded")
    }).pipe(Effect.provide(PgLive)), 60_000)

  it.live("a fresh counter starts from the month's answered reports in the database", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const key = randomUUID()
      const now = Date.now()
      const row = (endpoint: string, status: number, at: number) =>
        sql`INSERT INTO usage_logs (id, request_id, api_key_id, service, protocol, endpoint, status_code, latency_us, client_ip, node, region, bytes_out, created_at)
            VALUES (gen_random_uuid(), 'r', ${key}::uuid, 'LRS', 'http', ${endpoint}, ${status}, 1, '127.0.0.1', 'n', 'local', 1, ${new Date(at)})`
      yield* row("/reports/usage", 200, now - 1000)
      yield* row("/reports/summary", 200, now - 2000)
      yield* row("summary", 200, now - 3000)
      // Not reports: the key route, a refusal, and last month.
      yield* row("/reports/key", 200, now - 1000)
      yield* row("/reports/usage", 429, now - 1000)
      const d = new Date(now)
      yield* row("/reports/usage", 200, Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) - 1000)
      const a = yield* node(redisUrl)
      assert.strictEqual(yield* a.used(key, now), 3)
      assert.deepStrictEqual(yield* a.admit(key, 4, now), { _tag: "Admitted", limit: 4, used: 4 })
      assert.strictEqual((yield* a.admit(key, 4, now))._tag, "QuotaExceeded")
    }).pipe(Effect.provide(PgLive)), 60_000)

  it.live("with Valkey unreachable a node counts alone from what it last saw, and pushes its count when Valkey is back", () =>
    Effect.gen(function*() {
      const relay = yield* Effect.promise(() => tcpRelay(REDIS_HOST, REDIS_PORT))
      yield* Effect.addFinalizer(() => Effect.promise(() => relay.close()))
      const a = yield* node(`redis://127.0.0.1:${relay.port}/${REDIS_DB}`)
      const b = yield* node(redisUrl)
      const key = randomUUID()
      const now = Date.now()
      for (let i = 0; i < 4; i++) assert.strictEqual((yield* a.admit(key, 10, now))._tag, "Admitted")
      relay.cut()
      const alone = yield* Effect.forEach(Array.from({ length: 8 }), () => a.admit(key, 10, now))
      assert.deepStrictEqual(alone.map((x) => x._tag), [...Array(6).fill("Admitted"), "QuotaExceeded", "QuotaExceeded"])
      // The cluster has not heard of them yet.
      assert.strictEqual(yield* b.used(key, now), 4)
      relay.restore()
      // Once its connection is back, the node's own count reaches the cluster (at its next admit or look).
      for (let i = 0; i < 100 && (yield* b.used(key, now)) < 10; i++) {
        yield* a.used(key, now)
        yield* Effect.sleep("100 millis")
      }
      assert.strictEqual(yield* b.used(key, now), 10)
      assert.strictEqual((yield* a.admit(key, 10, now))._tag, "QuotaExceeded")
      assert.strictEqual((yield* b.admit(key, 10, now))._tag, "QuotaExceeded")
      assert.strictEqual(yield* b.used(key, now), 10)
    }).pipe(Effect.provide(PgLive)), 60_000)
})
