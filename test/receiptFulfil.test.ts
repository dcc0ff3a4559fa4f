import { ConfigProvider, Effect, Layer, ManagedRuntime } from "effect"
import { SqlClient } from "effect/sql"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { MailerEml } from "../src/layers/mail/MailerEml.ts"
import { PaymentsStripe } from "../src/layers/PaymentsStripe.ts"
import { KeysLive } from "../src/programs/layers.ts"
import { ReceiptProcessor, ReceiptProcessorLive } from "../src/programs/receipt/fulfil.ts"
import { ApiKeys } from "../src/services/ApiKeys.ts"
import { Payments } from "../src/services/Payments.ts"
import { checkoutEvent, signStripePayload, type StripeStandIn, startStripeStandIn } from "../src/simulators/stripeStandIn.ts"
import { mailsTo as mailsIn } from "./support/outbox.ts"
import { dropDatabase, ensureServices, freshDatabase } from "./support/services.ts"

const mailsTo = (to: string) => mailsIn(dataDir, to)

/**
 * The receipt processor's fulfilment against the real PostgreSQL and the Stripe stand-in: the three
 * flows, idempotency under concurrent webhook + thank-you-page calls, the outbox e-mail sent once.
 */

const WEBHOOK_SECRET = "whsec_receipt_fulfil"
let standIn: StripeStandIn
let url: string
let dataDir: string
let runtime: ManagedRuntime.ManagedRuntime<ReceiptProcessor | ApiKeys | Payments | SqlClient.SqlClient, unknown>

beforeAll(async () => {
  await ensureServices()
  standIn = await startStripeStandIn()
  url = freshDatabase("receipt_fulfil")
  dataDir = mkdtempSync(join(tmpdir(), "tb-receipt-"))
  // Secrets (the API key and the webhook secret) come through the Secrets service, which reads the environment.
  process.env["STRIPE_SECRET_KEY"] = "sk_test_receipt"
  process.env["STRIPE_WEBHOOK_SECRET"] = WEBHOOK_SECRET
  const env = { DATABASE_URL: url, DATA_DIR: dataDir, STRIPE_API_BASE: standIn.url, STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, LOG_LEVEL: "warn" }
  const layer = ReceiptProcessorLive.pipe(
    Layer.provideMerge(Layer.mergeAll(PaymentsStripe, MailerEml)),
    Layer.provideMerge(KeysLive),
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord(env)))
  )
  runtime = ManagedRuntime.make(layer)
  await runtime.runPromise(Effect.void)
}, 60_000)

afterAll(async () => {
  await runtime.dispose()
  await standIn.close()
  dropDatabase(url)
})

const run = <A, E>(effect: Effect.Effect<A, E, ReceiptProcessor | ApiKeys | Payments | SqlClient.SqlClient>) => runtime.runPromise(Effect.result(effect))
const fulfil = (sessionId: string, type?: "donation" | "subscription" | "lrs-addon") =>
  run(Effect.gen(function*() {
    return yield* (yield* ReceiptProcessor).fulfil(sessionId, type)
  }))
const webhook = (body: string) =>
  run(Effect.gen(function*() {
    const event = yield* (yield* Payments).verifyWebhook(body, signStripePayload(body, WEBHOOK_SECRET))
    return yield* (yield* ReceiptProcessor).handleEvent(event)
  }))
const rows = <A extends object>(text: string, params: ReadonlyArray<unknown> = []) =>
  runtime.runPromise(Effect.gen(function*() {
    return yield* (yield* SqlClient.SqlClient).unsafe<A>(text, params as Array<unknown>)
  }))

describe("subscription", () => {
  it("webhook and receipt endpoint, concurrently and repeatedly: one user, one key, one transaction, one e-mail, a key that works", async () => {
    const email = "sub@example.com"
    const session = standIn.createSession({ mode: "subscription", customerEmail: email, prices: ["price_associate"], paymentStatus: "paid" })
    const event = checkoutEvent("checkout.session.completed", session, "evt_sub_1")
    const results = await Promise.all([
      ...Array.from({ length: 4 }, () => fulfil(session.id)),
      ...Array.from({ length: 4 }, () => webhook(event)),
      webhook(checkoutEvent("checkout.session.completed", session, "evt_sub_2"))
    ])
    for (const r of results) expect(r._tag).toBe("Success")
    // And again, after everything settled.
    expect(await fulfil(session.id)).toMatchObject({ _tag: "Success", success: { session_id: session.id, type: "subscription", tier: "associate", duplicate: true } })
    expect(await webhook(event)).toMatchObject({ _tag: "Success", success: { _tag: "DuplicateEvent" } })

    expect(await rows(`SELECT count(*)::int AS n FROM users WHERE email = $1`, [email])).toEqual([{ n: 1 }])
    expect(await rows(`SELECT tier, count(*)::int AS n FROM api_keys WHERE email = $1 GROUP BY tier`, [email])).toEqual([{ tier: "associate", n: 1 }])
    expect(await rows(`SELECT kind, count(*)::int AS n FROM transactions WHERE payment_session_id = $1 GROUP BY kind`, [session.id])).toEqual([{ kind: "subscription", n: 1 }])
    expect(await rows(`SELECT count(*)::int AS n, count(sent_at)::int AS sent, count(payload_sealed)::int AS sealed FROM email_outbox WHERE to_address = $1`, [email])).toEqual([{ n: 1, sent: 1, sealed: 0 }])
    const mails = mailsTo(email)
    expect(mails).toHaveLength(1)
    const key = /\b(tb_[A-Za-z0-9_-]{20,})/.exec(mails[0] ?? "")?.[1]
    expect(key).toBeDefined()
    // The e-mailed key is accepted at once, and its plaintext is in no table.
    const auth = await run(Effect.gen(function*() {
      return (yield* ApiKeys).authenticate(key, Date.now())
    }))
    expect(auth).toMatchObject({ _tag: "Success", success: { _tag: "Authorized" } })
    const dump = await rows<{ t: string }>(`SELECT concat_ws('|', (SELECT string_agg(t::text, '|') FROM api_keys t), (SELECT string_agg(t::text, '|') FROM email_outbox t), (SELECT string_agg(t::text, '|') FROM transactions t), (SELECT string_agg(t::text, '|') FROM users t)) AS t`)
    expect(dump[0]?.t).not.toContain(key)
    expect(await rows(`SELECT count(*)::int AS n FROM stripe_events WHERE session_id = $1`, [session.id])).toEqual([{ n: 2 }])
  }, 30_000)

  it("refuses an unpaid session with PAYMENT_NOT_COMPLETE; the webhook accepts it as awaiting payment, then fulfils once paid", async () => {
    const session = standIn.createSession({ mode: "subscription", customerEmail: "late@example.com", prices: ["price_listener"] })
    expect(await fulfil(session.id)).toMatchObject({ _tag: "Failure", failure: { code: "PAYMENT_NOT_COMPLETE" } })
    expect(await webhook(checkoutEvent("checkout.session.completed", session, "evt_late_1"))).toMatchObject({ _tag: "Success", success: { _tag: "AwaitingPayment" } })
    expect(await rows(`SELECT count(*)::int AS n FROM transactions WHERE payment_session_id = $1`, [session.id])).toEqual([{ n: 0 }])
    standIn.pay(session.id)
    expect(await webhook(checkoutEvent("checkout.session.async_payment_succeeded", session, "evt_late_2"))).toMatchObject({ _tag: "Success", success: { _tag: "Fulfilled" } })
    expect(mailsTo("late@example.com")).toHaveLength(1)
  }, 30_000)

  it("answers BAD_REQUEST 'Failed to read payment session' for a session Stripe does not know", async () => {
    expect(await fulfil("cs_test_unknown")).toMatchObject({ _tag: "Failure", failure: { code: "BAD_REQUEST", message: "Failed to read payment session" } })
  })

  it("ignores event types it does not fulfil on", async () => {
    const session = standIn.createSession({ mode: "payment", customerEmail: "x@example.com", paymentStatus: "paid" })
    expect(await webhook(checkoutEvent("checkout.session.expired", session))).toMatchObject({ _tag: "Success", success: { _tag: "Ignored" } })
  })
})

describe("donation", () => {
  it("records the transaction and sends a donation receipt once", async () => {
    const session = standIn.createSession({ mode: "payment", customerEmail: "giver@example.com", prices: ["price_donation"], paymentStatus: "paid", metadata: { lang: "de" } })
    const results = await Promise.all([fulfil(session.id), fulfil(session.id), webhook(checkoutEvent("checkout.session.completed", session))])
    for (const r of results) expect(r._tag).toBe("Success")
    expect(await rows(`SELECT kind, amount_cents::int AS amount, currency FROM transactions WHERE payment_session_id = $1`, [session.id])).toEqual([{ kind: "donation", amount: 1000, currency: "usd" }])
    const mails = mailsTo("giver@example.com")
    expect(mails).toHaveLength(1)
    expect(mails[0]).toContain("10.00 USD")
    expect(mails[0]).toContain("Spende")
    expect(await rows(`SELECT count(*)::int AS n FROM api_keys WHERE email = 'giver@example.com'`)).toEqual([{ n: 0 }])
  }, 30_000)
})

describe("lrs-addon", () => {
  it("refuses an e-mail with no active key with NO_SUBSCRIPTION, and writes nothing", async () => {
    const session = standIn.createSession({ mode: "payment", customerEmail: "nokey@example.com", prices: ["price_lrs_addon"], paymentStatus: "paid", metadata: { type: "lrs-addon" } })
    expect(await fulfil(session.id)).toMatchObject({ _tag: "Failure", failure: { code: "NO_SUBSCRIPTION" } })
    expect(await rows(`SELECT count(*)::int AS n FROM transactions WHERE payment_session_id = $1`, [session.id])).toEqual([{ n: 0 }])
    expect(mailsTo("nokey@example.com")).toHaveLength(0)
  })

  it("enables LRS on the customer's active key", async () => {
    const email = "addon@example.com"
    const sub = standIn.createSession({ mode: "subscription", customerEmail: email, prices: ["price_listener"], paymentStatus: "paid" })
    expect((await fulfil(sub.id))._tag).toBe("Success")
    expect(await rows(`SELECT lrs_enabled FROM api_keys WHERE email = $1`, [email])).toEqual([{ lrs_enabled: false }])
    const addon = standIn.createSession({ mode: "payment", customerEmail: email, prices: ["price_lrs_addon"], paymentStatus: "paid" })
    expect(await fulfil(addon.id, "lrs-addon")).toMatchObject({ _tag: "Success", success: { type: "lrs-addon", tier: "listener" } })
    expect(await rows(`SELECT lrs_enabled FROM api_keys WHERE email = $1`, [email])).toEqual([{ lrs_enabled: true }])
    expect(mailsTo(email)).toHaveLength(2)
  }, 30_000)
})
