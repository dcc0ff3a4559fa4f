import { Effect, Layer } from "effect"
import { describe, expect, it } from "vitest"
import { ReceiptProcessor } from "../src/programs/receipt/fulfil.ts"
import { receiptRoute, stripeWebhookRoute } from "../src/programs/receipt/routes.ts"
import { Payments, PaymentsError, WebhookSignatureError } from "../src/services/Payments.ts"

/** The receipt routes without Stripe settings: MAINTENANCE, and the fulfilment never reached. */

const calls: Array<string> = []
const payments = (configured: boolean, webhookConfigured: boolean) =>
  Layer.succeed(Payments, Payments.of({
    configured: Effect.succeed(configured),
    webhookConfigured: Effect.succeed(webhookConfigured),
    retrieveCheckoutSession: () => Effect.fail(new PaymentsError({ reason: "NotConfigured", message: "no key" })),
    verifyWebhook: () => Effect.fail(new WebhookSignatureError({ reason: "NotConfigured", message: "no secret" }))
  }))
const processor = Layer.succeed(ReceiptProcessor, ReceiptProcessor.of({
  fulfil: (sessionId) => Effect.sync(() => void calls.push(sessionId)).pipe(Effect.as({ session_id: sessionId, type: "donation" as const, tier: null, duplicate: false })),
  handleEvent: () => Effect.sync(() => void calls.push("event")).pipe(Effect.as({ _tag: "DuplicateEvent" as const })),
  sendPending: Effect.succeed(0)
}))
const run = <A, E>(effect: Effect.Effect<A, E, Payments | ReceiptProcessor>, configured: boolean, webhookConfigured: boolean) =>
  Effect.runPromise(effect.pipe(Effect.provide(Layer.mergeAll(payments(configured, webhookConfigured), processor))))

describe("receipt routes without Stripe settings", () => {
  it("POST /receipt answers MAINTENANCE without STRIPE_SECRET_KEY", async () => {
    expect(await run(receiptRoute(JSON.stringify({ session_id: "cs_1" })), false, true)).toMatchObject({ _tag: "Fail", code: "MAINTENANCE" })
    expect(await run(receiptRoute(JSON.stringify({ session_id: "cs_1" })), true, true)).toMatchObject({ _tag: "Ok" })
  })

  it("POST /stripe/webhook answers MAINTENANCE without STRIPE_WEBHOOK_SECRET", async () => {
    expect(await run(stripeWebhookRoute("{}", "t=1,v1=00"), true, false)).toMatchObject({ _tag: "Fail", code: "MAINTENANCE" })
    expect(calls).toEqual(["cs_1"])
  })

  it("POST /receipt checks its body: session_id required, type one of the three", async () => {
    expect(await run(receiptRoute("not json"), true, true)).toMatchObject({ _tag: "Fail", code: "BAD_REQUEST" })
    expect(await run(receiptRoute(JSON.stringify({ type: "donation" })), true, true)).toMatchObject({ _tag: "Fail", code: "BAD_REQUEST" })
    expect(await run(receiptRoute(JSON.stringify({ session_id: "cs_2", type: "gift" })), true, true)).toMatchObject({ _tag: "Fail", code: "BAD_REQUEST" })
  })
})
