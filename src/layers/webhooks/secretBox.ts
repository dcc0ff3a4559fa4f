/**
 * Signing secrets at rest: AES-256-GCM under a key the database never holds (the Secrets
 * service's WEBHOOK_SECRET_KEY, or one kept in DATA_DIR), so a dump of `webhooks` alone cannot sign.
 * Stored as `v1:<base64 of 12-byte nonce | 16-byte tag | ciphertext>`; the webhook id is the
 * additional data, so a secret copied onto another row does not decrypt.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto"

const NONCE = 12
const TAG = 16

export const sealSecret = (key: Buffer, secret: string, webhookId: string): string => {
  const nonce = randomBytes(NONCE)
  const cipher = createCipheriv("aes-256-gcm", key, nonce)
  cipher.setAAD(Buffer.from(webhookId))
  const body = Buffer.concat([cipher.update(secret, "utf8"), cipher.final()])
  return `v1:${Buffer.concat([nonce, cipher.getAuthTag(), body]).toString("base64")}`
}

/** The secret, or undefined when it was sealed under another key or for another row (or is not sealed). */
export const openSecret = (key: Buffer, sealed: string, webhookId: string): string | undefined => {
  if (!sealed.startsWith("v1:")) return undefined
  const raw = Buffer.from(sealed.slice(3), "base64")
  if (raw.length <= NONCE + TAG) return undefined
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, raw.subarray(0, NONCE))
    decipher.setAAD(Buffer.from(webhookId))
    decipher.setAuthTag(raw.subarray(NONCE, NONCE + TAG))
    return Buffer.concat([decipher.update(raw.subarray(NONCE + TAG)), decipher.final()]).toString("utf8")
  } catch {
    return undefined
  }
}

/** A 32-byte key from its text form: 64 hex digits or base64 of 32 bytes; undefined otherwise. */
export const parseSecretKey = (text: string): Buffer | undefined => {
  const t = text.trim()
  if (/^[0-9a-fA-F]{64}$/.test(t)) return Buffer.from(t, "hex")
  const b = Buffer.from(t, "base64")
  return b.length === 32 && /^[A-Za-z0-9+/_-]+=*$/.test(t) ? b : undefined
}
