import Stripe from "stripe"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { checkoutEvent, signStripePayload, type StripeStandIn, startStripeStandIn } from "../src/simulators/stripeStandIn.ts"

/**
 * The Stripe stand-in against the official `stripe` package: its signatures pass (and fail) the
 * package's own webhook verifier, and its REST answers are read by the package's own client.
 */

let standIn: StripeStandIn
beforeAll(async () => {
  standIn = await startStripeStandIn()
})
afterAll(async () => {
  await standIn.close()
})

const SECRET = "whsec_test_standin_secret"
const stripeClient = () => {
  const origin = new URL(standIn.url)
  return new Stripe("sk_test_standin", { host: origin.hostname, port: origin.port, protocol: "http", maxNetworkRetries: 0 })
}

describe("signStripePayload", () => {
  it("passes stripe.webhooks.constructEvent", () => {
    const session = standIn.createSession({ mode: "subscription", customerEmail: "a@example.com", prices: ["price_listener"], paymentStatus: "paid" })
    const body = checkoutEvent("checkout.session.completed", session, "evt_test_1")
    const event = stripeClient().webhooks.constructEvent(body, signStripePayload(body, SECRET), SECRET, 300)
    expect(event.id).toBe("evt_test_1")
    expect(event.type).toBe("checkout.session.completed")
  })

  it("passes with several v1 entries when one is made with the receiver's secret (secret roll)", () => {
    const body = checkoutEvent("checkout.session.completed", standIn.createSession({}))
    const header = signStripePayload(body, ["whsec_old", SECRET])
    expect(header.match(/v1=/g)).toHaveLength(2)
    expect(stripeClient().webhooks.constructEvent(body, header, SECRET, 300).object).toBe("event")
  })

  it("is refused by the official verifier for a wrong secret, an altered body, or an old timestamp", () => {
    const stripe = stripeClient()
    const body = checkoutEvent("checkout.session.completed", standIn.createSession({}))
    expect(() => stripe.webhooks.constructEvent(body, signStripePayload(body, "whsec_other"), SECRET, 300)).toThrow()
    expect(() => stripe.webhooks.constructEvent(body.replace("checkout.session.completed", "checkout.session.expired"), signStripePayload(body, SECRET), SECRET, 300)).toThrow()
    const old = Math.floor(Date.now() / 1000) - 301
    expect(() => stripe.webhooks.constructEvent(body, signStripePayload(body, SECRET, old), SECRET, 300)).toThrow(/tolerance/i)
  })
})

describe("Stripe stand-in REST", () => {
  it("answers the official client's retrieve with expand[]=line_items", async () => {
    const created = standIn.createSession({ mode: "subscription", customerEmail: "b@example.com", prices: ["price_associate"], metadata: { type: "subscription" } })
    const stripe = stripeClient()
    const plain = await stripe.checkout.sessions.retrieve(created.id)
    expect(plain.line_items).toBeUndefined()
    expect(plain.payment_status).toBe("unpaid")
    standIn.pay(created.id)
    const expanded = await stripe.checkout.sessions.retrieve(created.id, { expand: ["line_items"] })
    expect(expanded.payment_status).toBe("paid")
    expect(expanded.customer_details?.email).toBe("b@example.com")
    expect(expanded.line_items?.data[0]?.price?.metadata["tier"]).toBe("associate")
    expect(standIn.retrievals.at(-1)).toContain("expand")
  })

  it("creates sessions from the official client's form-encoded request", async () => {
    const created = await stripeClient().checkout.sessions.create({
      mode: "payment",
      customer_email: "c@example.com",
      metadata: { type: "donation" },
      line_items: [{ price: "price_donation", quantity: 1 }]
    })
    expect(created.id).toMatch(/^cs_test_/)
    expect(created.metadata?.["type"]).toBe("donation")
    expect(standIn.session(created.id)?.lineItems[0]?.price.id).toBe("price_donation")
  })

  it("answers Stripe error objects: unknown session 404 resource_missing, no key 401", async () => {
    await expect(stripeClient().checkout.sessions.retrieve("cs_test_missing")).rejects.toMatchObject({ code: "resource_missing", statusCode: 404, type: "StripeInvalidRequestError" })
    const res = await fetch(`${standIn.url}/v1/checkout/sessions/cs_test_missing`)
    expect(res.status).toBe(401)
    const body = await res.json() as { error: { type: string } }
    expect(body.error.type).toBe("invalid_request_error")
  })
})
