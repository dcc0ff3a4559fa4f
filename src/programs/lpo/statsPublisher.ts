import { Effect } from "effect"
import { COUNTER, COUNTER_NAMES } from "../../domain/runtimeCounters.ts"
import { Cache } from "../../services/Cache.ts"
import { Params } from "../../services/Params.ts"
import { RateLimiter } from "../../services/RateLimiter.ts"
import { RuntimeStats } from "../../services/RuntimeStats.ts"
import { UsageSink } from "../../services/UsageSink.ts"
import { spacedByParam } from "../../layers/paramSchedule.ts"

export const STATS_NODES_KEY = "stats:nodes"
export const statsKey = (node: string) => `stats:${node}`
/** A node that has not published for this long is left out of cluster stats. */
export const NODE_SEEN_WINDOW_MS = 60_000

/** Copy the gauges owned by other services into the counters, then read them all. */
export const currentStats = Effect.gen(function*() {
  const stats = yield* RuntimeStats
  const usage = yield* UsageSink
  const limiter = yield* RateLimiter
  const u = usage.stats()
  const l = limiter.snapshot()
  const v = stats.values
  v[COUNTER.usage_rows_written] = u.written
  v[COUNTER.usage_batches] = u.batches
  v[COUNTER.usage_buffered] = u.buffered
  v[COUNTER.usage_spooled] = u.spooled
  v[COUNTER.cluster_reconcile_failures] = l.reconcileFailures
  return { counters: stats.snapshot(), usage: u, limiter: l, uptime_s: Math.round((Date.now() - stats.startedAt) / 1000) }
})

/** Publish this node's counters to `stats:<node>` on a Schedule (and at shutdown). */
export const publishStats = (node: string) =>
  Effect.gen(function*() {
    const cache = yield* Cache
    const params = yield* Params
    const publish = Effect.gen(function*() {
      const { counters } = yield* currentStats
      const now = Date.now()
      const values: Record<string, string> = { updated_at: String(now) }
      for (const n of COUNTER_NAMES) values[n] = String(counters[n])
      const ttlMs = params.int("stats_publish_ms") * 3
      yield* cache.hsetMany([{ key: statsKey(node), values, ttlMs: Math.max(ttlMs, NODE_SEEN_WINDOW_MS) }])
      yield* cache.zadd(STATS_NODES_KEY, [{ score: now, member: node }])
      yield* cache.zremRangeByScore(STATS_NODES_KEY, 0, now - 10 * NODE_SEEN_WINDOW_MS)
    }).pipe(Effect.ignore)
    yield* Effect.addFinalizer(() => publish)
    yield* publish.pipe(Effect.repeat(spacedByParam(params, "stats_publish_ms")), Effect.forkScoped)
  })

/** Every live node's published counters, and their sums. */
export const clusterStats = Effect.gen(function*() {
  const cache = yield* Cache
  const now = Date.now()
  const nodes = yield* cache.zrangeByScore(STATS_NODES_KEY, now - NODE_SEEN_WINDOW_MS, Number.MAX_SAFE_INTEGER)
  const perNode: Record<string, Record<string, number>> = {}
  const totals: Record<string, number> = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0]))
  for (const node of nodes) {
    const h = yield* cache.hgetall(statsKey(node))
    const counters: Record<string, number> = {}
    for (const n of COUNTER_NAMES) {
      counters[n] = Number(h[n] ?? 0)
      totals[n] = (totals[n] ?? 0) + counters[n]
    }
    counters["age_ms"] = now - Number(h["updated_at"] ?? now)
    perNode[node] = counters
  }
  return { nodes: nodes.length, totals, per_node: perNode, shared_cache: cache.kind }
})
