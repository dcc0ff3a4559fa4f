/**
 * The receipt processor (spec "Receipt processor"): served on LPO_HTTP_PORT (and by the Lambda
 * entry `trinity-beast/lambda/receipt`), envelope service RECEIPT. The thank-you pages call
 * POST /receipt, Stripe calls POST /stripe/webhook; both run the same fulfilment, idempotent per
 * Checkout Session and per Stripe event. GET /checkout redirects to a plan's Stripe Payment Link.
 */
import { Schema } from "effect"
import { HttpApi, HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "effect/http-api"
import { RECEIPT_TYPES } from "../domain/receipt.ts"
import { Error400, Error404, Error500, Error503, OkEnvelope } from "./envelopes.ts"

const lang = Schema.optional(Schema.String).annotate({ description: "Language of `message`: en es pt fr de ru hi ur it ar ja zh (else Accept-Language, else en)." })

/** 409: the payment is not complete yet, or an LRS add-on for an e-mail without a subscription. */
export const Error409 = Schema.Struct({
  ...Error400.fields,
  code: Schema.Literals(["PAYMENT_NOT_COMPLETE", "NO_SUBSCRIPTION"])
}).pipe(HttpApiSchema.status(409)).annotate({ identifier: "Error409", description: "codes: PAYMENT_NOT_COMPLETE, NO_SUBSCRIPTION" })

export const ReceiptData = Schema.Struct({
  session_id: Schema.String,
  type: Schema.Literals(RECEIPT_TYPES),
  tier: Schema.NullOr(Schema.String).annotate({ description: "The subscription's tier (lrs-addon: the keys' tier); null for a donation." }),
  duplicate: Schema.Boolean.annotate({ description: "true when this session had been fulfilled before (nothing new was created or sent)." })
}).annotate({ identifier: "Receipt" })

export const WEBHOOK_OUTCOMES = ["fulfilled", "duplicate", "ignored", "awaiting_payment"] as const

const WebhookAck = Schema.Struct({
  event_id: Schema.String,
  outcome: Schema.Literals(WEBHOOK_OUTCOMES).annotate({
    description: "fulfilled; duplicate (this event was handled before); ignored (an event type not fulfilled on); awaiting_payment (unpaid session: async_payment_succeeded fulfils it)."
  }),
  receipt: Schema.NullOr(ReceiptData)
})

export const CHECKOUT_PLANS = ["listener", "associate", "partner", "lrs-addon", "donation"] as const

const errors = [Error400, Error409, Error500, Error503] as const

export class ReceiptGroup extends HttpApiGroup.make("receipt").add(
  HttpApiEndpoint.post("receipt", "/receipt", {
    query: { lang },
    payload: Schema.Struct({
      session_id: Schema.String.annotate({ description: "The Checkout Session id (cs_…) the success page received as {CHECKOUT_SESSION_ID}." }),
      type: Schema.optional(Schema.Literals(RECEIPT_TYPES)).annotate({ description: "Else the session's metadata.type, else subscription for a subscription-mode session, donation otherwise." })
    }),
    success: OkEnvelope(ReceiptData),
    error: errors
  }).annotate(OpenApi.Description, "Fulfil a paid Checkout Session (the thank-you page's call). The key goes only into the receipt e-mail, never into this answer."),
  HttpApiEndpoint.post("stripeWebhook", "/stripe/webhook", {
    payload: Schema.Unknown.annotate({ description: "A Stripe event (checkout.session.completed, checkout.session.async_payment_succeeded), verified by Stripe-Signature on the raw bytes." }),
    success: OkEnvelope(WebhookAck),
    error: errors
  }).annotate(OpenApi.Description, "Stripe's webhook: 400 for a missing or invalid Stripe-Signature (300 s tolerance), 2xx for every accepted event, 409 NO_SUBSCRIPTION (Stripe retries), 5xx to be retried."),
  HttpApiEndpoint.get("checkout", "/checkout", {
    query: {
      plan: Schema.optional(Schema.String).annotate({ description: CHECKOUT_PLANS.join(" | ") }),
      lang
    },
    success: HttpApiSchema.Empty(302).annotate({ description: "Location: the plan's Stripe Payment Link (application_parameters payment_link_<plan>), with locale=<lang>." }),
    error: [Error400, Error404, Error500, Error503]
  }).annotate(OpenApi.Description, "Redirect to the plan's Stripe Payment Link; 400 BAD_REQUEST without plan, 404 NOT_FOUND for an unknown plan or one without a link.")
).annotate(OpenApi.Title, "Purchases (receipt processor)")
  .annotate(OpenApi.Description, "On LPO_HTTP_PORT (and the receipt Lambda). No API key: the session id, or Stripe's signature, is the credential.") {}

/** The receipt group alone under the one API's id: its handlers are built against this and serve TrinityApi. */
export class ReceiptApi extends HttpApi.make("trinity-beast").add(ReceiptGroup) {}
