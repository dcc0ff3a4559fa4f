import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, type Layer, Redacted, Scope } from "effect"
import { createServer, type Server } from "node:net"
import { CacheMemory, makeMemoryCache } from "../src/layers/CacheMemory.ts"
import { cacheValkeyLayer } from "../src/layers/CacheValkey.ts"
import { Cache } from "../src/services/Cache.ts"
import { freshRedis } from "./support/services.ts"

/** Keys unique per test so tests never see each other's data (the Valkey DB is shared by the file). */
let keySeq = 0
const uniqueKey = (name: string) => `conf:${process.pid}:${++keySeq}:${name}`

/** Poll until `check` holds; pub/sub delivery and TTL expiry are asynchronous in Valkey. */
const eventually = (check: () => boolean, timeoutMs = 3_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!check() && Date.now() < deadline) yield* Effect.sleep("20 millis")
    return check()
  })

/** The same behaviour is required of every Cache implementation. */
const conformance = (name: string, makeLayer: () => Layer.Layer<Cache>) =>
  describe(`Cache conformance: ${name}`, () => {
    const run = <A, E>(body: (cache: Cache["Service"]) => Effect.Effect<A, E, Scope.Scope>) =>
      Effect.gen(function*() {
        return yield* body(yield* Cache)
      }).pipe(Effect.provide(makeLayer()))

    it.live("get/set round-trips, and a TTL expires the value", () =>
      run((cache) =>
        Effect.gen(function*() {
          const kept = uniqueKey("kept")
          const brief = uniqueKey("brief")
          assert.strictEqual(yield* cache.get(kept), undefined)
          yield* cache.set(kept, "v1")
          yield* cache.set(brief, "short", 150)
          assert.strictEqual(yield* cache.get(kept), "v1")
          assert.strictEqual(yield* cache.get(brief), "short")
          yield* cache.set(kept, "v2")
          assert.strictEqual(yield* cache.get(kept), "v2")
          yield* Effect.sleep("300 millis")
          assert.strictEqual(yield* cache.get(brief), undefined)
          assert.strictEqual(yield* cache.get(kept), "v2")
        })
      ))

    it.live("setIfAbsent sets only once, and again after the TTL expired", () =>
      run((cache) =>
        Effect.gen(function*() {
          const key = uniqueKey("nx")
          assert.isTrue(yield* cache.setIfAbsent(key, "first", 150))
          assert.isFalse(yield* cache.setIfAbsent(key, "second", 150))
          assert.strictEqual(yield* cache.get(key), "first")
          yield* Effect.sleep("300 millis")
          assert.isTrue(yield* cache.setIfAbsent(key, "third"))
          assert.strictEqual(yield* cache.get(key), "third")
        })
      ))

    it.live("getMany answers in order with undefined for missing keys", () =>
      run((cache) =>
        Effect.gen(function*() {
          const [a, b, c] = [uniqueKey("a"), uniqueKey("b"), uniqueKey("c")]
          yield* cache.set(a, "1")
          yield* cache.set(c, "3")
          assert.deepStrictEqual(yield* cache.getMany([a, b, c]), ["1", undefined, "3"])
          assert.deepStrictEqual(yield* cache.getMany([c, a]), ["3", "1"])
          assert.deepStrictEqual(yield* cache.getMany([]), [])
        })
      ))

    it.live("hsetMany merges fields across writes and keys; its TTL expires the hash", () =>
      run((cache) =>
        Effect.gen(function*() {
          const h1 = uniqueKey("h1")
          const h2 = uniqueKey("h2")
          assert.deepStrictEqual(yield* cache.hgetall(h1), {})
          yield* cache.hsetMany([{ key: h1, values: { a: "1", b: "2" } }, { key: h2, values: { x: "9" }, ttlMs: 150 }])
          yield* cache.hsetMany([{ key: h1, values: { b: "20", c: "3" } }])
          assert.deepStrictEqual(yield* cache.hgetall(h1), { a: "1", b: "20", c: "3" })
          assert.deepStrictEqual(yield* cache.hgetall(h2), { x: "9" })
          yield* Effect.sleep("300 millis")
          assert.deepStrictEqual(yield* cache.hgetall(h2), {})
          assert.deepStrictEqual(yield* cache.hgetall(h1), { a: "1", b: "20", c: "3" })
        })
      ))

    it.live("del removes strings, hashes and sorted sets", () =>
      run((cache) =>
        Effect.gen(function*() {
          const s = uniqueKey("s")
          const h = uniqueKey("h")
          const z = uniqueKey("z")
          const other = uniqueKey("other")
          yield* cache.set(s, "v")
          yield* cache.set(other, "stays")
          yield* cache.hsetMany([{ key: h, values: { f: "v" } }])
          yield* cache.zadd(z, [{ score: 1, member: "m" }])
          yield* cache.del([s, h, z])
          assert.strictEqual(yield* cache.get(s), undefined)
          assert.deepStrictEqual(yield* cache.hgetall(h), {})
          assert.deepStrictEqual(yield* cache.zrangeByScore(z, -Infinity, Infinity), [])
          assert.strictEqual(yield* cache.get(other), "stays")
          yield* cache.del([])
        })
      ))

    it.live("incrMany returns running totals in order and (re)sets the TTL", () =>
      run((cache) =>
        Effect.gen(function*() {
          const a = uniqueKey("ca")
          const b = uniqueKey("cb")
          assert.deepStrictEqual(yield* cache.incrMany([{ key: a, by: 2, ttlMs: 10_000 }, { key: b, by: 5, ttlMs: 200 }]), [2, 5])
          assert.deepStrictEqual(yield* cache.incrMany([{ key: b, by: 1, ttlMs: 200 }, { key: a, by: 3, ttlMs: 10_000 }]), [6, 5])
          // The same key twice in one batch accumulates.
          assert.deepStrictEqual(yield* cache.incrMany([{ key: a, by: 1, ttlMs: 10_000 }, { key: a, by: 1, ttlMs: 10_000 }]), [6, 7])
          assert.strictEqual(yield* cache.get(a), "7")
          assert.deepStrictEqual(yield* cache.incrMany([]), [])
          // Each increment refreshes the TTL: b survives past its first TTL while it keeps being bumped...
          for (let i = 0; i < 3; i++) {
            yield* Effect.sleep("120 millis")
            yield* cache.incrMany([{ key: b, by: 1, ttlMs: 200 }])
          }
          assert.strictEqual(yield* cache.get(b), "9")
          // ...and expires once it is not: the next increment starts from zero.
          yield* Effect.sleep("350 millis")
          assert.strictEqual(yield* cache.get(b), undefined)
          assert.deepStrictEqual(yield* cache.incrMany([{ key: b, by: 4, ttlMs: 200 }]), [4])
          assert.strictEqual(yield* cache.get(a), "7")
        })
      ))

    it.live("zadd / zrangeByScore / zremRangeByScore keep members ordered by score", () =>
      run((cache) =>
        Effect.gen(function*() {
          const z = uniqueKey("zset")
          yield* cache.zadd(z, [{ score: 30, member: "c" }, { score: 10, member: "a" }, { score: 20, member: "b" }])
          yield* cache.zadd(z, [{ score: 40, member: "d" }, { score: 5, member: "c" }])
          assert.deepStrictEqual(yield* cache.zrangeByScore(z, -Infinity, Infinity), ["c", "a", "b", "d"])
          assert.deepStrictEqual(yield* cache.zrangeByScore(z, 10, 20), ["a", "b"])
          assert.deepStrictEqual(yield* cache.zrangeByScore(z, 41, 100), [])
          yield* cache.zremRangeByScore(z, 0, 15)
          assert.deepStrictEqual(yield* cache.zrangeByScore(z, -Infinity, Infinity), ["b", "d"])
          yield* cache.zremRangeByScore(uniqueKey("absent"), 0, 1)
          const brief = uniqueKey("zbrief")
          yield* cache.zadd(brief, [{ score: 1, member: "x" }], 150)
          assert.deepStrictEqual(yield* cache.zrangeByScore(brief, 0, 10), ["x"])
          yield* Effect.sleep("300 millis")
          assert.deepStrictEqual(yield* cache.zrangeByScore(brief, 0, 10), [])
        })
      ))

    it.live("publish reaches subscribers until their scope closes", () =>
      run((cache) =>
        Effect.gen(function*() {
          const channel = uniqueKey("chan")
          const closing: Array<string> = []
          const staying: Array<string> = []
          const scope = yield* Scope.make()
          yield* cache.subscribe(channel, (m) => void closing.push(m)).pipe(Scope.provide(scope))
          yield* cache.subscribe(channel, (m) => void staying.push(m))
          // A message published once subscribe has returned is delivered (no lost first message).
          yield* cache.publish(channel, "hello")
          yield* cache.publish(channel, "world")
          assert.isTrue(yield* eventually(() => closing.length >= 2 && staying.length >= 2), `delivered: ${closing} / ${staying}`)
          assert.deepStrictEqual(closing, ["hello", "world"])
          assert.deepStrictEqual(staying, ["hello", "world"])
          yield* Scope.close(scope, Exit.void)
          yield* cache.publish(channel, "after-close")
          // The subscriber that stayed open gets it, proving it was published; the closed one does not.
          assert.isTrue(yield* eventually(() => staying.includes("after-close")))
          yield* Effect.sleep("100 millis")
          assert.deepStrictEqual(closing, ["hello", "world"])
          // Other channels are not delivered.
          yield* cache.publish(uniqueKey("other-chan"), "elsewhere")
          yield* cache.publish(channel, "last")
          assert.isTrue(yield* eventually(() => staying.includes("last")))
          assert.deepStrictEqual(staying, ["hello", "world", "after-close", "last"])
        })
      ))
  })

conformance("memory", () => CacheMemory)

const redisUrl = freshRedis(5)
conformance("valkey", () => cacheValkeyLayer(Redacted.make(redisUrl)))

describe("Valkey layer with the server unreachable", () => {
  it.live("starts, then fails commands fast with CacheError Unavailable instead of hanging", () =>
    Effect.gen(function*() {
      const started = Date.now()
      const cache = yield* Cache
      assert.strictEqual(cache.kind, "valkey")
      const results = yield* Effect.all([
        Effect.flip(cache.get("k")),
        Effect.flip(cache.set("k", "v", 1000)),
        Effect.flip(cache.incrMany([{ key: "c", by: 1, ttlMs: 1000 }])),
        Effect.flip(cache.hsetMany([{ key: "h", values: { a: "1" } }])),
        Effect.flip(cache.publish("chan", "m")),
        Effect.flip(cache.ping)
      ])
      for (const error of results) {
        assert.strictEqual(error._tag, "CacheError")
        assert.strictEqual(error.reason, "Unavailable")
      }
      // A subscription does not block or fail start-up either.
      yield* cache.subscribe("chan", () => {})
      assert.isBelow(Date.now() - started, 5_000)
    }).pipe(
      Effect.provide(cacheValkeyLayer(Redacted.make("redis://127.0.0.1:1"))),
      Effect.scoped,
      // The whole thing, including closing the connections, is bounded.
      Effect.timeoutOrElse({ duration: Duration.seconds(8), orElse: () => Effect.die("the unreachable Valkey layer hung") })
    ), 15_000)
})

describe("Memory cache housekeeping", () => {
  it.live("drops expired keys that are never read again (the governor's per-second counters)", () =>
    Effect.gen(function*() {
      const cache = makeMemoryCache()
      // Written once, never read: what lazy expiry on read alone would keep forever.
      for (let second = 0; second < 500; second++) yield* cache.incrMany([{ key: `gov:${second}`, by: 1, ttlMs: 20 }])
      yield* cache.set("kept", "v")
      assert.strictEqual(cache.entryCount(), 501)
      yield* Effect.sleep("50 millis")
      // Plenty of later writes to keys that stay: no read of the expired keys ever happens.
      for (let i = 0; i < 3_000; i++) yield* cache.incrMany([{ key: "rl:steady", by: 1, ttlMs: 60_000 }])
      assert.strictEqual(cache.entryCount(), 2)
      assert.strictEqual(yield* cache.get("kept"), "v")
      assert.strictEqual(yield* cache.get("rl:steady"), "3000")
    }))

  it.live("keeps the number of entries bounded under a steady stream of short-lived keys", () =>
    Effect.gen(function*() {
      const cache = makeMemoryCache()
      let peak = 0
      // Each key lives 5 ms and is written once: about 20 keys are live at any moment.
      for (let i = 0; i < 6_000; i++) {
        yield* cache.set(`once:${i}`, "x", 5)
        if (i % 50 === 0) yield* Effect.sleep("1 millis")
        peak = Math.max(peak, cache.entryCount())
      }
      assert.isBelow(peak, 3_000, `peak entries ${peak}`)
    }))
})

/**
 * A server that completes the ioredis handshake and then never answers: connected, but stalled
 * (the failure mode a hung or overloaded Valkey shows).
 */
const startStalledServer = () =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<Server>((resolve) => {
        const server = createServer((socket) => {
          let pending = ""
          socket.on("data", (data) => {
            pending += data.toString("latin1")
            for (const command of takeCommands()) answerHandshake(command, (reply) => void socket.write(reply))
          })
          socket.on("error", () => {})
          // Parses complete RESP arrays of bulk strings off `pending`; returns their command names.
          const takeCommands = (): Array<string> => {
            const names: Array<string> = []
            for (;;) {
              const header = /^\*(\d+)\r\n/.exec(pending)
              if (header === null) return names
              let pos = header[0].length
              const args: Array<string> = []
              for (let i = 0; i < Number(header[1]); i++) {
                const len = /^\$(\d+)\r\n/.exec(pending.slice(pos))
                if (len === null) return names
                const start = pos + len[0].length
                const end = start + Number(len[1])
                if (pending.length < end + 2) return names
                args.push(pending.slice(start, end))
                pos = end + 2
              }
              pending = pending.slice(pos)
              names.push((args[0] ?? "").toLowerCase())
            }
          }
        })
        server.listen(0, "127.0.0.1", () => resolve(server))
      })
    ),
    (server) => Effect.sync(() => void server.close())
  )

/** Enough of the handshake for ioredis to report "ready"; everything else is never answered. */
const answerHandshake = (command: string, write: (reply: string) => void) => {
  if (command === "hello") write("-ERR unknown command 'hello'\r\n")
  else if (command === "select" || command === "client") write("+OK\r\n")
  else if (command === "info") {
    const info = "# Server\r\nloading:0\r\n"
    write(`$${info.length}\r\n${info}\r\n`)
  }
}

describe("Valkey layer with the server connected but not answering", () => {
  it.live("fails commands and pipelines with CacheError within ~2 s instead of stalling", () =>
    Effect.gen(function*() {
      const server = yield* startStalledServer()
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      yield* Effect.gen(function*() {
        const cache = yield* Cache
        const started = Date.now()
        const results = yield* Effect.all([
          Effect.flip(cache.get("k")),
          Effect.flip(cache.incrMany([{ key: "c", by: 1, ttlMs: 1000 }])),
          Effect.flip(cache.ping)
        ], { concurrency: "unbounded" })
        for (const error of results) {
          assert.strictEqual(error._tag, "CacheError")
          assert.strictEqual(error.reason, "Command")
          assert.match(error.message, /timed out/)
        }
        assert.isBelow(Date.now() - started, 2_000)
      }).pipe(Effect.provide(cacheValkeyLayer(Redacted.make(`redis://127.0.0.1:${port}/0`))))
    }).pipe(
      Effect.scoped,
      Effect.timeoutOrElse({ duration: Duration.seconds(8), orElse: () => Effect.die("a command to the stalled Valkey hung") })
    ), 15_000)
})
