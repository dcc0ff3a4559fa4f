import { execFileSync } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type ApiGatewayProxyEvent, disposeReceiptLambda, handler } from "../src/programs/lambda/receipt.ts"
import { checkoutEvent, signStripePayload, type StripeStandIn, startStripeStandIn } from "../src/simulators/stripeStandIn.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"

/** The receipt Lambda entry: API Gateway v1 and v2 proxy events through the exported handler, against PostgreSQL and the Stripe stand-in. */

const WEBHOOK_SECRET = "whsec_receipt_lambda"
const db = freshDatabase("receipt_lambda")
let standIn: StripeStandIn

beforeAll(async () => {
  standIn = await startStripeStandIn()
  // Read at the first invocation, as Lambda's environment variables are.
  Object.assign(process.env, {
    DATABASE_URL: db, DATA_DIR: mkdtempSync(join(tmpdir(), "tb-receipt-lambda-")), NODE_ID: "receipt-lambda-test", LOG_LEVEL: "Warn",
    STRIPE_SECRET_KEY: "sk_test_lambda", STRIPE_API_BASE: standIn.url, STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET
  })
})
afterAll(async () => {
  await disposeReceiptLambda()
  await standIn.close()
  dropDatabase(db)
})

const v2 = (method: string, rawPath: string, body: string, headers: Record<string, string> = {}, base64 = false): ApiGatewayProxyEvent => ({
  version: "2.0", rawPath, headers: { "content-type": "application/json", ...headers }, queryStringParameters: { lang: "es" },
  requestContext: { requestId: "req-v2", http: { method, path: rawPath } },
  body: base64 ? Buffer.from(body).toString("base64") : body, isBase64Encoded: base64
})
const v1 = (method: string, path: string, body: string, headers: Record<string, string> = {}): ApiGatewayProxyEvent => ({
  httpMethod: method, path, headers: { "Content-Type": "application/json", ...headers }, queryStringParameters: null,
  requestContext: { requestId: "req-v1" }, body, isBase64Encoded: false
})
const parsed = (result: { body: string }) => JSON.parse(result.body) as { service: string; code: string; lang: string; message: string; data: Record<string, unknown> | null }

describe("trinity-beast/lambda/receipt", () => {
  it("v2 POST /receipt fulfils a paid session and answers the envelope; v1 POST /prod/stripe/webhook (Stripe-Signature) is the same session's duplicate", async () => {
    const session = standIn.createSession({ mode: "subscription", customerEmail: "lambda@example.com", prices: ["price_partner"], paymentStatus: "paid" })
    const first = await handler(v2("POST", "/receipt", JSON.stringify({ session_id: session.id }), {}, true))
    expect(first.statusCode).toBe(200)
    expect(parsed(first)).toMatchObject({ service: "RECEIPT", code: "OK", lang: "es", data: { session_id: session.id, type: "subscription", tier: "partner", duplicate: false } })
    const raw = checkoutEvent("checkout.session.completed", session, "evt_lambda_1")
    const second = await handler(v1("POST", "/prod/stripe/webhook", raw, { "Stripe-Signature": signStripePayload(raw, WEBHOOK_SECRET) }))
    expect(second.statusCode).toBe(200)
    expect(parsed(second).data).toMatchObject({ event_id: "evt_lambda_1", outcome: "fulfilled", receipt: { duplicate: true } })
    const count = execFileSync("psql", [db, "-qAt", "-c", `SELECT count(*) FROM api_keys WHERE email = 'lambda@example.com'`], { encoding: "utf8" }).trim()
    expect(count).toBe("1")
  }, 60_000)

  it("answers 400 to a bad signature, 409 to an unpaid session, 405 to GET, 404 to another path", async () => {
    const raw = checkoutEvent("checkout.session.completed", standIn.createSession({ mode: "payment", paymentStatus: "paid" }))
    expect((await handler(v2("POST", "/stripe/webhook", raw, { "stripe-signature": signStripePayload(raw, "whsec_wrong") }))).statusCode).toBe(400)
    const unpaid = standIn.createSession({ mode: "payment", customerEmail: "l2@example.com" })
    const refused = await handler(v1("POST", "/receipt", JSON.stringify({ session_id: unpaid.id })))
    expect(refused.statusCode).toBe(409)
    expect(parsed(refused).code).toBe("PAYMENT_NOT_COMPLETE")
    const get = await handler(v2("GET", "/receipt", ""))
    expect(get.statusCode).toBe(405)
    expect(get.headers["allow"]).toBe("POST")
    expect((await handler(v2("POST", "/elsewhere", "{}"))).statusCode).toBe(404)
  })

  it("is the package's export trinity-beast/lambda/receipt (the built file), exporting handler", () => {
    const out = execFileSync(process.execPath, ["--input-type=module", "-e",
      "const m = await import('trinity-beast/lambda/receipt'); console.log(typeof m.handler)"], { cwd: import.meta.dirname, encoding: "utf8" })
    expect(out.trim()).toBe("function")
  })
})
