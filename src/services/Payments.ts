import { Context, Data, type Effect } from "effect"

/** A Checkout Session as the fulfilment needs it (read with `expand[]=line_items`). */
export interface CheckoutSession {
  readonly id: string
  readonly mode: string
  readonly status: string | null
  /** `paid | unpaid | no_payment_required` */
  readonly paymentStatus: string
  /** `customer_details.email`, else `customer_email`. */
  readonly customerEmail: string | null
  readonly metadata: Readonly<Record<string, string>>
  /** Smallest currency unit. */
  readonly amountTotal: number | null
  readonly currency: string | null
  readonly lineItems: ReadonlyArray<CheckoutLineItem>
}

export interface CheckoutLineItem {
  readonly priceId: string | null
  readonly quantity: number
  readonly amountTotal: number
  /** The price's metadata (`tier` names the subscription tier). */
  readonly priceMetadata: Readonly<Record<string, string>>
}

/** A verified Stripe event: only what routing needs; the session itself is read again from the API. */
export interface PaymentEvent {
  readonly id: string
  readonly type: string
  /** `data.object.id` when the object is a Checkout Session. */
  readonly sessionId: string | null
}

export class PaymentsError extends Data.TaggedError("PaymentsError")<{
  /** NotConfigured: no STRIPE_SECRET_KEY; NotFound: Stripe does not know the session; Unavailable: retry later. */
  readonly reason: "NotConfigured" | "NotFound" | "Unavailable" | "Malformed"
  readonly message: string
}> {}

export class WebhookSignatureError extends Data.TaggedError("WebhookSignatureError")<{
  readonly reason: "NotConfigured" | "Missing" | "Malformed" | "TimestampOutOfTolerance" | "NoMatch" | "BadPayload"
  readonly message: string
}> {}

export class Payments extends Context.Service<Payments, {
  /** Whether STRIPE_SECRET_KEY is set (without it the receipt endpoint answers MAINTENANCE). */
  readonly configured: Effect.Effect<boolean>
  /** Whether STRIPE_WEBHOOK_SECRET is set. */
  readonly webhookConfigured: Effect.Effect<boolean>
  readonly retrieveCheckoutSession: (sessionId: string) => Effect.Effect<CheckoutSession, PaymentsError>
  /** Verifies `Stripe-Signature` on the raw body (300 s tolerance) and decodes the event. */
  readonly verifyWebhook: (rawBody: string, signatureHeader: string | undefined) => Effect.Effect<PaymentEvent, WebhookSignatureError>
}>()("tb/Payments") {}
