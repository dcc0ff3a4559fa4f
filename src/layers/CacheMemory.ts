import { Effect, Layer } from "effect"
import { EventEmitter } from "node:events"
import { Cache } from "../services/Cache.ts"
import { type WorkerBus, workerBus } from "./workerBus.ts"

interface Entry<V> { value: V; expiresAt: number }

/** Fewest writes between two sweeps, so a small cache is not swept on every write. */
const MIN_WRITES_PER_SWEEP = 1_000

export type MemoryCache = Cache["Service"] & {
  /** Entries held, expired-but-not-yet-swept ones included (for tests and diagnostics). */
  readonly entryCount: () => number
}

/**
 * In-process cache with the same semantics as the Valkey Layer (TTL, counters, hashes, sorted
 * sets, pub/sub) for a single node. Expired entries are dropped on read, and by a sweep every so
 * many writes, since keys written once and never read again (the governor's per-second counters)
 * would otherwise pile up forever. In a worker of LPO_WORKERS > 1, pub/sub spans the node's
 * workers (workerBus); the data stays per worker.
 */
export const makeMemoryCache = (crossWorkers: WorkerBus | undefined = undefined): MemoryCache => {
  const strings = new Map<string, Entry<string>>()
  const hashes = new Map<string, Entry<Map<string, string>>>()
  const zsets = new Map<string, Entry<Map<string, number>>>()
  const entryCount = () => strings.size + hashes.size + zsets.size
  // A sweep is O(entries): waiting for at least as many writes as entries keeps it O(1) per write.
  let writesSinceSweep = 0
  let writesPerSweep = MIN_WRITES_PER_SWEEP
  const sweep = (now: number) => {
    for (const map of [strings, hashes, zsets] as const) {
      for (const [key, e] of map) if (e.expiresAt <= now) map.delete(key)
    }
    writesSinceSweep = 0
    writesPerSweep = Math.max(MIN_WRITES_PER_SWEEP, entryCount())
  }
  const wrote = (count = 1) => {
    writesSinceSweep += count
    if (writesSinceSweep >= writesPerSweep) sweep(Date.now())
  }
  const bus = new EventEmitter()
  bus.setMaxListeners(0)
  crossWorkers?.onMessage((channel, message) => void bus.emit(channel, message))
  const expiry = (ttlMs: number | undefined) => ttlMs === undefined ? Infinity : Date.now() + ttlMs
  const live = <V>(map: Map<string, Entry<V>>, key: string): Entry<V> | undefined => {
    const e = map.get(key)
    if (e === undefined) return undefined
    if (e.expiresAt <= Date.now()) {
      map.delete(key)
      return undefined
    }
    return e
  }
  const cache = Cache.of({
    kind: "memory",
    ping: Effect.void,
    get: (key) => Effect.sync(() => live(strings, key)?.value),
    getMany: (keys) => Effect.sync(() => keys.map((k) => live(strings, k)?.value)),
    set: (key, value, ttlMs) =>
      Effect.sync(() => {
        strings.set(key, { value, expiresAt: expiry(ttlMs) })
        wrote()
      }),
    setIfAbsent: (key, value, ttlMs) =>
      Effect.sync(() => {
        if (live(strings, key) !== undefined) return false
        strings.set(key, { value, expiresAt: expiry(ttlMs) })
        wrote()
        return true
      }),
    hgetall: (key) => Effect.sync(() => Object.fromEntries(live(hashes, key)?.value ?? [])),
    hsetMany: (writes) =>
      Effect.sync(() => {
        for (const w of writes) {
          const e = live(hashes, w.key) ?? { value: new Map<string, string>(), expiresAt: Infinity }
          for (const [f, v] of Object.entries(w.values)) e.value.set(f, v)
          if (w.ttlMs !== undefined) e.expiresAt = expiry(w.ttlMs)
          hashes.set(w.key, e)
        }
        wrote(writes.length)
      }),
    del: (keys) =>
      Effect.sync(() => {
        for (const k of keys) {
          strings.delete(k)
          hashes.delete(k)
          zsets.delete(k)
        }
      }),
    incrMany: (increments) =>
      Effect.sync(() => {
        const totals = increments.map(({ key, by, ttlMs }) => {
          const next = Number(live(strings, key)?.value ?? "0") + by
          strings.set(key, { value: String(next), expiresAt: expiry(ttlMs) })
          return next
        })
        wrote(increments.length)
        return totals
      }),
    zadd: (key, entries, ttlMs) =>
      Effect.sync(() => {
        const e = live(zsets, key) ?? { value: new Map<string, number>(), expiresAt: Infinity }
        for (const { score, member } of entries) e.value.set(member, score)
        if (ttlMs !== undefined) e.expiresAt = expiry(ttlMs)
        zsets.set(key, e)
        wrote()
      }),
    zrangeByScore: (key, min, max) =>
      Effect.sync(() =>
        [...(live(zsets, key)?.value ?? new Map<string, number>())]
          .filter(([, s]) => s >= min && s <= max)
          .sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1))
          .map(([m]) => m)
      ),
    zremRangeByScore: (key, min, max) =>
      Effect.sync(() => {
        const z = live(zsets, key)?.value
        if (z === undefined) return
        for (const [m, s] of z) if (s >= min && s <= max) z.delete(m)
      }),
    publish: (channel, message) =>
      Effect.sync(() => crossWorkers === undefined ? void queueMicrotask(() => bus.emit(channel, message)) : crossWorkers.publish(channel, message)),
    subscribe: (channel, onMessage) =>
      Effect.acquireRelease(
        Effect.sync(() => void bus.on(channel, onMessage)),
        () => Effect.sync(() => void bus.off(channel, onMessage))
      )
  })
  return { ...cache, entryCount }
}

export const CacheMemory = Layer.sync(Cache, () => makeMemoryCache(workerBus()))
