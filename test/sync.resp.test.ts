import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Redis } from "ioredis"
import { afterAll } from "vitest"
import { openRespPipelineLike, replyLength, respBatch } from "../src/layers/sync/respPipeline.ts"
import { freshRedis } from "./support/services.ts"

/** The sync's bulk connection (RESP written directly), against the machine's Redis, Redis DB 8. */
const redis = new Redis(freshRedis(8))
afterAll(() => redis.quit())

describe("respPipeline (the sync's bulk writes)", () => {
  it("replyLength: whole replies of every RESP2 type, -1 while one is incomplete", () => {
    const cases: ReadonlyArray<string> = [":1\r\n", "+OK\r\n", "-ERR wrong\r\n", "$3\r\nabc\r\n", "$-1\r\n", "*2\r\n:1\r\n$2\r\nhi\r\n", "*0\r\n", "*2\r\n*1\r\n:5\r\n+x\r\n"]
    for (const reply of cases) {
      const whole = Buffer.from(reply + ":9\r\n", "latin1")
      assert.strictEqual(replyLength(whole, 0), reply.length, JSON.stringify(reply))
      for (let cut = 0; cut < reply.length; cut++) assert.strictEqual(replyLength(Buffer.from(reply.slice(0, cut), "latin1"), 0), -1, `${JSON.stringify(reply)} cut at ${cut}`)
    }
  })

  it.live("writes a batch (UTF-8 values, empty strings), and a batch holding an error reply fails whole, so the sync's marks do not move past it", () =>
    Effect.gen(function*() {
      const bulk = yield* openRespPipelineLike(redis, 3_000)
      const ok = respBatch()
      ok.addWith(["HSET", "resp-test:h"], ["a", "ü €\r\n\"x\"", "b", ""])
      ok.add("SET", "resp-test:s", "1")
      yield* Effect.promise(() => bulk.exec(ok.done()))
      assert.deepStrictEqual(yield* Effect.promise(() => redis.hgetall("resp-test:h")), { a: "ü €\r\n\"x\"", b: "" })
      const bad = respBatch()
      bad.add("SET", "resp-test:before", "1")
      bad.add("ZADD", "resp-test:s", "1", "m") // WRONGTYPE: the key holds a string
      bad.add("SET", "resp-test:after", "1")
      const failed = yield* Effect.tryPromise({ try: () => bulk.exec(bad.done()), catch: (e) => String(e) }).pipe(Effect.flip)
      assert.include(failed, "WRONGTYPE")
      // The connection still works, and replies stay in step.
      const next = respBatch()
      next.add("INCR", "resp-test:s")
      yield* Effect.promise(() => bulk.exec(next.done()))
      assert.strictEqual(yield* Effect.promise(() => redis.get("resp-test:s")), "2")
    }))
})
