/**
 * Stream connections per API key across the cluster (`stream_max_connections_per_key`).
 *
 * Each open connection is a member `<node>:<n>` of the sorted set `stream:conns:<key id>` in the
 * shared cache, scored with its lease's end; a node renews its members every third of the lease,
 * so a dead node's connections stop counting within one lease. A claim counts the live members and
 * adds its own when there is room: two nodes claiming the last slot at the same moment can both
 * get it (a soft cap, by one per racing node). When the cache cannot answer, each node enforces
 * the limit on its own connections, as the rate limits do.
 */
import { Effect } from "effect"
import type { Cache } from "../../services/Cache.ts"

export interface KeySlots {
  /** Calls `k` once: true when the key may open one more connection (then it counts until released). */
  readonly claim: (keyId: string, k: (granted: boolean) => void) => void
  readonly release: (keyId: string) => void
  /** Stops the renewals; the members expire with their lease. */
  readonly close: () => void
}

/** How long a connection counts without its node renewing it. */
export const SLOT_LEASE_MS = 60_000

const slotKey = (keyId: string): string => `stream:conns:${keyId}`

export const makeKeySlots = (cache: Cache["Service"] | undefined, nodeId: string, limit: () => number, leaseMs = SLOT_LEASE_MS): KeySlots => {
  /** This node's members per key, in claim order. */
  const held = new Map<string, Array<string>>()
  let next = 0
  const ownPrefix = `${nodeId}:${process.pid}:`
  const localCount = (keyId: string) => held.get(keyId)?.length ?? 0
  const hold = (keyId: string, member: string) => {
    const list = held.get(keyId)
    if (list === undefined) held.set(keyId, [member])
    else list.push(member)
  }
  const run = <A>(effect: Effect.Effect<A, unknown>, onDone: (a: A | undefined) => void) =>
    void Effect.runPromise(effect).then(onDone, () => onDone(undefined))

  const renew = () => {
    if (cache === undefined) return
    const now = Date.now()
    for (const [keyId, members] of held) {
      const key = slotKey(keyId)
      run(Effect.andThen(
        cache.zadd(key, members.map((member) => ({ score: now + leaseMs, member })), leaseMs * 2),
        cache.zremRangeByScore(key, 0, now)
      ), () => {})
    }
  }
  const timer = cache === undefined ? undefined : setInterval(renew, Math.max(1000, Math.floor(leaseMs / 3)))
  timer?.unref()

  return {
    claim: (keyId, k) => {
      const max = limit()
      if (localCount(keyId) >= max) return k(false)
      const member = `${ownPrefix}${next++}`
      if (cache === undefined) {
        hold(keyId, member)
        return k(true)
      }
      const now = Date.now()
      const key = slotKey(keyId)
      run(cache.zrangeByScore(key, now, Number.MAX_SAFE_INTEGER), (live) => {
        // Other nodes' live members, plus this node's own count (which knows claims still in
        // flight); with the cache away, this node's own count alone.
        const others = live === undefined ? 0 : live.filter((m) => !m.startsWith(ownPrefix)).length
        if (others + localCount(keyId) >= max) return k(false)
        hold(keyId, member)
        if (live !== undefined) run(cache.zadd(key, [{ score: now + leaseMs, member }], leaseMs * 2), () => {})
        k(true)
      })
    },
    release: (keyId) => {
      const members = held.get(keyId)
      const member = members?.shift()
      if (members !== undefined && members.length === 0) held.delete(keyId)
      // Score 0: out of every count at once; the next renewal's trim removes it.
      if (member !== undefined && cache !== undefined) run(cache.zadd(slotKey(keyId), [{ score: 0, member }], leaseMs * 2), () => {})
    },
    close: () => {
      if (timer !== undefined) clearInterval(timer)
    }
  }
}
