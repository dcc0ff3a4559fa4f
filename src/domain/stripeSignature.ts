import { createHmac, timingSafeEqual } from "node:crypto"

/** Stripe's webhook tolerance: a signature whose `t` is more than this many seconds off (either way) is refused. */
export const STRIPE_SIGNATURE_TOLERANCE_SECONDS = 300

export type StripeSignatureCheck =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: "Missing" | "Malformed" | "TimestampOutOfTolerance" | "NoMatch" }

/**
 * Checks a `Stripe-Signature` header (`t=<unix>,v1=<hex>[,v1=<hex>…]`) against the raw body as
 * Stripe defines it: HMAC-SHA256 of `${t}.${body}` with the endpoint secret, hex, compared in
 * constant time; any one v1 entry matching passes (several appear during a secret roll). Entries
 * of other schemes (v0) are ignored, as Stripe's own libraries do.
 */
export const checkStripeSignature = (
  rawBody: string,
  header: string | undefined,
  secret: string,
  nowSeconds: number,
  toleranceSeconds: number = STRIPE_SIGNATURE_TOLERANCE_SECONDS
): StripeSignatureCheck => {
  if (header === undefined || header.trim() === "") return { ok: false, reason: "Missing" }
  let timestamp: number | undefined
  const v1: Array<string> = []
  for (const part of header.split(",")) {
    const at = part.indexOf("=")
    if (at <= 0) continue
    const name = part.slice(0, at).trim()
    const value = part.slice(at + 1).trim()
    if (name === "t" && /^\d+$/.test(value)) timestamp = Number(value)
    if (name === "v1" && /^[0-9a-f]{64}$/i.test(value)) v1.push(value.toLowerCase())
  }
  if (timestamp === undefined || v1.length === 0) return { ok: false, reason: "Malformed" }
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds) return { ok: false, reason: "TimestampOutOfTolerance" }
  const expected = createHmac("sha256", secret).update(`${timestamp}.${rawBody}`, "utf8").digest()
  const matches = v1.some((hex) => timingSafeEqual(Buffer.from(hex, "hex"), expected))
  return matches ? { ok: true } : { ok: false, reason: "NoMatch" }
}
