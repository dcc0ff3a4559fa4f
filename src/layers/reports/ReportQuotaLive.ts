/**
 * The monthly report limit, counted cluster-wide: one counter per key and UTC month in the shared
 * cache (`lrs-reports:<key id>:<YYYYMM>`, INCRBY is atomic, so nodes never hand out the same last
 * report twice). The first use of a key in this process seeds the counter from the month's report
 * rows in the database when the cache does not have it yet (a fresh Valkey, the in-process cache
 * after a restart). With Valkey unreachable each node counts on alone from what it last saw, and
 * pushes what it counted once Valkey answers again.
 */
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { monthKey, secondsToNextMonth } from "../../domain/clusterLimits.ts"
import { Cache, type CacheError } from "../../services/Cache.ts"
import { type ReportAdmission, ReportQuota } from "../../services/UsageReports.ts"
import { withModule } from "../Logging.ts"

/** The endpoints that count as a report (HTTP and UDP); /reports/key does not. */
export const REPORT_ENDPOINTS = ["/reports/usage", "/reports/summary", "summary"] as const

export const reportCounterKey = (apiKeyId: string, month: string) => `lrs-reports:${apiKeyId}:${month}`
/** Longer than a month, so a counter outlives its month and then goes. */
const COUNTER_TTL_MS = 40 * 86_400_000

interface KeyCount {
  month: string
  seeded: boolean
  /** The cluster's count as last seen. */
  clusterUsed: number
  /** Counted here while the cache was unreachable, not yet pushed. */
  pending: number
}

const monthStartOf = (now: number): Date => {
  const d = new Date(now)
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1))
}

export const ReportQuotaLive = Layer.effect(ReportQuota, Effect.gen(function*() {
  const cache = yield* Cache
  const sql = yield* SqlClient.SqlClient
  const counts = new Map<string, KeyCount>()

  const stateOf = (apiKeyId: string, month: string): KeyCount => {
    let s = counts.get(apiKeyId)
    if (s === undefined || s.month !== month) {
      s = { month, seeded: false, clusterUsed: 0, pending: 0 }
      counts.set(apiKeyId, s)
    }
    return s
  }

  /** This month's answered reports in the database, set as the counter if the cache has none. */
  const seed = (apiKeyId: string, s: KeyCount, now: number) =>
    Effect.gen(function*() {
      if (s.seeded) return
      const rows = yield* sql<{ n: number }>`
        SELECT count(*)::float8 AS n FROM usage_logs
        WHERE api_key_id = ${apiKeyId}::uuid AND created_at >= ${monthStartOf(now)} AND service = 'LRS'
          AND status_code = 200 AND endpoint IN ${sql.in(REPORT_ENDPOINTS)}`
      const n = Number(rows[0]?.n ?? 0)
      s.clusterUsed = Math.max(s.clusterUsed, n)
      yield* cache.setIfAbsent(reportCounterKey(apiKeyId, s.month), String(n), COUNTER_TTL_MS)
      s.seeded = true
    }).pipe(Effect.catch((e) => Effect.logWarning("report counter not seeded from the database", String(e))))

  const admit = (apiKeyId: string, limit: number | null, now: number): Effect.Effect<ReportAdmission> =>
    Effect.gen(function*() {
      const month = monthKey(now)
      const s = stateOf(apiKeyId, month)
      yield* seed(apiKeyId, s, now)
      const key = reportCounterKey(apiKeyId, month)
      const push = s.pending + 1
      s.pending = 0
      const pushed = yield* cache.incrMany([{ key, by: push, ttlMs: COUNTER_TTL_MS }]).pipe(
        Effect.map((totals) => totals[0] ?? push),
        Effect.catch(() => Effect.succeed(undefined))
      )
      if (pushed === undefined) {
        // Unreachable: decide alone from what this node knows.
        s.pending += push - 1
        const used = s.clusterUsed + s.pending
        if (limit !== null && used + 1 > limit) return { _tag: "QuotaExceeded", limit, used, retryAfterSec: secondsToNextMonth(now) } as const
        s.pending++
        return { _tag: "Admitted", limit, used: used + 1 } as const
      }
      s.clusterUsed = pushed
      if (limit !== null && pushed > limit) {
        // Not counted after all: take this one back (what was pending stays counted).
        yield* cache.incrMany([{ key, by: -1, ttlMs: COUNTER_TTL_MS }]).pipe(Effect.ignore)
        s.clusterUsed = pushed - 1
        return { _tag: "QuotaExceeded", limit, used: pushed - 1, retryAfterSec: secondsToNextMonth(now) } as const
      }
      return { _tag: "Admitted", limit, used: pushed } as const
    }).pipe(Effect.withSpan("ReportQuota.admit"))

  const used = (apiKeyId: string, now: number): Effect.Effect<number> =>
    Effect.gen(function*() {
      const month = monthKey(now)
      const s = stateOf(apiKeyId, month)
      yield* seed(apiKeyId, s, now)
      const key = reportCounterKey(apiKeyId, month)
      // What was counted here while Valkey was away goes to the cluster first (INCRBY answers the total).
      const push = s.pending
      s.pending = 0
      const read: Effect.Effect<number | string | undefined, CacheError> = push > 0
        ? cache.incrMany([{ key, by: push, ttlMs: COUNTER_TTL_MS }]).pipe(Effect.map((t) => t[0]))
        : cache.get(key)
      const counted = yield* read.pipe(Effect.catch(() => Effect.sync(() => void (s.pending += push))))
      if (counted !== undefined && Number.isFinite(Number(counted))) s.clusterUsed = Number(counted)
      return s.clusterUsed + s.pending
    }).pipe(Effect.withSpan("ReportQuota.used"))

  const release = (apiKeyId: string, now: number): Effect.Effect<void> =>
    Effect.gen(function*() {
      const month = monthKey(now)
      const s = stateOf(apiKeyId, month)
      const total = yield* cache.incrMany([{ key: reportCounterKey(apiKeyId, month), by: -1, ttlMs: COUNTER_TTL_MS }]).pipe(
        Effect.map((t) => t[0]),
        Effect.catch(() => Effect.sync(() => void s.pending--))
      )
      if (total !== undefined) s.clusterUsed = total
    }).pipe(Effect.withSpan("ReportQuota.release"))

  return ReportQuota.of({ admit, release, used })
}).pipe(withModule("report-quota")))
