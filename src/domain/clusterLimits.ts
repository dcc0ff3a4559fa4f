/**
 * Pure arithmetic of cluster-wide limits. Each node decides locally and reconciles with Valkey in
 * batches; these functions say what a reconcile result means. See docs/rate-limits.md for the
 * worst-case overshoot this design allows.
 */

/**
 * Tokens consumed by other nodes since our last reconcile. `total` is the cluster counter after
 * adding our own `pushed` consumption; `lastSeen` is the total we saw last time (undefined on the
 * first reconcile for this key on this node, when history is not charged again).
 */
export const othersConsumption = (total: number, lastSeen: number | undefined, pushed: number): number =>
  lastSeen === undefined ? 0 : Math.max(0, total - lastSeen - pushed)

/**
 * Fraction of requests to shed so the cluster returns to `maxRps`: 0 at or under the limit,
 * else 1 - max/observed.
 */
export const shedFraction = (clusterRps: number, maxRps: number): number =>
  !(clusterRps > maxRps) || maxRps <= 0 ? (maxRps <= 0 && clusterRps > 0 ? 1 : 0) : 1 - maxRps / clusterRps

/** Calendar month of a time, UTC, as YYYYMM: the quota period. */
export const monthKey = (now: number): string => {
  const d = new Date(now)
  return `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, "0")}`
}

/** Seconds until the next UTC month starts (Retry-After of QUOTA_EXCEEDED). */
export const secondsToNextMonth = (now: number): number => {
  const d = new Date(now)
  const next = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1)
  return Math.max(1, Math.ceil((next - now) / 1000))
}

/**
 * Worst-case overshoot of a rate limit across `nodes` nodes reconciling every `reconcileMs`:
 * within one reconcile interval every other node may spend what its own bucket still holds
 * (at most `burst`) plus what refills meanwhile, before it learns of the others' spending.
 */
export const worstCaseOvershoot = (nodes: number, burst: number, ratePerSec: number, reconcileMs: number): number =>
  Math.max(0, nodes - 1) * (burst + (ratePerSec * reconcileMs) / 1000)
