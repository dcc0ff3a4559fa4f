import { assert, describe, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { randomUUID } from "node:crypto"
import { migrate } from "../src/layers/migrations/index.ts"
import { handleUsageMessages } from "../src/programs/queuedWriter/handler.ts"
import { freshPgLayer } from "./support/services.ts"
import { monthlyCounters, storedIds, usageLogBody, usageRow } from "./queuedWriterSupport.ts"

const Database = Layer.effectDiscard(migrate).pipe(Layer.provideMerge(freshPgLayer("queued_writer_concurrency", 8)))

describe("handleUsageMessages, batches written at once", () => {
  layer(Database)((it) => {
    it.effect("batches of the same keys written concurrently neither deadlock nor lose a count", () =>
      Effect.gen(function*() {
        const keys = Array.from({ length: 40 }, () => randomUUID())
        const shuffled = () => [...keys].sort(() => Math.random() - 0.5)
        const batches = Array.from({ length: 64 }, (_, b) =>
          [{ id: `m-${b}`, body: usageLogBody(shuffled().slice(0, 30).map((k) => usageRow({ api_key_id: k }))) }])
        const outcomes = yield* Effect.forEach(batches, (messages) => handleUsageMessages(messages).pipe(Effect.result), { concurrency: 8 })
        const failures = outcomes.filter((o) => o._tag === "Failure")
        assert.deepStrictEqual(failures.map((f) => String(f)), [])
        const counters = yield* monthlyCounters
        assert.strictEqual(counters.reduce((n, c) => n + c.requests, 0), 64 * 30)
      }), 60_000)

    it.effect("the same messages redelivered to batches written at once, in other orders, are stored once without deadlock", () =>
      Effect.gen(function*() {
        // Several rounds: a deadlock needs two batches to interleave just so.
        for (let round = 0; round < 5; round++) {
          const messages = Array.from({ length: 12 }, (_, m) => ({ id: `dup-${round}-${m}`, body: usageLogBody(Array.from({ length: 200 }, () => usageRow())) }))
          const batches = Array.from({ length: 16 }, () => [...messages].sort(() => Math.random() - 0.5).slice(0, 6))
          const outcomes = yield* Effect.forEach(batches, (batch) => handleUsageMessages(batch).pipe(Effect.result), { concurrency: 8 })
          assert.deepStrictEqual(outcomes.filter((o) => o._tag === "Failure").map((f) => String(f)), [])
        }
        assert.strictEqual((yield* storedIds).length, 5 * 12 * 200 + 64 * 30)
      }), 60_000)
  })
})
