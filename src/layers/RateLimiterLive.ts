import { Effect, Layer, Semaphore } from "effect"
import { SqlClient } from "effect/sql"
import { monthKey, othersConsumption, secondsToNextMonth, shedFraction } from "../domain/clusterLimits.ts"
import { type BucketLimits, type BucketState, debit, fullBucket, tryTake } from "../domain/tokenBucket.ts"
import type { ApiKeyRecord } from "../services/ApiKeys.ts"
import { Cache } from "../services/Cache.ts"
import { Params } from "../services/Params.ts"
import { type Admission, RateLimiter } from "../services/RateLimiter.ts"
import { withModule } from "./Logging.ts"
import { spacedByParam } from "./paramSchedule.ts"

const RATE_COUNTER_TTL_MS = 3_600_000
const QUOTA_COUNTER_TTL_MS = 40 * 86_400_000
const GOVERNOR_TTL_MS = 10_000
/** Keys idle this long are no longer reconciled (and forgotten after ten times that). */
const ACTIVE_WINDOW_MS = 60_000

interface KeyState {
  limits: BucketLimits | undefined
  bucket: BucketState | undefined
  /** Requests taken here and not yet pushed to the cluster counter. */
  pendingRequests: number
  /** Cluster rate counter as last seen (undefined before the first reconcile). */
  lastSeenTotal: number | undefined
  month: string
  /** Cluster quota usage at the last reconcile, ours included. */
  quotaClusterUsed: number
  pendingQueries: number
  lastActive: number
}

/** What one reconcile pushed for a key, to be taken off its pending counts once Valkey has it. */
interface PushedKey {
  readonly id: string
  readonly s: KeyState
  readonly requests: number
  readonly queries: number
  readonly month: string
}

const rateKey = (id: string) => `rl:${id}`
const quotaKey = (id: string, month: string) => `quota:${id}:${month}`
const governorKey = (second: number) => `gov:${second}`
/** Set once this month's quota counters were seeded from the database (see below). */
export const seededMarkerKey = (month: string) => `quota-seeded:${month}`
/** The seed reads a month of usage_logs; past this, the node starts without it (and says so). */
const SEED_TIMEOUT = "60 seconds"

/**
 * Local decisions, batched reconciliation. Every `rate_reconcile_ms` this node pushes what it
 * consumed (one pipelined round trip for all active keys) and learns what the other nodes
 * consumed, debiting that from its own buckets. With Valkey unreachable it keeps deciding alone:
 * exact per-node limits, with the pending consumption pushed once Valkey is back.
 */
export const RateLimiterLive = Layer.effect(RateLimiter, Effect.gen(function*() {
  const cache = yield* Cache
  const params = yield* Params
  const sql = yield* SqlClient.SqlClient
  const states = new Map<string, KeyState>()
  let offeredSinceReconcile = 0
  let lastSecondOffered = 0
  let currentSecond = Math.floor(Date.now() / 1000)
  let currentSecondOffered = 0
  let shed = 0
  let clusterRps = 0
  let clusterReachable = true
  let reconciles = 0
  let reconcileFailures = 0

  const limitsOf = (key: ApiKeyRecord): BucketLimits | undefined =>
    key.tier.ratePerSec === null || key.tier.burst === null ? undefined : { ratePerSec: key.tier.ratePerSec, burst: key.tier.burst }

  // The quota period changes once a month: recompute its key only when `now` leaves it.
  let periodStart = 0
  let periodEnd = -1
  let currentMonth = ""
  const monthOf = (now: number): string => {
    if (now < periodStart || now >= periodEnd) {
      const d = new Date(now)
      periodStart = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1)
      periodEnd = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1)
      currentMonth = monthKey(now)
    }
    return currentMonth
  }

  const stateOf = (key: ApiKeyRecord, now: number): KeyState => {
    let s = states.get(key.id)
    const month = monthOf(now)
    if (s === undefined) {
      s = { limits: undefined, bucket: undefined, pendingRequests: 0, lastSeenTotal: undefined, month, quotaClusterUsed: 0, pendingQueries: 0, lastActive: now }
      states.set(key.id, s)
    } else if (s.month !== month) {
      s.month = month
      s.quotaClusterUsed = 0
      s.pendingQueries = 0
    }
    return s
  }

  const countOffered = (now: number) => {
    offeredSinceReconcile++
    const second = Math.floor(now / 1000)
    if (second !== currentSecond) {
      lastSecondOffered = second === currentSecond + 1 ? currentSecondOffered : 0
      currentSecond = second
      currentSecondOffered = 0
    }
    currentSecondOffered++
  }

  const admit = (key: ApiKeyRecord, requests: number, queries: number, now: number): Admission => {
    countOffered(now)
    if (shed > 0 && Math.random() < shed) return { _tag: "Busy" }
    const s = stateOf(key, now)
    s.lastActive = now
    const quota = key.tier.monthlyQueries
    if (quota !== null && s.quotaClusterUsed + s.pendingQueries + queries > quota) {
      return { _tag: "QuotaExceeded", limit: quota, retryAfterSec: secondsToNextMonth(now) }
    }
    const limits = limitsOf(key)
    s.limits = limits
    if (limits === undefined) {
      return { _tag: "Admitted", limit: undefined, remaining: 0, resetSec: 0 }
    }
    const taken = tryTake(s.bucket ?? fullBucket(limits, now), limits, now, requests)
    s.bucket = taken.state
    if (!taken.allowed) {
      return { _tag: "RateLimited", limit: limits.burst, remaining: 0, retryAfterSec: Math.max(1, Math.ceil(Math.min(taken.retryAfterMs, 3_600_000) / 1000)) }
    }
    s.pendingRequests += requests
    const missing = limits.burst - taken.state.tokens
    return { _tag: "Admitted", limit: limits.burst, remaining: taken.remaining, resetSec: limits.ratePerSec > 0 ? Math.ceil(missing / limits.ratePerSec) : 0 }
  }

  // One reconcile at a time (the loop, an explicit call and the final one at shutdown): two at
  // once would both push the same pending consumption.
  const reconcileLock = yield* Semaphore.make(1)

  /** Counts a push that reached the cluster: it is no longer pending, whatever happens next. */
  const applyPushed = (pushed: ReadonlyArray<PushedKey>, totals: ReadonlyArray<number>, offered: number, now: number) => {
    offeredSinceReconcile -= offered
    pushed.forEach((p, i) => {
      const rateTotal = totals[1 + i * 2] ?? 0
      const quotaTotal = totals[2 + i * 2] ?? 0
      const others = othersConsumption(rateTotal, p.s.lastSeenTotal, p.requests)
      p.s.lastSeenTotal = rateTotal
      p.s.pendingRequests -= p.requests
      // A month rollover while the push was in flight already reset the quota state: what was
      // pushed belongs to the old month and must not be taken off the new one.
      if (p.s.month === p.month) {
        p.s.pendingQueries -= p.queries
        p.s.quotaClusterUsed = quotaTotal
      }
      if (others > 0 && p.s.bucket !== undefined && p.s.limits !== undefined) p.s.bucket = debit(p.s.bucket, p.s.limits, now, others)
    })
  }

  const reconcile = Effect.gen(function*() {
    const now = Date.now()
    const active = [...states].filter(([, s]) => s.pendingRequests > 0 || s.pendingQueries > 0 || now - s.lastActive < ACTIVE_WINDOW_MS)
    for (const [id, s] of states) if (now - s.lastActive > 10 * ACTIVE_WINDOW_MS && s.pendingRequests === 0 && s.pendingQueries === 0) states.delete(id)
    const pushed: ReadonlyArray<PushedKey> = active.map(([id, s]) => ({ id, s, requests: s.pendingRequests, queries: s.pendingQueries, month: s.month }))
    const offered = offeredSinceReconcile
    const second = Math.floor(now / 1000)
    // Uninterruptible from sending to bookkeeping: once Valkey may have applied the increments,
    // they must leave `pending`, or the next push (the final one at shutdown too) counts them twice.
    yield* cache.incrMany([
      { key: governorKey(second), by: offered, ttlMs: GOVERNOR_TTL_MS },
      ...pushed.flatMap((p) => [
        { key: rateKey(p.id), by: p.requests, ttlMs: RATE_COUNTER_TTL_MS },
        { key: quotaKey(p.id, p.month), by: p.queries, ttlMs: QUOTA_COUNTER_TTL_MS }
      ])
    ]).pipe(
      Effect.map((totals) => applyPushed(pushed, totals, offered, now)),
      Effect.uninterruptible
    )
    clusterReachable = true
    reconciles++
    // Only feeds the governor: if it cannot be read, fall back to this node's own rate.
    const previous = yield* cache.get(governorKey(second - 1)).pipe(Effect.catch(() => Effect.succeed(undefined)))
    clusterRps = Number(previous ?? lastSecondOffered)
  }).pipe(
    Effect.catch(() =>
      Effect.sync(() => {
        // Valkey unreachable: per-node limits; pending consumption stays queued for the next push.
        clusterReachable = false
        reconcileFailures++
        clusterRps = lastSecondOffered
      })
    ),
    Effect.ensuring(Effect.sync(() => void (shed = shedFraction(clusterRps, params.int("governor_max_rps"))))),
    reconcileLock.withPermits(1)
  )

  // This month's usage already in the database seeds the quota counters (a fresh in-process cache
  // or a new Valkey must not hand out a second month's worth). The query reads a month of
  // usage_logs, so it runs once per month per Valkey, not at every node's start: the first node
  // leaves a marker, and the nodes after it read the counters it seeded (at their first reconcile).
  // One reading of the clock: the month, its start and the seeded keys' idle time agree.
  const seedNow = Date.now()
  const month = monthKey(seedNow)
  const marker = seededMarkerKey(month)
  const seededBefore = yield* cache.get(marker).pipe(Effect.map((v) => v !== undefined), Effect.catch(() => Effect.succeed(false)))
  if (!seededBefore) {
    const seedDate = new Date(seedNow)
    const monthStart = new Date(Date.UTC(seedDate.getUTCFullYear(), seedDate.getUTCMonth(), 1))
    const used = yield* sql<{ id: string; n: number }>`
      SELECT api_key_id::text AS id,
             sum(CASE WHEN endpoint = '/prices' THEN coalesce(array_length(string_to_array(asset, ','), 1), 1) ELSE 1 END)::float8 AS n
      FROM usage_logs WHERE created_at >= ${monthStart} AND api_key_id IS NOT NULL AND service = 'LPO' AND status_code = 200
      GROUP BY api_key_id`.pipe(
      Effect.timeoutOrElse({ duration: SEED_TIMEOUT, orElse: () => Effect.fail(new Error(`no answer within ${SEED_TIMEOUT}`)) }),
      Effect.map((rows) => ({ ok: true as const, rows })),
      Effect.catch((e) =>
        Effect.logWarning("quota counters not seeded from this month's usage; they count from the cluster's counters", String(e)).pipe(
          Effect.as({ ok: false as const, rows: [] })
        )
      )
    )
    yield* Effect.forEach(used.rows, (u) => cache.setIfAbsent(quotaKey(u.id, month), String(u.n), QUOTA_COUNTER_TTL_MS), { discard: true, concurrency: 16 }).pipe(Effect.ignore)
    const seeded = yield* cache.getMany(used.rows.map((u) => quotaKey(u.id, month))).pipe(Effect.catch(() => Effect.succeed([])))
    // Idle as of now: not pushed until used, and forgotten like any key idle for 10 windows
    // (with lastActive 0 the first reconcile forgot them, and the seed with them).
    const idleSince = seedNow - ACTIVE_WINDOW_MS
    used.rows.forEach((u, i) => {
      const n = Number(seeded[i] ?? u.n)
      states.set(u.id, { limits: undefined, bucket: undefined, pendingRequests: 0, lastSeenTotal: undefined, month, quotaClusterUsed: n, pendingQueries: 0, lastActive: idleSince })
    })
    if (used.ok) yield* cache.set(marker, new Date().toISOString(), QUOTA_COUNTER_TTL_MS).pipe(Effect.ignore)
  }

  // Registered before the loop is forked: finalizers run in reverse, so at shutdown the loop stops
  // (finishing a push in flight) before the final push.
  yield* Effect.addFinalizer(() => reconcile)
  yield* reconcile.pipe(Effect.repeat(spacedByParam(params, "rate_reconcile_ms")), Effect.forkScoped)

  return RateLimiter.of({
    admit,
    chargeQueries: (key, queries, now) => void (stateOf(key, now).pendingQueries += queries),
    reconcile,
    snapshot: () => ({ trackedKeys: states.size, clusterReachable, reconciles, reconcileFailures, clusterRps, shedFraction: shed })
  })
}).pipe(withModule("rate-limiter")))
