import { Effect, Layer } from "effect"
import { EventEmitter } from "node:events"
import { Cache } from "../services/Cache.ts"

interface Entry<V> { value: V; expiresAt: number }

/**
 * In-process cache with the same semantics as the Valkey Layer (TTL, counters, hashes, sorted
 * sets, pub/sub) for a single node. Expired entries are dropped lazily on read.
 */
export const makeMemoryCache = () => {
  const strings = new Map<string, Entry<string>>()
  const hashes = new Map<string, Entry<Map<string, string>>>()
  const zsets = new Map<string, Entry<Map<string, number>>>()
  const bus = new EventEmitter()
  bus.setMaxListeners(0)
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
  return Cache.of({
    kind: "memory",
    ping: Effect.void,
    get: (key) => Effect.sync(() => live(strings, key)?.value),
    getMany: (keys) => Effect.sync(() => keys.map((k) => live(strings, k)?.value)),
    set: (key, value, ttlMs) => Effect.sync(() => void strings.set(key, { value, expiresAt: expiry(ttlMs) })),
    setIfAbsent: (key, value, ttlMs) =>
      Effect.sync(() => {
        if (live(strings, key) !== undefined) return false
        strings.set(key, { value, expiresAt: expiry(ttlMs) })
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
      Effect.sync(() =>
        increments.map(({ key, by, ttlMs }) => {
          const next = Number(live(strings, key)?.value ?? "0") + by
          strings.set(key, { value: String(next), expiresAt: expiry(ttlMs) })
          return next
        })
      ),
    zadd: (key, entries, ttlMs) =>
      Effect.sync(() => {
        const e = live(zsets, key) ?? { value: new Map<string, number>(), expiresAt: Infinity }
        for (const { score, member } of entries) e.value.set(member, score)
        if (ttlMs !== undefined) e.expiresAt = expiry(ttlMs)
        zsets.set(key, e)
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
    publish: (channel, message) => Effect.sync(() => void queueMicrotask(() => bus.emit(channel, message))),
    subscribe: (channel, onMessage) =>
      Effect.acquireRelease(
        Effect.sync(() => void bus.on(channel, onMessage)),
        () => Effect.sync(() => void bus.off(channel, onMessage))
      )
  })
}

export const CacheMemory = Layer.sync(Cache, makeMemoryCache)
