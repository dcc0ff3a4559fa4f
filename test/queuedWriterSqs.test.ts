import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { beforeAll } from "vitest"
import { SqsLive } from "../src/layers/SqsLive.ts"
import { Sqs } from "../src/services/Sqs.ts"
import { AWS_TEST_ENV, startSqsStandIn } from "./support/awsStandIns.ts"

beforeAll(() => {
  Object.assign(process.env, AWS_TEST_ENV)
})

/** A fresh SQS stand-in for one test, with the SDK pointed at it through the environment. */
const sqsStandIn = Effect.acquireRelease(
  Effect.promise(() => startSqsStandIn()).pipe(Effect.tap((sqs) => Effect.sync(() => void (process.env["AWS_ENDPOINT_URL_SQS"] = sqs.url)))),
  (sqs) => Effect.promise(() => sqs.close())
)

describe("SqsLive over the real SDK client and the SQS stand-in", () => {
  it.live("sends more than one request's worth of messages, receives them with their receive count, deletes them", () =>
    Effect.gen(function*() {
      const standIn = yield* sqsStandIn
      const bodies = Array.from({ length: 13 }, (_, i) => `{"n":${i}}`)
      const received = yield* Effect.gen(function*() {
        const sqs = yield* Sqs
        yield* sqs.sendBatch(bodies.map((body) => ({ body, attributes: { type: "usage_log" } })))
        const first = yield* sqs.receive({ maxMessages: 10, waitSeconds: 1, visibilityTimeoutSeconds: 30 })
        const second = yield* sqs.receive({ maxMessages: 10, waitSeconds: 1, visibilityTimeoutSeconds: 30 })
        const all = [...first, ...second]
        const refused = yield* sqs.deleteBatch([...all.map((m) => m.receiptHandle), "no-such-handle"])
        return { all, first, refused }
      }).pipe(Effect.provide(SqsLive(standIn.queueUrl)))
      assert.strictEqual(received.first.length, 10)
      assert.deepStrictEqual(received.all.map((m) => m.body).sort(), [...bodies].sort())
      assert.isTrue(received.all.every((m) => m.receiveCount === 1 && m.id !== "" && m.receiptHandle !== ""))
      assert.deepStrictEqual(received.refused.map((f) => f.receiptHandle), ["no-such-handle"])
      assert.strictEqual(standIn.inQueue(), 0)
    }))

  it.live("carries message attributes both ways; a visibility change of 0 redelivers at once with the next receive count", () =>
    Effect.gen(function*() {
      const standIn = yield* sqsStandIn
      const out = yield* Effect.gen(function*() {
        const sqs = yield* Sqs
        yield* sqs.sendBatch([{ body: "{}", attributes: { type: "usage_log" } }])
        const [first] = yield* sqs.receive({ maxMessages: 10, waitSeconds: 1, visibilityTimeoutSeconds: 300 })
        const hidden = yield* sqs.receive({ maxMessages: 10, waitSeconds: 0, visibilityTimeoutSeconds: 300 })
        const refused = yield* sqs.changeVisibilityBatch([{ receiptHandle: first!.receiptHandle, visibilityTimeoutSeconds: 0 }])
        const [again] = yield* sqs.receive({ maxMessages: 10, waitSeconds: 1, visibilityTimeoutSeconds: 300 })
        yield* sqs.changeVisibility({ receiptHandle: again!.receiptHandle, visibilityTimeoutSeconds: 600 })
        return { first: first!, hidden, refused, again: again! }
      }).pipe(Effect.provide(SqsLive(standIn.queueUrl)))
      assert.deepStrictEqual(out.first.attributes, { type: "usage_log" })
      assert.strictEqual(out.hidden.length, 0)
      assert.deepStrictEqual(out.refused, [])
      assert.strictEqual(out.again.id, out.first.id)
      assert.notStrictEqual(out.again.receiptHandle, out.first.receiptHandle)
      assert.strictEqual(out.again.receiveCount, 2)
      assert.strictEqual(standIn.inFlight(), 1)
      assert.deepStrictEqual(standIn.violations, [])
    }))

  it.live("a queue that does not exist is an SqsError naming the operation", () =>
    Effect.gen(function*() {
      const standIn = yield* sqsStandIn
      const error = yield* Effect.flip(Effect.gen(function*() {
        const sqs = yield* Sqs
        return yield* sqs.receive({ maxMessages: 1, waitSeconds: 0, visibilityTimeoutSeconds: 30 })
      }).pipe(Effect.provide(SqsLive(`${standIn.url}/000000000000/missing`))))
      assert.strictEqual(error._tag, "SqsError")
      assert.strictEqual(error.operation, "ReceiveMessage")
    }))
})
