import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { ErrorCode } from "../../domain/errorCodes.ts"
import { isLang } from "../../domain/messages.ts"
import { type FulfilmentResult, isReceiptType, type ReceiptError } from "../../domain/receipt.ts"
import { Payments } from "../../services/Payments.ts"
import { ReceiptProcessor, type WebhookOutcome } from "./fulfil.ts"

/**
 * The receipt routes' answers, independent of the transport: the LPO's HttpApi handlers
 * (receiptApi.ts) and the Lambda entry (lambda/receipt.ts) wrap them in the envelope.
 */
export type RouteAnswer =
  | { readonly _tag: "Ok"; readonly data: unknown }
  | { readonly _tag: "Fail"; readonly code: ErrorCode; readonly detail: string }
  | { readonly _tag: "Redirect"; readonly location: string }

const fail = (code: ErrorCode, detail: string): RouteAnswer => ({ _tag: "Fail", code, detail })

const receiptData = (r: FulfilmentResult) => ({ session_id: r.session_id, type: r.type, tier: r.tier, duplicate: r.duplicate })

const fromReceiptError = (e: ReceiptError): RouteAnswer => fail(e.code, e.message)

const parseJson = (text: string): unknown => {
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}

/** POST /receipt `{session_id, type?}`. */
export const receiptRoute = (rawBody: string) =>
  Effect.gen(function*() {
    const payments = yield* Payments
    const processor = yield* ReceiptProcessor
    if (!(yield* payments.configured)) return fail("MAINTENANCE", "payments are not configured on this node (STRIPE_SECRET_KEY)")
    const body = parseJson(rawBody)
    if (typeof body !== "object" || body === null) return fail("BAD_REQUEST", "the body must be a JSON object {session_id, type?}")
    const record = body as Record<string, unknown>
    const sessionId = record["session_id"]
    if (typeof sessionId !== "string" || sessionId.trim() === "" || sessionId.length > 255) return fail("BAD_REQUEST", "session_id is required")
    const type = record["type"]
    if (type !== undefined && !isReceiptType(type)) return fail("BAD_REQUEST", "type must be donation, subscription or lrs-addon")
    return yield* processor.fulfil(sessionId.trim(), type).pipe(
      Effect.map((r): RouteAnswer => ({ _tag: "Ok", data: receiptData(r) })),
      Effect.catch((e) => Effect.succeed(fromReceiptError(e)))
    )
  })

const outcomeName = (o: WebhookOutcome) =>
  o._tag === "Fulfilled" ? "fulfilled" : o._tag === "DuplicateEvent" ? "duplicate" : o._tag === "Ignored" ? "ignored" : "awaiting_payment"

/** POST /stripe/webhook: the raw body and its Stripe-Signature header. */
export const stripeWebhookRoute = (rawBody: string, signature: string | undefined) =>
  Effect.gen(function*() {
    const payments = yield* Payments
    const processor = yield* ReceiptProcessor
    if (!(yield* payments.webhookConfigured)) return fail("MAINTENANCE", "the Stripe webhook is not configured on this node (STRIPE_WEBHOOK_SECRET)")
    const verified = yield* Effect.result(payments.verifyWebhook(rawBody, signature))
    if (verified._tag === "Failure") return fail("BAD_REQUEST", `invalid Stripe-Signature (${verified.failure.reason})`)
    const event = verified.success
    return yield* processor.handleEvent(event).pipe(
      Effect.map((o): RouteAnswer => ({
        _tag: "Ok",
        data: { event_id: event.id, outcome: outcomeName(o), receipt: o._tag === "Fulfilled" ? receiptData(o.result) : null }
      })),
      Effect.catch((e) => Effect.succeed(fromReceiptError(e)))
    )
  })

const PLANS: ReadonlyArray<string> = ["listener", "associate", "partner", "lrs-addon", "donation"]

/** GET /checkout?plan=&lang=: the plan's Payment Link from application_parameters, with locale=. */
export const checkoutRoute = (plan: string | undefined, lang: string | undefined) =>
  Effect.gen(function*() {
    // No plan at all is a malformed request; a plan that is not sold is not found (spec).
    if (plan === undefined || plan === "") return fail("BAD_REQUEST", `plan is required: plan=${PLANS.join("|")}`)
    if (!PLANS.includes(plan)) return fail("NOT_FOUND", `unknown plan ${plan.slice(0, 40)}: plan=${PLANS.join("|")}`)
    const sql = yield* SqlClient.SqlClient
    const name = `payment_link_${plan.replace(/-/g, "_")}`
    const rows = yield* sql.unsafe<{ value: string }>(`SELECT value FROM application_parameters WHERE name = $1`, [name]).pipe(Effect.result)
    if (rows._tag === "Failure") return fail("SYSTEM_BUSY", "the database did not answer")
    const link = rows.success[0]?.value.trim() ?? ""
    if (!/^https?:\/\//.test(link)) return fail("NOT_FOUND", `no payment link for plan ${plan} (${name})`)
    const url = new URL(link)
    if (lang !== undefined && isLang(lang)) url.searchParams.set("locale", lang)
    return { _tag: "Redirect", location: url.href } as RouteAnswer
  })
