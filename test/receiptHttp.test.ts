/**
 * The receipt routes end to end: `tb serve` (ALL, simulated feeds, real PostgreSQL) as a child
 * process with the Stripe stand-in as STRIPE_API_BASE. The webhook and the thank-you page's call
 * for one session, concurrently and repeatedly; signature checks; the spec's answers and codes;
 * the e-mailed key answering a price at once; /checkout; the report server's port answering 404.
 * Runs the built CLI (`npm run build`).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { checkoutEvent, signStripePayload, type StripeStandIn, startStripeStandIn } from "../src/simulators/stripeStandIn.ts"
import { admin, call, freePort, priceWith, type RunningServer, startServer } from "./support/server.ts"
import { mailsTo as mailsIn } from "./support/outbox.ts"
import { dropDatabase, freshDatabase, psqlText } from "./support/services.ts"

const WEBHOOK_SECRET = "whsec_receipt_http"
let standIn: StripeStandIn
let server: RunningServer
let lrsBase = ""
const dbUrl = freshDatabase("receipt_http")

beforeAll(async () => {
  standIn = await startStripeStandIn()
  const lrsPort = await freePort()
  lrsBase = `http://127.0.0.1:${lrsPort}`
  server = await startServer({
    SERVER_TYPE: "ALL",
    DATABASE_URL: dbUrl,
    LRS_HTTP_PORT: String(lrsPort),
    LRS_UDP_PORT: String(await freePort()),
    STRIPE_SECRET_KEY: "sk_test_receipt_http",
    STRIPE_API_BASE: standIn.url,
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET
  })
}, 90_000)

afterAll(async () => {
  await server?.stop()
  await standIn?.close()
  dropDatabase(dbUrl)
})

const receipt = (body: unknown) => call(server, "/receipt", { method: "POST", headers: { "content-type": "application/json" }, body })
const webhook = async (raw: string, signature: string | undefined) => {
  const res = await fetch(`${server.baseUrl}/stripe/webhook`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(signature === undefined ? {} : { "stripe-signature": signature }) },
    body: raw
  })
  return { status: res.status, body: await res.json() as { service: string; code: string; data: Record<string, unknown> | null } }
}

const psql = (sql: string) => psqlText(dbUrl, sql)
const mailsTo = (to: string) => mailsIn(server.dataDir, to)

describe("a subscription bought through Stripe", () => {
  it("webhook and /receipt concurrently and repeatedly: one user, one key, one transaction, one e-mail; the key answers a price at once", async () => {
    const email = "buyer@example.com"
    const session = standIn.createSession({ mode: "subscription", customerEmail: email, prices: ["price_listener"], paymentStatus: "paid" })
    const event = checkoutEvent("checkout.session.completed", session, "evt_http_1")
    const answers = await Promise.all([
      ...Array.from({ length: 3 }, () => receipt({ session_id: session.id })),
      ...Array.from({ length: 3 }, () => webhook(event, signStripePayload(event, WEBHOOK_SECRET)))
    ])
    for (const a of answers) {
      expect(a.status).toBe(200)
      expect(a.body.service).toBe("RECEIPT")
    }
    const again = await receipt({ session_id: session.id })
    expect(again.body.data).toEqual({ session_id: session.id, type: "subscription", tier: "listener", duplicate: true })
    expect(JSON.stringify(answers.map((a) => a.body))).not.toMatch(/tb_[A-Za-z0-9_-]{20,}/)

    expect(psql(`SELECT count(*) FROM users WHERE email = '${email}'`)).toBe("1")
    expect(psql(`SELECT count(*) FROM api_keys WHERE email = '${email}'`)).toBe("1")
    expect(psql(`SELECT count(*) FROM transactions WHERE payment_session_id = '${session.id}'`)).toBe("1")
    const mails = mailsTo(email)
    expect(mails).toHaveLength(1)
    const key = /\b(tb_[A-Za-z0-9_-]{20,})/.exec(mails[0] ?? "")?.[1] ?? ""
    const price = await priceWith(server, key)
    expect(price.status).toBe(200)
    expect(price.body.code).toBe("OK")
    expect(server.output()).not.toContain(key)
  }, 30_000)
})

describe("/stripe/webhook signatures", () => {
  const paid = () => standIn.createSession({ mode: "payment", customerEmail: "sig@example.com", prices: ["price_donation"], paymentStatus: "paid" })

  it("answers 400 for a wrong secret, an altered body, a timestamp outside 300 s, no signature", async () => {
    const raw = checkoutEvent("checkout.session.completed", paid())
    const now = Math.floor(Date.now() / 1000)
    for (const [body, signature] of [
      [raw, signStripePayload(raw, "whsec_wrong")],
      [raw.replace("sig@example.com", "sog@example.com"), signStripePayload(raw, WEBHOOK_SECRET)],
      [raw, signStripePayload(raw, WEBHOOK_SECRET, now - 301)],
      [raw, signStripePayload(raw, WEBHOOK_SECRET, now + 301)],
      [raw, undefined]
    ] as const) {
      const answer = await webhook(body, signature)
      expect(answer.status).toBe(400)
      expect(answer.body).toMatchObject({ service: "RECEIPT", code: "BAD_REQUEST" })
    }
    expect(psql(`SELECT count(*) FROM transactions WHERE email = 'sig@example.com'`)).toBe("0")
  })

  it("accepts several v1 entries (secret roll), and answers a repeated event as a duplicate", async () => {
    const raw = checkoutEvent("checkout.session.completed", paid(), "evt_roll_1")
    const first = await webhook(raw, signStripePayload(raw, ["whsec_old", WEBHOOK_SECRET]))
    expect(first.status).toBe(200)
    expect(first.body.data).toMatchObject({ event_id: "evt_roll_1", outcome: "fulfilled" })
    const second = await webhook(raw, signStripePayload(raw, WEBHOOK_SECRET))
    expect(second.body.data).toMatchObject({ outcome: "duplicate" })
  })

  it("answers 409 NO_SUBSCRIPTION for an lrs-addon without a key (so Stripe retries), 200 awaiting_payment for an unpaid session", async () => {
    const addon = standIn.createSession({ mode: "payment", customerEmail: "nobody@example.com", prices: ["price_lrs_addon"], paymentStatus: "paid", metadata: { type: "lrs-addon" } })
    const raw = checkoutEvent("checkout.session.completed", addon)
    expect(await webhook(raw, signStripePayload(raw, WEBHOOK_SECRET))).toMatchObject({ status: 409, body: { code: "NO_SUBSCRIPTION" } })
    const unpaid = checkoutEvent("checkout.session.completed", standIn.createSession({ mode: "payment", customerEmail: "u@example.com" }))
    expect(await webhook(unpaid, signStripePayload(unpaid, WEBHOOK_SECRET))).toMatchObject({ status: 200, body: { data: { outcome: "awaiting_payment" } } })
  })
})

describe("POST /receipt answers", () => {
  it("400 without session_id, 400 'Failed to read payment session' for an unknown one, 409 for unpaid and for lrs-addon without a key", async () => {
    expect(await receipt({})).toMatchObject({ status: 400, body: { service: "RECEIPT", code: "BAD_REQUEST" } })
    expect(await receipt({ session_id: "cs_test_nope" })).toMatchObject({ status: 400, body: { code: "BAD_REQUEST", data: { error: "Failed to read payment session" } } })
    const unpaid = standIn.createSession({ mode: "subscription", customerEmail: "later@example.com", prices: ["price_listener"] })
    expect(await receipt({ session_id: unpaid.id })).toMatchObject({ status: 409, body: { code: "PAYMENT_NOT_COMPLETE" } })
    const addon = standIn.createSession({ mode: "payment", customerEmail: "nobody2@example.com", prices: ["price_lrs_addon"], paymentStatus: "paid" })
    const refused = await receipt({ session_id: addon.id, type: "lrs-addon" })
    expect(refused).toMatchObject({ status: 409, body: { code: "NO_SUBSCRIPTION" } })
    expect(typeof refused.body.message).toBe("string")
  })

  it("is 404 on the report server's port, naming LPO_HTTP_PORT", async () => {
    const res = await fetch(`${lrsBase}/receipt`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })
    const body = await res.json() as { service: string; code: string; data: { error: string } }
    expect(res.status).toBe(404)
    expect(body).toMatchObject({ service: "RECEIPT", code: "NOT_FOUND" })
    expect(body.data.error).toContain("LPO_HTTP_PORT")
  })
})

describe("GET /checkout", () => {
  it("302 to the plan's Payment Link with locale=, 404 for an unknown plan or one without a link", async () => {
    psql(`INSERT INTO application_parameters (name, value, value_type, description) VALUES ('payment_link_lrs_addon', 'https://buy.stripe.com/test_lrs', 'string', 'test') ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`)
    const res = await fetch(`${server.baseUrl}/checkout?plan=lrs-addon&lang=fr`, { redirect: "manual" })
    expect(res.status).toBe(302)
    expect(res.headers.get("location")).toBe("https://buy.stripe.com/test_lrs?locale=fr")
    const unknown = await call(server, "/checkout?plan=gold")
    expect(unknown).toMatchObject({ status: 404, body: { service: "RECEIPT", code: "NOT_FOUND" } })
    expect(await call(server, "/checkout")).toMatchObject({ status: 400, body: { service: "RECEIPT", code: "BAD_REQUEST" } })
    // Answers the edge makes itself on the receipt paths (here 405) name the receipt processor too.
    expect(await call(server, "/receipt")).toMatchObject({ status: 405, body: { service: "RECEIPT", code: "METHOD_NOT_ALLOWED" } })
    psql(`UPDATE application_parameters SET value = '' WHERE name = 'payment_link_partner'`)
    expect((await call(server, "/checkout?plan=partner")).status).toBe(404)
    // An operator sets a link through /admin/params (a parameter like any other).
    const set = await admin(server, "POST", "/admin/params", { payment_link_partner: "https://buy.stripe.com/test_partner" })
    expect(set.status).toBe(200)
    const partner = await fetch(`${server.baseUrl}/checkout?plan=partner`, { redirect: "manual" })
    expect([partner.status, partner.headers.get("location")]).toEqual([302, "https://buy.stripe.com/test_partner"])
  })
})
