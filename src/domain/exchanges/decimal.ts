/**
 * Number and timestamp readers for exchange wire values. Every reader takes an `unknown` straight
 * out of `JSON.parse` and answers a finite positive number or `undefined`: never NaN, Infinity,
 * zero or a negative, so no parser has to re-check what it reads.
 */

/** Longer strings are not prices. */
const MAX_DECIMAL_LENGTH = 64

const isDigitOrDot = (code: number): boolean => (code >= 48 && code <= 57) || code === 46

/**
 * Plain decimal notation only. `Number` also accepts surrounding whitespace, a sign, and
 * "0x…"/"0o…"/"0b…"; these character checks rule those out without the cost of a regex on the
 * ingest hot path (everything else `Number` accepts is decimal, or NaN / Infinity).
 */
const looksDecimal = (s: string): boolean => {
  if (!isDigitOrDot(s.charCodeAt(0)) || !isDigitOrDot(s.charCodeAt(s.length - 1))) return false
  const second = s.charCodeAt(1) | 0x20 // lower-cased
  return second !== 120 && second !== 111 && second !== 98 // x, o, b
}

/** A price or size: a JSON number or a decimal string, finite and > 0; otherwise undefined. */
export const positiveDecimal = (value: unknown): number | undefined => {
  if (typeof value === "number") return value > 0 && value < Infinity ? value : undefined
  if (typeof value !== "string" || value.length === 0 || value.length > MAX_DECIMAL_LENGTH) return undefined
  if (!looksDecimal(value)) return undefined
  const n = Number(value)
  return n > 0 && n < Infinity ? n : undefined
}

/**
 * Plausible epoch-ms window (2001-09-09 .. 5138-11-16). A corrupt timestamp far in the future
 * would otherwise make a stale price look fresh forever.
 */
const MIN_EPOCH_MS = 1e12
const MAX_EPOCH_MS = 1e14

const plausibleMs = (ms: number): number | undefined =>
  ms >= MIN_EPOCH_MS && ms < MAX_EPOCH_MS ? Math.trunc(ms) : undefined

/** An epoch time whose unit is `msPerUnit` milliseconds (number or decimal string) → epoch ms. */
const scaledTimestamp = (value: unknown, msPerUnit: number): number | undefined => {
  const n = positiveDecimal(value)
  return n === undefined ? undefined : plausibleMs(n * msPerUnit)
}

/** Epoch milliseconds, as a number or string (OKX "1597026383085", Crypto.com 1613580710768). */
export const msTimestamp = (value: unknown): number | undefined => scaledTimestamp(value, 1)

/** Epoch seconds (Gate envelope `time`). */
export const secondsTimestamp = (value: unknown): number | undefined => scaledTimestamp(value, 1000)

/**
 * Epoch nanoseconds (Gemini `E`). Values exceed 2^53 and arrive rounded by `JSON.parse`;
 * the rounding error (~256 ns) vanishes in the ms result.
 */
export const nsTimestamp = (value: unknown): number | undefined => scaledTimestamp(value, 1e-6)

/** RFC 3339 / ISO-8601 with an explicit zone; any number of fractional digits (Coinbase µs, ns). */
const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,12})?(?:Z|[+-]\d{2}:\d{2})$/

/** ISO-8601 text → epoch ms. Only the strict form is accepted: `Date.parse` alone guesses at anything. */
export const isoTimestamp = (value: unknown): number | undefined => {
  if (typeof value !== "string" || !ISO_8601.test(value)) return undefined
  return plausibleMs(Date.parse(value))
}
