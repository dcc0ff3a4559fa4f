/**
 * Which node delivers which webhook: a lease per webhook in the shared cache
 * (`webhook:lease:<id>` = this node's token, TTL `leaseTtlMs`), renewed every sweep. Every sweep a
 * node reads the active webhooks, renews what it holds (and stops what it lost), and takes free
 * ones: at once those it is the preferred owner of (rendezvous hashing over the live nodes in
 * `webhook:nodes`), the others only once they stayed free for a whole sweep; a node gives back
 * a webhook whose preferred owner is another node it has seen live for a sweep, so nodes that
 * start or join later share the webhooks. A dead node's webhooks move within TTL + two sweeps
 * (≤ 25 s with the defaults). Renewal reads then sets the lease (the cache has no compare-and-set):
 * another node can only slip in between if this one stalled past the TTL, and then whichever of
 * the two reads the other's token at its next sweep stops (seq stays unique: it is counted in the
 * cache). Renewal comes before the database read, so a database that does not answer does not stop
 * deliveries. A node that cannot renew for longer than the TTL stops delivering (another may own
 * them by then). On shutdown a node gives its leases back, so the others take over at their next sweep.
 */
import { Clock, Effect, Latch } from "effect"
import { createHash, randomBytes } from "node:crypto"
import type { Cache } from "../../services/Cache.ts"
import type { Webhook, WebhookStore } from "../../services/Webhooks.ts"
import type { DeliveryEngine } from "./deliveryEngine.ts"

export const leaseKey = (webhookId: string) => `webhook:lease:${webhookId}`
export const NODES_KEY = "webhook:nodes"
/** Published when a webhook's settings change, so owners pick them up before the next sweep. */
export const CHANGED_CHANNEL = "webhook:changed"

export interface LeaseOptions {
  readonly nodeId: string
  readonly sweepMs: number
  readonly leaseTtlMs: number
}

export const DEFAULT_LEASE_OPTIONS = { sweepMs: 5_000, leaseTtlMs: 15_000 } as const

/** Rendezvous hashing: the live node with the highest hash of (node, webhook) is preferred. */
const preferredOwner = (nodes: ReadonlyArray<string>, webhookId: string): string | undefined => {
  let best: string | undefined
  let bestScore = ""
  for (const n of nodes) {
    const score = createHash("sha256").update(`${n}\u0000${webhookId}`).digest("hex")
    if (best === undefined || score > bestScore) {
      best = n
      bestScore = score
    }
  }
  return best
}

export const runLeases = (deps: { readonly cache: Cache["Service"]; readonly store: WebhookStore["Service"]; readonly engine: DeliveryEngine }, options: LeaseOptions) =>
  Effect.gen(function*() {
    const { cache, store, engine } = deps
    // Unique per process: two processes with one NODE_ID must not both think they hold a lease.
    const token = `${options.nodeId}#${randomBytes(6).toString("hex")}`
    const freeSince = new Map<string, number>()
    /** Since when this node has seen each live node (a newcomer gets webhooks only once it stayed a sweep). */
    const seenSince = new Map<string, number>()
    let lastRenewed = Number.NEGATIVE_INFINITY

    const sweep = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      yield* cache.zadd(NODES_KEY, [{ score: now, member: token }])
      yield* cache.zremRangeByScore(NODES_KEY, 0, now - 4 * options.leaseTtlMs)
      const nodes = yield* cache.zrangeByScore(NODES_KEY, now - options.leaseTtlMs, Number.POSITIVE_INFINITY)
      for (const n of nodes) if (!seenSince.has(n)) seenSince.set(n, now)
      for (const n of seenSince.keys()) if (!nodes.includes(n)) seenSince.delete(n)
      // What this node runs: renew it first (shared cache only, so a database that does not answer
      // does not stop deliveries), or stop it when the lease went to another node.
      const mineBefore = engine.owned()
      const held = mineBefore.length === 0 ? [] : yield* cache.getMany(mineBefore.map(leaseKey))
      for (const [i, id] of mineBefore.entries()) {
        if (held[i] !== token) {
          yield* engine.stop(id)
          continue
        }
        yield* cache.set(leaseKey(id), token, options.leaseTtlMs)
      }
      lastRenewed = now

      const active: ReadonlyArray<Webhook> = yield* store.active
      const byId = new Map(active.map((w) => [w.id, w]))
      const holders = active.length === 0 ? [] : yield* cache.getMany(active.map((w) => leaseKey(w.id)))
      for (const id of engine.owned()) {
        const webhook = byId.get(id)
        if (webhook === undefined) {
          // Removed, disabled or waiting for verification: stop and give the lease back.
          yield* engine.stop(id)
          yield* cache.del([leaseKey(id)])
          continue
        }
        // Another live node is its preferred owner (it joined after this node took it): hand it over,
        // once this node has seen that node for a whole sweep; it takes it at its next sweep.
        const preferred = preferredOwner(nodes, id)
        if (preferred !== token && preferred !== undefined && seenSince.has(preferred) && now - seenSince.get(preferred)! >= options.sweepMs) {
          yield* engine.stop(id)
          yield* cache.del([leaseKey(id)])
          continue
        }
        yield* engine.upsert(webhook)
      }
      // Free ones: take them.
      const owned = new Set(engine.owned())
      for (let i = 0; i < active.length; i++) {
        const w = active[i]!
        if (owned.has(w.id)) continue
        if (holders[i] !== undefined) {
          freeSince.delete(w.id)
          continue
        }
        const since = freeSince.get(w.id) ?? now
        freeSince.set(w.id, since)
        const mine = preferredOwner(nodes, w.id) === token
        if (!mine && now - since < options.sweepMs) continue
        if (yield* cache.setIfAbsent(leaseKey(w.id), token, options.leaseTtlMs)) {
          freeSince.delete(w.id)
          yield* engine.upsert(w)
        }
      }
      for (const id of freeSince.keys()) if (!byId.has(id)) freeSince.delete(id)
    })

    const guarded = sweep.pipe(
      Effect.catch((e) =>
        Effect.gen(function*() {
          yield* Effect.logWarning("webhook lease sweep failed", e.message)
          const now = yield* Clock.currentTimeMillis
          // Past the TTL another node may hold them: stop rather than deliver twice.
          if (now - lastRenewed > options.leaseTtlMs * 0.8) yield* Effect.forEach(engine.owned(), engine.stop, { discard: true })
        })
      )
    )
    // One fiber sweeps, every sweepMs or at once after a change notice (never two sweeps at a time).
    const notice = Latch.makeUnsafe(false)
    yield* cache.subscribe(CHANGED_CHANNEL, () => void notice.openUnsafe()).pipe(
      Effect.catch((e) => Effect.logWarning("webhook change notices unavailable", e.message))
    )
    yield* Effect.gen(function*() {
      notice.closeUnsafe()
      yield* guarded
      yield* Effect.raceFirst(notice.await, Effect.sleep(options.sweepMs))
    }).pipe(Effect.forever, Effect.forkScoped)
    // Shutdown: stop delivering and give the leases back (only those still ours).
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const ids = engine.owned()
        yield* Effect.forEach(ids, engine.stop, { discard: true })
        yield* engine.flushOutcomes
        const holders = ids.length === 0 ? [] : yield* cache.getMany(ids.map(leaseKey))
        const mine = ids.filter((_, i) => holders[i] === token).map(leaseKey)
        if (mine.length > 0) yield* cache.del(mine)
      }).pipe(Effect.ignore)
    )
    return { token }
  })
