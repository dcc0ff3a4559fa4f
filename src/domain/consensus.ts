/**
 * Consensus pricing: one price per source (reference §0.1), then the median of the sources that
 * agree with the others (spec: `/price` answers the median of all fresh sources, outliers rejected).
 */
import type { SourceQuote, Tick } from "./price.ts"

const isPositive = (x: number | undefined): x is number => x !== undefined && x > 0 && x < Infinity

/** (a + b) / 2 without overflow for huge values and without rounding outside [a, b] for tiny ones. */
const midpoint = (a: number, b: number): number => {
  const sum = a + b
  return Number.isFinite(sum) ? sum / 2 : a / 2 + b / 2
}

/**
 * Price of one source per the reference's 0.1 rule: mid of bid/ask when both present, > 0 and
 * not crossed (bid <= ask); else `last` if present; else undefined. Returns which was used.
 * Crossed books are documented (OKX pre-open, Gemini's own REST example), hence the check.
 */
export const sourcePrice = (
  tick: Tick
): { readonly price: number; readonly basis: "mid" | "last" } | undefined => {
  const { bid, ask, last } = tick
  if (isPositive(bid) && isPositive(ask) && bid <= ask) {
    return { price: midpoint(bid, ask), basis: "mid" }
  }
  return isPositive(last) ? { price: last, basis: "last" } : undefined
}

/** xs non-empty; average of the two middle values for even length. */
export const median = (xs: ReadonlyArray<number>): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  const upper = sorted[mid] ?? Number.NaN
  if (sorted.length % 2 === 1) return upper
  const lower = sorted[mid - 1] ?? Number.NaN
  return midpoint(lower, upper)
}

export interface Consensus {
  readonly price: number
  readonly used: ReadonlyArray<SourceQuote>
  readonly rejected: ReadonlyArray<SourceQuote>
  readonly spread_bps: number
}

/** Fewer sources than this give no majority to judge an outlier against. */
const MIN_SOURCES_FOR_REJECTION = 3

const deviationBps = (price: number, reference: number): number => (Math.abs(price - reference) / reference) * 1e4

/**
 * quotes: fresh sources only (caller filters staleness). maxDeviationBps: reject a source whose
 * |price - median(others)| / median(others) * 1e4 > maxDeviationBps (only when there are >= 3
 * sources; with 1–2 sources nothing is rejected). Result price = median of the used ones;
 * spread_bps = (max-min)/price*1e4 of used, rounded to 2 decimals. undefined for empty input.
 *
 * Quotes whose price is not finite and > 0 are rejected up front. When every source disagrees
 * with the others (e.g. a 2–2 split) none is preferred: all are used, never none.
 */
export const consensus = (quotes: ReadonlyArray<SourceQuote>, maxDeviationBps: number): Consensus | undefined => {
  const valid = quotes.filter((q) => isPositive(q.price))
  if (valid.length === 0) return undefined
  const invalid = quotes.filter((q) => !isPositive(q.price))

  let used = valid
  let disagreeing: ReadonlyArray<SourceQuote> = []
  if (valid.length >= MIN_SOURCES_FOR_REJECTION) {
    const prices = valid.map((q) => q.price)
    const agrees = prices.map((p, i) => deviationBps(p, median(prices.filter((_, j) => j !== i))) <= maxDeviationBps)
    if (agrees.includes(true)) {
      used = valid.filter((_, i) => agrees[i])
      disagreeing = valid.filter((_, i) => !agrees[i])
    }
  }
  const rejected = [...invalid, ...disagreeing]

  const usedPrices = used.map((q) => q.price)
  const price = median(usedPrices)
  const spread = ((Math.max(...usedPrices) - Math.min(...usedPrices)) / price) * 1e4
  return { price, used, rejected, spread_bps: Math.round(spread * 100) / 100 }
}
