import { ConfigProvider, Effect, Layer, Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { PaymentsStripe } from "../src/layers/PaymentsStripe.ts"
import { Payments } from "../src/services/Payments.ts"
import { Secrets } from "../src/services/Secrets.ts"
import { checkoutEvent, signStripePayload, type StripeStandIn, startStripeStandIn } from "../src/simulators/stripeStandIn.ts"

/** The Payments layer against the Stripe stand-in: session retrieval and webhook signature checks. */

const WEBHOOK_SECRET = "whsec_payments_test"
let standIn: StripeStandIn
beforeAll(async () => {
  standIn = await startStripeStandIn()
})
afterAll(async () => {
  await standIn.close()
})

const layerWith = (env: Record<string, string>, stripeKey: string | undefined = "sk_test_payments") =>
  PaymentsStripe.pipe(
    Layer.provide(Layer.succeed(Secrets, Secrets.of({
      get: (name) => {
        // The secrets the layer reads, as the Secrets service would answer them.
        const value = name === "STRIPE_SECRET_KEY" ? stripeKey : name === "STRIPE_WEBHOOK_SECRET" ? env["STRIPE_WEBHOOK_SECRET"] : undefined
        return Effect.succeed(value === undefined ? Option.none() : Option.some(Redacted.make(value)))
      }
    }))),
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord(env)))
  )

const run = <A, E>(effect: Effect.Effect<A, E, Payments>, env: Record<string, string> = { STRIPE_API_BASE: standIn.url, STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET }, stripeKey?: string) =>
  Effect.runPromise(Effect.result(effect).pipe(Effect.provide(layerWith(env, stripeKey))))

const usePayments = <A, E>(f: (payments: Payments["Service"]) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    return yield* f(yield* Payments)
  })

const verify = (body: string, header: string | undefined) => run(usePayments((p) => p.verifyWebhook(body, header)))

describe("PaymentsStripe.retrieveCheckoutSession", () => {
  it("reads the session with its line items and the customer's e-mail", async () => {
    const session = standIn.createSession({ mode: "subscription", customerEmail: "p@example.com", prices: ["price_partner"], paymentStatus: "paid" })
    const result = await run(usePayments((p) => p.retrieveCheckoutSession(session.id)))
    expect(result._tag).toBe("Success")
    if (result._tag !== "Success") return
    expect(result.success).toMatchObject({ id: session.id, mode: "subscription", paymentStatus: "paid", customerEmail: "p@example.com" })
    expect(result.success.lineItems[0]?.priceMetadata["tier"]).toBe("partner")
    expect(standIn.retrievals.at(-1)).toMatch(/expand%5B%5D=line_items/)
  })

  it("fails NotFound for a session Stripe does not know, NotConfigured without a key", async () => {
    const missing = await run(usePayments((p) => p.retrieveCheckoutSession("cs_test_nope")))
    expect(missing._tag === "Failure" && missing.failure.reason).toBe("NotFound")
    const unconfigured = await run(usePayments((p) => p.retrieveCheckoutSession("cs_test_nope")), { STRIPE_API_BASE: standIn.url }, "")
    expect(unconfigured._tag).toBe("Failure")
  })
})

describe("PaymentsStripe.verifyWebhook", () => {
  const session = () => standIn.createSession({ mode: "payment", customerEmail: "w@example.com", prices: ["price_donation"], paymentStatus: "paid" })

  it("accepts a Stripe-signed event and names its session", async () => {
    const s = session()
    const body = checkoutEvent("checkout.session.completed", s, "evt_ok")
    const result = await verify(body, signStripePayload(body, WEBHOOK_SECRET))
    expect(result._tag === "Success" && result.success).toEqual({ id: "evt_ok", type: "checkout.session.completed", sessionId: s.id })
  })

  it("accepts several v1 entries when one matches (secret roll), refuses when none does", async () => {
    const body = checkoutEvent("checkout.session.completed", session())
    expect((await verify(body, signStripePayload(body, ["whsec_old", WEBHOOK_SECRET])))._tag).toBe("Success")
    const none = await verify(body, signStripePayload(body, ["whsec_old", "whsec_older"]))
    expect(none._tag === "Failure" && none.failure.reason).toBe("NoMatch")
  })

  it("refuses a wrong secret, an altered body, a missing header", async () => {
    const body = checkoutEvent("checkout.session.completed", session())
    const wrong = await verify(body, signStripePayload(body, "whsec_wrong"))
    expect(wrong._tag === "Failure" && wrong.failure.reason).toBe("NoMatch")
    const altered = await verify(body.replace("w@example.com", "x@example.com"), signStripePayload(body, WEBHOOK_SECRET))
    expect(altered._tag === "Failure" && altered.failure.reason).toBe("NoMatch")
    const missing = await verify(body, undefined)
    expect(missing._tag === "Failure" && missing.failure.reason).toBe("Missing")
  })

  it("refuses a timestamp more than 300 s off either way, accepts one just inside", async () => {
    const body = checkoutEvent("checkout.session.completed", session())
    const now = Math.floor(Date.now() / 1000)
    for (const t of [now - 302, now + 302]) {
      const result = await verify(body, signStripePayload(body, WEBHOOK_SECRET, t))
      expect(result._tag === "Failure" && result.failure.reason).toBe("TimestampOutOfTolerance")
    }
    expect((await verify(body, signStripePayload(body, WEBHOOK_SECRET, now - 290)))._tag).toBe("Success")
  })

  it("fails NotConfigured without STRIPE_WEBHOOK_SECRET", async () => {
    const body = checkoutEvent("checkout.session.completed", session())
    const result = await run(usePayments((p) => p.verifyWebhook(body, signStripePayload(body, WEBHOOK_SECRET))), { STRIPE_API_BASE: standIn.url })
    expect(result._tag === "Failure" && result.failure.reason).toBe("NotConfigured")
  })
})
