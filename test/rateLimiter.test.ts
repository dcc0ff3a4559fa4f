import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Deferred, Effect, Fiber, Layer, Stream } from "effect"
import { Reactivity } from "effect/reactivity"
import { SqlClient, type SqlConnection } from "effect/sql"
import { randomUUID } from "node:crypto"
import type { UsageRow } from "../src/domain/usage.ts"
import { migrate } from "../src/layers/migrations/index.ts"
import { insertUsageCounted } from "../src/layers/usage/usageStore.ts"
import { monthKey } from "../src/domain/clusterLimits.ts"
import { makeMemoryCache } from "../src/layers/CacheMemory.ts"
import { RateLimiterLive, seededMarkerKey } from "../src/layers/RateLimiterLive.ts"
import type { ApiKeyRecord, TierLimits } from "../src/services/ApiKeys.ts"
import { Cache, CacheError } from "../src/services/Cache.ts"
import { RateLimiter } from "../src/services/RateLimiter.ts"
import { testParams } from "./support/params.ts"
import { freshPgLayer } from "./support/services.ts"


/** A database without usage this month: every query answers no rows (and is told to `onStatement`). */
const noRows = (onStatement: () => void = () => {}): SqlConnection.Connection => {
  const none = Effect.sync(() => {
    onStatement()
    return []
  })
  return {
    execute: () => none,
    executeRaw: () => none,
    executeStream: () => Stream.empty,
    executeValues: () => none,
    executeValuesUnprepared: () => none,
    executeUnprepared: () => none
  }
}
const databaseOf = (connection: SqlConnection.Connection) =>
  Layer.effect(
    SqlClient.SqlClient,
    SqlClient.make({ acquirer: Effect.succeed(connection), compiler: PgClient.makeCompiler(), driver: "test", spanAttributes: [] })
  ).pipe(Layer.provide(Reactivity.layer))
const EmptyDatabase = databaseOf(noRows())

/** The empty database, counting the statements it is sent. */
const countingEmptyDatabase = () => {
  let statements = 0
  return { layer: databaseOf(noRows(() => void statements++)), statements: () => statements }
}

/**
 * The in-process cache behind knobs: the governor read can fail, and an incrMany can be held
 * after Valkey applied it (the reply is still on its way), as a real round trip is.
 */
const makeFakeCache = () => {
  const inner = makeMemoryCache()
  const control = {
    failGovernorRead: false,
    /** When set, the next incrMany that pushes a key's consumption signals `applied` and waits for `reply`. */
    hold: undefined as { readonly applied: Deferred.Deferred<void>; readonly reply: Effect.Effect<void> } | undefined
  }
  const cache = Cache.of({
    ...inner,
    get: (key) =>
      control.failGovernorRead && key.startsWith("gov:")
        ? Effect.fail(new CacheError({ reason: "Command", message: "governor read failed (test)" }))
        : inner.get(key),
    incrMany: (increments) =>
      Effect.gen(function*() {
        const totals = yield* inner.incrMany(increments)
        const hold = control.hold
        if (hold !== undefined && increments.some((i) => !i.key.startsWith("gov:") && i.by > 0)) {
          control.hold = undefined
          yield* Deferred.succeed(hold.applied, undefined)
          yield* hold.reply
        }
        return totals
      })
  })
  return { inner, control, layer: Layer.succeed(Cache, cache) }
}

const makeKey = (tier: Partial<TierLimits>): ApiKeyRecord => ({
  id: randomUUID(),
  hash: "hash",
  prefix: "tb_test",
  tier: {
    tier: "test",
    ratePerSec: 100,
    burst: 100,
    monthlyQueries: null,
    lrsReportsPerMonth: null,
    lrsRequiresAddon: false,
    webhookAssets: 0,
    partnerWs: false,
    ...tier
  },
  lrsEnabled: false,
  status: "active",
  expiresAt: undefined,
  email: undefined,
  createdAt: 0
})

/** Builds the limiter in the current scope; closing the scope runs its shutdown. */
const buildLimiter = (cache: Layer.Layer<Cache>, reconcileMs: number, database: Layer.Layer<SqlClient.SqlClient, unknown> = EmptyDatabase) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(
      RateLimiterLive.pipe(Layer.provide(Layer.mergeAll(cache, testParams({ rate_reconcile_ms: String(reconcileMs) }), database)))
    )
    // Let the loop's first reconcile (it starts at once) finish, so the test drives the rest.
    yield* Effect.sleep("30 millis")
    return Context.get(context, RateLimiter)
  })

const admitMany = (limiter: RateLimiter["Service"], key: ApiKeyRecord, times: number, now: number) => {
  for (let i = 0; i < times; i++) assert.strictEqual(limiter.admit(key, 1, 0, now)._tag, "Admitted")
}

const counter = (fake: ReturnType<typeof makeFakeCache>, key: string) => fake.inner.get(key).pipe(Effect.map(Number))

describe("RateLimiterLive reconcile", () => {
  it.live("a push that reached the cluster is not pushed again when the governor read fails", () =>
    Effect.gen(function*() {
      const fake = makeFakeCache()
      const limiter = yield* buildLimiter(fake.layer, 60_000)
      const key = makeKey({})
      const now = Date.now()
      admitMany(limiter, key, 3, now)
      limiter.chargeQueries(key, 2, now)
      fake.control.failGovernorRead = true
      yield* limiter.reconcile
      yield* limiter.reconcile
      assert.strictEqual(yield* counter(fake, `rl:${key.id}`), 3)
      assert.strictEqual(yield* counter(fake, `quota:${key.id}:${monthKey(now)}`), 2)
      // The push itself worked: the cluster counts as reachable.
      assert.isTrue(limiter.snapshot().clusterReachable)
    }).pipe(Effect.scoped), 10_000)

  it.live("shutdown while a push is in flight pushes the consumption once", () =>
    Effect.gen(function*() {
      const fake = makeFakeCache()
      const key = makeKey({})
      const applied = yield* Deferred.make<void>()
      yield* Effect.scoped(Effect.gen(function*() {
        const limiter = yield* buildLimiter(fake.layer, 10)
        fake.control.hold = { applied, reply: Effect.sleep("200 millis") }
        admitMany(limiter, key, 5, Date.now())
        // The loop has sent the batch and waits for the reply: now the node shuts down.
        yield* Deferred.await(applied)
      }))
      assert.strictEqual(yield* counter(fake, `rl:${key.id}`), 5)
    }), 10_000)

  it.live("reconciles asked for at the same time push the consumption once", () =>
    Effect.gen(function*() {
      const fake = makeFakeCache()
      const limiter = yield* buildLimiter(fake.layer, 60_000)
      const key = makeKey({})
      const applied = yield* Deferred.make<void>()
      fake.control.hold = { applied, reply: Effect.sleep("100 millis") }
      admitMany(limiter, key, 4, Date.now())
      const first = yield* Effect.forkChild(limiter.reconcile, { startImmediately: true })
      yield* Deferred.await(applied)
      yield* limiter.reconcile
      yield* Fiber.join(first)
      assert.strictEqual(yield* counter(fake, `rl:${key.id}`), 4)
    }).pipe(Effect.scoped), 10_000)

  it.live("a month rollover during a push does not give the new month extra quota", () =>
    Effect.gen(function*() {
      const fake = makeFakeCache()
      const limiter = yield* buildLimiter(fake.layer, 60_000)
      const key = makeKey({ ratePerSec: null, burst: null, monthlyQueries: 10 })
      const now = Date.now()
      const d = new Date(now)
      const nextMonth = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) + 1_000
      assert.strictEqual(limiter.admit(key, 1, 5, now)._tag, "Admitted")
      limiter.chargeQueries(key, 5, now)
      const applied = yield* Deferred.make<void>()
      const reply = yield* Deferred.make<void>()
      fake.control.hold = { applied, reply: Deferred.await(reply) }
      const push = yield* Effect.forkChild(limiter.reconcile, { startImmediately: true })
      yield* Deferred.await(applied)
      // The new month starts while last month's 5 queries are on their way to the cluster.
      assert.strictEqual(limiter.admit(key, 1, 2, nextMonth)._tag, "Admitted")
      limiter.chargeQueries(key, 2, nextMonth)
      yield* Deferred.succeed(reply, undefined)
      yield* Fiber.join(push)
      // 2 used in the new month: 9 more would pass the quota of 10.
      assert.strictEqual(limiter.admit(key, 1, 9, nextMonth)._tag, "QuotaExceeded")
      assert.strictEqual(limiter.admit(key, 1, 8, nextMonth)._tag, "Admitted")
      yield* limiter.reconcile
      assert.strictEqual(yield* counter(fake, `quota:${key.id}:${monthKey(now)}`), 5)
      assert.strictEqual(yield* counter(fake, `quota:${key.id}:${monthKey(nextMonth)}`), 2)
    }).pipe(Effect.scoped), 10_000)
})

const usageRow = (keyId: string, createdAt: number, fields: Partial<UsageRow> = {}): UsageRow => ({
  id: randomUUID(), request_id: `req-${randomUUID()}`, api_key_id: keyId, service: "LPO", protocol: "http", endpoint: "/price",
  asset: "BTC", quote: "USD", source: null, price: 97_000, status_code: 200, error_code: null, latency_us: 40,
  client_ip: "127.0.0.1", node: "test-node", region: "local", bytes_out: 500, created_at: createdAt, ...fields
})

describe("RateLimiterLive monthly quota seed", () => {
  const PgLive = freshPgLayer("rate_limiter_seed", 2)

  it.live("a new cache counts this month's answered price queries already in the database, and no other rows", () =>
    Effect.gen(function*() {
      yield* migrate
      const key = makeKey({ ratePerSec: null, burst: null, monthlyQueries: 10 })
      const now = Date.now()
      const d = new Date(now)
      const monthStart = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1)
      yield* insertUsageCounted([
        // 5 + 2 (a /prices answer counts its assets) = 7 queries this month.
        ...Array.from({ length: 5 }, () => usageRow(key.id, monthStart + 1_000)),
        usageRow(key.id, monthStart + 2_000, { endpoint: "/prices", asset: "BTC,ETH" }),
        // Not counted: a refusal, another service, last month.
        usageRow(key.id, monthStart + 3_000, { status_code: 429, error_code: "RATE_LIMITED" }),
        usageRow(key.id, monthStart + 3_000, { service: "LRS", endpoint: "/reports/usage" }),
        ...Array.from({ length: 3 }, () => usageRow(key.id, monthStart - 86_400_000))
      ])
      const fake = makeFakeCache()
      const limiter = yield* buildLimiter(fake.layer, 60_000, PgLive)
      assert.strictEqual(limiter.admit(key, 1, 3, now)._tag, "Admitted")
      assert.strictEqual(limiter.admit(key, 1, 4, now)._tag, "QuotaExceeded")
      assert.strictEqual(yield* counter(fake, `quota:${key.id}:${monthKey(now)}`), 7)
      assert.isDefined(yield* fake.inner.get(seededMarkerKey(monthKey(now))))
    }).pipe(Effect.provide(PgLive), Effect.scoped), 30_000)

  it.live("the month is read once per cache: a node starting after the marker reads no usage", () =>
    Effect.gen(function*() {
      const fake = makeFakeCache()
      const first = countingEmptyDatabase()
      yield* buildLimiter(fake.layer, 60_000, first.layer)
      assert.isAbove(first.statements(), 0)
      assert.isDefined(yield* fake.inner.get(seededMarkerKey(monthKey(Date.now()))))
      const second = countingEmptyDatabase()
      yield* buildLimiter(fake.layer, 60_000, second.layer)
      assert.strictEqual(second.statements(), 0)
    }).pipe(Effect.scoped), 10_000)
})
