/**
 * Building blocks shared by the six exchange protocol files: safe JSON access, the `ParsedFrame`
 * constants, the one `Tick` constructor, and subscribe batching.
 */
import type { Exchange, Tick } from "../price.ts"
import type { MarketSymbol, ParsedFrame } from "./protocol.ts"

export type JsonRecord = { readonly [key: string]: unknown }

/** `JSON.parse` that answers undefined instead of throwing (syntax errors, absurd nesting). */
export const parseJson = (raw: string): unknown => {
  try {
    return JSON.parse(raw)
  } catch {
    return undefined
  }
}

export const isRecord = (value: unknown): value is JsonRecord =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** Elements of `value` that are objects; empty when `value` is not an array. */
export const recordsOf = (value: unknown): ReadonlyArray<JsonRecord> =>
  Array.isArray(value) ? value.filter(isRecord) : []

export const stringOf = (value: unknown): string | undefined => (typeof value === "string" ? value : undefined)

export const marketOf = (
  markets: ReadonlyMap<string, MarketSymbol>,
  symbol: unknown
): MarketSymbol | undefined => (typeof symbol === "string" ? markets.get(symbol) : undefined)

const NONE: ReadonlyArray<never> = []

export const IGNORED: ParsedFrame = { ticks: NONE, replies: NONE, kind: "ignored" }
export const ACK: ParsedFrame = { ticks: NONE, replies: NONE, kind: "ack" }
export const HEARTBEAT: ParsedFrame = { ticks: NONE, replies: NONE, kind: "heartbeat" }
export const PONG: ParsedFrame = { ticks: NONE, replies: NONE, kind: "pong" }
/** A ticker frame that yielded nothing usable (unknown symbol, no valid price). */
export const EMPTY_TICKER: ParsedFrame = { ticks: NONE, replies: NONE, kind: "ticker" }

export const tickerFrame = (ticks: ReadonlyArray<Tick>): ParsedFrame =>
  ticks.length === 0 ? EMPTY_TICKER : { ticks, replies: NONE, kind: "ticker" }

/** Error text is shown to operators: keep it a bounded string whatever the exchange sent. */
const MAX_ERROR_LENGTH = 300

/**
 * A field's value as short text for an error message. Never throws: `String(x)` does on a hostile
 * object (`{"toString": ""}`), so only primitives are converted.
 */
export const describeValue = (value: unknown): string =>
  typeof value === "string" || typeof value === "number" || typeof value === "boolean" ? String(value).slice(0, 64) : typeof value

export const errorFrame = (message: unknown, fallback: string): ParsedFrame => {
  const text = typeof message === "string" && message.length > 0 ? message : fallback
  return { ticks: NONE, replies: NONE, kind: "error", error: text.slice(0, MAX_ERROR_LENGTH) }
}

/**
 * The only way parsers build a `Tick`. Prices must already come from `positiveDecimal` (finite,
 * > 0, or undefined). A record with no price at all is no tick.
 */
export const makeTick = (
  exchange: Exchange,
  market: MarketSymbol,
  last: number | undefined,
  bid: number | undefined,
  ask: number | undefined,
  exchangeTs: number | undefined,
  receivedAt: number
): Tick | undefined =>
  last === undefined && bid === undefined && ask === undefined
    ? undefined
    : { exchange, asset: market.asset, quote: market.quote, last, bid, ask, exchangeTs, receivedAt }

/** Splits `items` into consecutive chunks of at most `size` (size >= 1). */
export const batches = <A>(items: ReadonlyArray<A>, size: number): ReadonlyArray<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

/** `base` + `path` without a doubled slash, whether or not the configured base ends in one. */
export const joinUrl = (base: string, path: string): string => base.replace(/\/+$/, "") + path

/** The markets' exchange symbols, in order, without repeats (two canonical pairs may share one book). */
export const uniqueSymbols = (
  markets: ReadonlyArray<MarketSymbol>,
  toWire: (symbol: string) => string = (symbol) => symbol
): ReadonlyArray<string> => [...new Set(markets.map((market) => toWire(market.symbol)))]
