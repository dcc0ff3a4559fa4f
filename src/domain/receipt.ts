import { Data } from "effect"

/** The spec's three fulfilment flows. */
export const RECEIPT_TYPES = ["donation", "subscription", "lrs-addon"] as const
export type ReceiptType = (typeof RECEIPT_TYPES)[number]

export const isReceiptType = (value: unknown): value is ReceiptType =>
  typeof value === "string" && (RECEIPT_TYPES as ReadonlyArray<string>).includes(value)

/** `payment_status` values Stripe fulfils on. */
export const FULFILLABLE_PAYMENT_STATUSES: ReadonlyArray<string> = ["paid", "no_payment_required"]

/** Events the webhook fulfils on; every other type is acknowledged and ignored. */
export const FULFILLING_EVENT_TYPES: ReadonlyArray<string> = ["checkout.session.completed", "checkout.session.async_payment_succeeded"]

/**
 * Which flow: the request's `type`, else the session's `metadata.type`, else `subscription` for a
 * subscription-mode session and `donation` otherwise (spec).
 */
export const receiptTypeOf = (requested: ReceiptType | undefined, metadataType: string | undefined, mode: string): ReceiptType =>
  requested ?? (isReceiptType(metadataType) ? metadataType : mode === "subscription" ? "subscription" : "donation")

/** What a fulfilment answers: the same on a repeat (`duplicate` aside). Never the key. */
export interface FulfilmentResult {
  readonly session_id: string
  readonly type: ReceiptType
  /** The subscription's tier; null for a donation; the keys' tier for lrs-addon. */
  readonly tier: string | null
  readonly duplicate: boolean
}

/** Why a fulfilment did not happen, as the spec's codes. */
export class ReceiptError extends Data.TaggedError("ReceiptError")<{
  readonly code: "BAD_REQUEST" | "PAYMENT_NOT_COMPLETE" | "NO_SUBSCRIPTION" | "MAINTENANCE" | "SYSTEM_BUSY" | "INTERNAL"
  readonly message: string
}> {}
