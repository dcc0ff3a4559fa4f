import { ConfigProvider, Effect, Layer, ManagedRuntime } from "effect"
import { SqlClient } from "effect/sql"
import { mkdtempSync } from "node:fs"
import { createServer, type Server } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { PaymentsStripe } from "../src/layers/PaymentsStripe.ts"
import { KeysLive } from "../src/programs/layers.ts"
import { ReceiptProcessor, ReceiptProcessorLive } from "../src/programs/receipt/fulfil.ts"
import { Mailer, MailerError, type OutgoingEmail } from "../src/services/Mailer.ts"
import { type StripeStandIn, startStripeStandIn } from "../src/simulators/stripeStandIn.ts"
import { dropDatabase, ensureServices, freshDatabase } from "./support/services.ts"

/**
 * The e-mail outbox when sending fails after the commit (a mail service down, or a crash): the
 * row stays, the next sweep or call sends it, exactly once. And LPO_ADMIN_URL: the LPO is told to
 * reload the new key with the admin token.
 */

let standIn: StripeStandIn
let url: string
let lpo: Server
const invalidations: Array<{ token: string | undefined; body: string }> = []
const sent: Array<OutgoingEmail> = []
let mailerDown = true
let runtime: ManagedRuntime.ManagedRuntime<ReceiptProcessor | SqlClient.SqlClient, unknown>

const FlakyMailer = Layer.succeed(Mailer, Mailer.of({
  send: (mail) => mailerDown ? Effect.fail(new MailerError({ message: "mail service unavailable" })) : Effect.sync(() => void sent.push(mail))
}))

beforeAll(async () => {
  await ensureServices()
  standIn = await startStripeStandIn()
  lpo = createServer((req, res) => {
    let body = ""
    req.on("data", (c: Buffer) => void (body += c.toString()))
    req.on("end", () => {
      if (req.url === "/admin/invalidate-key") invalidations.push({ token: req.headers["x-admin-token"] as string | undefined, body })
      res.writeHead(200, { "content-type": "application/json" })
      res.end("{}")
    })
  })
  await new Promise<void>((resolve) => lpo.listen(0, "127.0.0.1", resolve))
  const address = lpo.address()
  url = freshDatabase("receipt_outbox")
  process.env["STRIPE_SECRET_KEY"] = "sk_test_outbox"
  process.env["ADMIN_TOKEN"] = "admin-outbox-token"
  const env = {
    DATABASE_URL: url, DATA_DIR: mkdtempSync(join(tmpdir(), "tb-outbox-")), STRIPE_API_BASE: standIn.url, LOG_LEVEL: "warn",
    LPO_ADMIN_URL: `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}/`
  }
  runtime = ManagedRuntime.make(ReceiptProcessorLive.pipe(
    Layer.provideMerge(Layer.mergeAll(PaymentsStripe, FlakyMailer)),
    Layer.provideMerge(KeysLive),
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord(env)))
  ))
  await runtime.runPromise(Effect.void)
}, 60_000)

afterAll(async () => {
  await runtime.dispose()
  await standIn.close()
  await new Promise<void>((resolve) => lpo.close(() => resolve()))
  dropDatabase(url)
})

const processor = <A, E>(f: (p: ReceiptProcessor["Service"]) => Effect.Effect<A, E>) =>
  runtime.runPromise(Effect.gen(function*() {
    return yield* f(yield* ReceiptProcessor)
  }))

describe("the e-mail outbox", () => {
  it("keeps an e-mail the mail service refused, sends it once on the next sweep, never again", async () => {
    const session = standIn.createSession({ mode: "subscription", customerEmail: "outbox@example.com", prices: ["price_listener"], paymentStatus: "paid" })
    const result = await processor((p) => p.fulfil(session.id))
    expect(result.duplicate).toBe(false)
    expect(sent).toHaveLength(0)
    const pending = await runtime.runPromise(Effect.gen(function*() {
      return yield* (yield* SqlClient.SqlClient).unsafe<{ attempts: number; sealed: boolean }>(`SELECT attempts, payload_sealed IS NOT NULL AS sealed FROM email_outbox`)
    }))
    expect(pending).toEqual([{ attempts: 1, sealed: true }])
    mailerDown = false
    expect(await processor((p) => p.sendPending)).toBe(1)
    expect(await processor((p) => p.sendPending)).toBe(0)
    expect((await processor((p) => p.fulfil(session.id))).duplicate).toBe(true)
    expect(sent).toHaveLength(1)
    expect(sent[0]?.to).toBe("outbox@example.com")
    expect(sent[0]?.text).toMatch(/tb_[A-Za-z0-9_-]{20,}/)
  }, 30_000)

  it("tells the LPO at LPO_ADMIN_URL to reload the new key, with the admin token", async () => {
    expect(invalidations).toHaveLength(1)
    expect(invalidations[0]?.token).toBe("admin-outbox-token")
    expect(JSON.parse(invalidations[0]?.body ?? "{}")).toHaveProperty("key_id")
  })
})
