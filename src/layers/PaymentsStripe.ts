import { Config, Effect, Layer, Option, Redacted, Schema } from "effect"
import { checkStripeSignature } from "../domain/stripeSignature.ts"
import { type CheckoutSession, Payments, PaymentsError, WebhookSignatureError } from "../services/Payments.ts"
import { Secrets } from "../services/Secrets.ts"

/**
 * Payments through Stripe's REST API over plain HTTPS (fetch), not the `stripe` package: the
 * fulfilment needs one GET and a signature check, and a direct call is what the loopback stand-in
 * (src/simulators/stripeStandIn.ts) speaks, so tests exercise this exact code. The `stripe`
 * package is a devDependency only, to check the stand-in's signatures with Stripe's own verifier.
 */

const StringMap = Schema.Record(Schema.String, Schema.String)

const SessionWire = Schema.Struct({
  id: Schema.String,
  mode: Schema.String,
  status: Schema.optionalKey(Schema.NullOr(Schema.String)),
  payment_status: Schema.String,
  customer_email: Schema.optionalKey(Schema.NullOr(Schema.String)),
  customer_details: Schema.optionalKey(Schema.NullOr(Schema.Struct({ email: Schema.optionalKey(Schema.NullOr(Schema.String)) }))),
  metadata: Schema.optionalKey(Schema.NullOr(StringMap)),
  amount_total: Schema.optionalKey(Schema.NullOr(Schema.Number)),
  currency: Schema.optionalKey(Schema.NullOr(Schema.String)),
  line_items: Schema.optionalKey(Schema.NullOr(Schema.Struct({
    data: Schema.Array(Schema.Struct({
      quantity: Schema.optionalKey(Schema.NullOr(Schema.Number)),
      amount_total: Schema.optionalKey(Schema.Number),
      price: Schema.optionalKey(Schema.NullOr(Schema.Struct({ id: Schema.String, metadata: Schema.optionalKey(StringMap) })))
    }))
  })))
})

const EventWire = Schema.Struct({
  id: Schema.String,
  type: Schema.String,
  data: Schema.Struct({ object: Schema.Struct({ id: Schema.optionalKey(Schema.String), object: Schema.optionalKey(Schema.String) }) })
})

const toSession = (wire: typeof SessionWire.Type): CheckoutSession => ({
  id: wire.id,
  mode: wire.mode,
  status: wire.status ?? null,
  paymentStatus: wire.payment_status,
  customerEmail: wire.customer_details?.email ?? wire.customer_email ?? null,
  metadata: wire.metadata ?? {},
  amountTotal: wire.amount_total ?? null,
  currency: wire.currency ?? null,
  lineItems: (wire.line_items?.data ?? []).map((item) => ({
    priceId: item.price?.id ?? null,
    quantity: item.quantity ?? 1,
    amountTotal: item.amount_total ?? 0,
    priceMetadata: item.price?.metadata ?? {}
  }))
})

const STRIPE_TIMEOUT_MS = 10_000

export const PaymentsStripe = Layer.effect(Payments, Effect.gen(function*() {
  const secrets = yield* Secrets
  const apiBase = (yield* Config.String("STRIPE_API_BASE").pipe(Config.withDefault("https://api.stripe.com"))).replace(/\/+$/, "")
  // A secret like the API key (the env variable, or stripe_webhook_secret in DB_SECRET_NAME); unreadable: unset, so the webhook answers MAINTENANCE.
  const webhookSecret = yield* secrets.get("STRIPE_WEBHOOK_SECRET").pipe(Effect.orElseSucceed(() => Option.none<Redacted.Redacted<string>>()))
  const apiKey = secrets.get("STRIPE_SECRET_KEY").pipe(
    Effect.mapError((e) => new PaymentsError({ reason: "Unavailable", message: e.message }))
  )

  const retrieveCheckoutSession = (sessionId: string) =>
    Effect.gen(function*() {
      const key = yield* apiKey
      if (Option.isNone(key)) return yield* new PaymentsError({ reason: "NotConfigured", message: "STRIPE_SECRET_KEY is not set" })
      const url = `${apiBase}/v1/checkout/sessions/${encodeURIComponent(sessionId)}?${new URLSearchParams([["expand[]", "line_items"]]).toString()}`
      const response = yield* Effect.tryPromise({
        try: async (signal) => {
          const res = await fetch(url, {
            headers: { authorization: `Bearer ${Redacted.value(key.value)}` },
            signal: AbortSignal.any([signal, AbortSignal.timeout(STRIPE_TIMEOUT_MS)])
          })
          return { status: res.status, body: await res.text() }
        },
        catch: (cause) => new PaymentsError({ reason: "Unavailable", message: `Stripe did not answer: ${String(cause)}` })
      })
      if (response.status === 404 || response.status === 400) {
        return yield* new PaymentsError({ reason: "NotFound", message: `Stripe: no such checkout session (${response.status})` })
      }
      if (response.status !== 200) {
        return yield* new PaymentsError({ reason: "Unavailable", message: `Stripe answered ${response.status}` })
      }
      const json = yield* Effect.try({
        try: (): unknown => JSON.parse(response.body),
        catch: () => new PaymentsError({ reason: "Malformed", message: "Stripe answered something that is not JSON" })
      })
      const wire = yield* Schema.decodeUnknownEffect(SessionWire)(json).pipe(
        Effect.mapError((e) => new PaymentsError({ reason: "Malformed", message: `Stripe session: ${e.message}` }))
      )
      return toSession(wire)
    })

  const verifyWebhook = (rawBody: string, signatureHeader: string | undefined) =>
    Effect.gen(function*() {
      if (Option.isNone(webhookSecret)) return yield* new WebhookSignatureError({ reason: "NotConfigured", message: "STRIPE_WEBHOOK_SECRET is not set" })
      const check = checkStripeSignature(rawBody, signatureHeader, Redacted.value(webhookSecret.value), Math.floor(Date.now() / 1000))
      if (!check.ok) return yield* new WebhookSignatureError({ reason: check.reason, message: `Stripe-Signature: ${check.reason}` })
      const json = yield* Effect.try({
        try: (): unknown => JSON.parse(rawBody),
        catch: () => new WebhookSignatureError({ reason: "BadPayload", message: "event body is not JSON" })
      })
      const event = yield* Schema.decodeUnknownEffect(EventWire)(json).pipe(
        Effect.mapError((e) => new WebhookSignatureError({ reason: "BadPayload", message: e.message }))
      )
      const object = event.data.object
      return { id: event.id, type: event.type, sessionId: object.object === "checkout.session" && object.id !== undefined ? object.id : null }
    })

  return Payments.of({
    configured: apiKey.pipe(Effect.map(Option.isSome), Effect.orElseSucceed(() => false)),
    webhookConfigured: Effect.succeed(Option.isSome(webhookSecret)),
    retrieveCheckoutSession,
    verifyWebhook
  })
}))
