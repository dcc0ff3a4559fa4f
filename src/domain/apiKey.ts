/**
 * API key format and hashing. Only `hashApiKey(key)` and `displayPrefix(key)` are stored;
 * the plaintext key is shown once, at creation.
 */
import { hash } from "node:crypto"

export const API_KEY_PREFIX = "tb_"

const MIN_RANDOM_BYTES = 32
const MIN_BODY_CHARS = 40
const MAX_BODY_CHARS = 128
/** The most random bytes whose base64url body still fits MAX_BODY_CHARS (so every key we issue is accepted). */
const MAX_RANDOM_BYTES = (MAX_BODY_CHARS / 4) * 3
const DISPLAY_PREFIX_CHARS = 10

/**
 * "tb_" + base64url(random) without padding. `random` must hold 32..96 bytes (RangeError otherwise):
 * at least 256 bits of entropy, and short enough to pass `looksLikeApiKey`.
 */
export const generateApiKey = (random: Uint8Array): string => {
  if (random.length < MIN_RANDOM_BYTES || random.length > MAX_RANDOM_BYTES) {
    throw new RangeError(
      `generateApiKey: need ${MIN_RANDOM_BYTES}..${MAX_RANDOM_BYTES} random bytes, got ${random.length}`
    )
  }
  return API_KEY_PREFIX + Buffer.from(random.buffer, random.byteOffset, random.length).toString("base64url")
}

/**
 * Hex SHA-256 of the key. A slow password hash (bcrypt, scrypt) guards low-entropy secrets
 * against brute force; a key holds >= 256 random bits, so no guess can succeed and a fast hash
 * is as safe while keeping the lookup on every request cheap.
 */
export const hashApiKey = (key: string): string => hash("sha256", key, "hex")

/** The key's hash if it looks like a key we issue (`looksLikeApiKey`), else undefined: nothing else is worth hashing. */
export const hashIfWellFormed = (key: string): string | undefined => (looksLikeApiKey(key) ? hashApiKey(key) : undefined)

/** Short prefix stored beside the hash so operators and users can tell keys apart, e.g. "tb_AbCdEfG". */
export const displayPrefix = (key: string): string => key.slice(0, DISPLAY_PREFIX_CHARS)

const isBase64UrlChar = (c: number): boolean =>
  (c >= 0x30 && c <= 0x39) || // 0-9
  (c >= 0x41 && c <= 0x5a) || // A-Z
  (c >= 0x61 && c <= 0x7a) || // a-z
  c === 0x5f || // _
  c === 0x2d // -

/** Cheap syntactic check before hashing: "tb_" + 40..128 chars of [A-Za-z0-9_-]. */
export const looksLikeApiKey = (s: string): boolean => {
  const bodyLength = s.length - API_KEY_PREFIX.length
  if (bodyLength < MIN_BODY_CHARS || bodyLength > MAX_BODY_CHARS || !s.startsWith(API_KEY_PREFIX)) return false
  for (let i = API_KEY_PREFIX.length; i < s.length; i++) {
    if (!isBase64UrlChar(s.charCodeAt(i))) return false
  }
  return true
}

/**
 * The last key one client connection presented, and its hash. A keep-alive client sends the same
 * key with every request: comparing it with the last one, in constant time, costs less than
 * hashing it again. Held in memory for the connection's life only; "" is no key yet.
 */
export interface KeyHashMemo {
  key: string
  hash: string
}

export const newKeyHashMemo = (): KeyHashMemo => ({ key: "", hash: "" })

/**
 * Constant-time equality of two secrets (hashes, tokens, keys): it does not stop at the first
 * difference, and compares UTF-16 code units, so two different strings are never equal (UTF-8
 * bytes would turn every lone surrogate into the same replacement bytes). Only the length, which
 * is not secret, ends it early.
 */
export const constantTimeEqual = (a: string, b: string): boolean => {
  if (a.length !== b.length) return false
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i)
  return diff === 0
}

/** The longest key `looksLikeApiKey` accepts, in bytes (all ASCII). */
export const MAX_API_KEY_BYTES = API_KEY_PREFIX.length + MAX_BODY_CHARS

/**
 * KeyHashMemo for a key that arrives as bytes (a UDP client's datagrams): the key as sent and its
 * hash, compared in place, so a repeated key costs neither a string nor a hash. `length` -1: none.
 */
export interface KeyBytesMemo {
  readonly bytes: Uint8Array
  length: number
  hash: string
}

export const newKeyBytesMemo = (): KeyBytesMemo => ({ bytes: new Uint8Array(MAX_API_KEY_BYTES), length: -1, hash: "" })

/** `bytes[start, end)` is the remembered key. Constant time over the key; only the length (not secret) ends it early. */
export const keyBytesMatch = (memo: KeyBytesMemo, bytes: Uint8Array, start: number, end: number): boolean => {
  if (memo.length !== end - start) return false
  let diff = 0
  for (let i = 0; i < memo.length; i++) diff |= memo.bytes[i]! ^ bytes[start + i]!
  return diff === 0
}

/** Remember `bytes[start, end)` and its hash (a key too long to be valid is not remembered). */
export const rememberKeyBytes = (memo: KeyBytesMemo, bytes: Uint8Array, start: number, end: number, hash: string): void => {
  if (end - start > memo.bytes.length) return
  memo.bytes.set(bytes.subarray(start, end))
  memo.length = end - start
  memo.hash = hash
}

/** What a key is at a given time: a revoked key stays revoked; an active one past its expiry is expired. */
export type KeyStatus = "active" | "revoked" | "expired"

export const keyStatusAt = (stored: "active" | "revoked", expiresAt: number | undefined, now: number): KeyStatus =>
  stored === "revoked" ? "revoked" : expiresAt !== undefined && expiresAt <= now ? "expired" : "active"

/** The longest e-mail address accepted (RFC 5321's local part and domain limits, 64 + 1 + 255). */
export const MAX_EMAIL_CHARS = 320

/**
 * An e-mail address a key's owner can be reached at: one "@" with text on both sides, no spaces
 * or control characters. Deliberately loose (a full RFC 5322 parser refuses few real mistakes).
 */
export const isEmailAddress = (text: string): boolean =>
  text.length <= MAX_EMAIL_CHARS && /^[^\s@\p{Cc}]+@[^\s@\p{Cc}]+$/u.test(text)
