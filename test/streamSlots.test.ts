/**
 * Stream connections per key across nodes (stream_max_connections_per_key), through a real Valkey
 * (Redis DB 14): two nodes share the cap, a release frees a slot for the other node, a dead node's
 * connections stop counting after their lease, and with the cache away each node caps its own.
 */
import { Effect, Exit, Redacted, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { makeValkeyCache } from "../src/layers/CacheValkey.ts"
import { type KeySlots, makeKeySlots } from "../src/programs/stream/keySlots.ts"
import { type Cache, CacheError } from "../src/services/Cache.ts"
import { freshRedis } from "./support/services.ts"

let scope: Scope.Closeable
let cache: Cache["Service"]

beforeAll(async () => {
  scope = Scope.makeUnsafe()
  cache = await Effect.runPromise(Scope.provide(scope)(makeValkeyCache(Redacted.make(freshRedis(14)))))
})

afterAll(async () => {
  await Effect.runPromise(Scope.close(scope, Exit.void))
})

const claim = (slots: KeySlots, keyId: string) => new Promise<boolean>((resolve) => slots.claim(keyId, resolve))
const settle = () => new Promise((r) => setTimeout(r, 50))

describe("stream connection slots per key", () => {
  it("are shared by the nodes of a cluster, and a release frees one for any node", async () => {
    const limit = 3
    const a = makeKeySlots(cache, "node-a", () => limit)
    const b = makeKeySlots(cache, "node-b", () => limit)
    try {
      const key = `k-${Date.now()}`
      expect(await claim(a, key)).toBe(true)
      await settle()
      expect(await claim(b, key)).toBe(true)
      await settle()
      expect(await claim(a, key)).toBe(true)
      await settle()
      expect(await claim(b, key)).toBe(false)
      expect(await claim(a, key)).toBe(false)
      // Claims in flight together on one node do not pass the cap either.
      const fresh = `${key}-burst`
      const burst = await Promise.all(Array.from({ length: 5 }, () => claim(a, fresh)))
      expect(burst.filter(Boolean)).toHaveLength(limit)
      // Another key has its own slots.
      expect(await claim(b, `${key}-other`)).toBe(true)
      a.release(key)
      await settle()
      expect(await claim(b, key)).toBe(true)
      await settle()
      expect(await claim(a, key)).toBe(false)
    } finally {
      a.close()
      b.close()
    }
  })

  it("stop counting a dead node's connections after their lease; a live node's are renewed", async () => {
    const key = `k-lease-${Date.now()}`
    const live = makeKeySlots(cache, "node-live", () => 2, 1500)
    const dead = makeKeySlots(cache, "node-dead", () => 2, 1500)
    try {
      expect(await claim(live, key)).toBe(true)
      await settle()
      expect(await claim(dead, key)).toBe(true)
      dead.close() // the node dies: no more renewals
      await settle()
      expect(await claim(live, key)).toBe(false)
      await new Promise((r) => setTimeout(r, 2200))
      // The dead node's slot has expired; the live node's was renewed and still counts.
      expect(await claim(live, key)).toBe(true)
      await settle()
      const third = makeKeySlots(cache, "node-third", () => 2, 1500)
      expect(await claim(third, key)).toBe(false)
      third.close()
    } finally {
      live.close()
      dead.close()
    }
  })

  it("fall back to each node's own count when the cache cannot answer", async () => {
    const failing = new Proxy(cache, {
      get: (target, name) =>
        name === "zrangeByScore" || name === "zadd" || name === "zremRangeByScore"
          ? () => Effect.fail(new CacheError({ reason: "Unavailable", message: "down" }))
          : target[name as keyof typeof target]
    })
    const slots = makeKeySlots(failing, "node-alone", () => 2)
    try {
      // Claims in flight together: the count is checked again when the cache has failed.
      const granted = await Promise.all([claim(slots, "k-down"), claim(slots, "k-down"), claim(slots, "k-down")])
      expect(granted.filter(Boolean)).toHaveLength(2)
      expect(await claim(slots, "k-down")).toBe(false)
      slots.release("k-down")
      expect(await claim(slots, "k-down")).toBe(true)
    } finally {
      slots.close()
    }
  })
})
