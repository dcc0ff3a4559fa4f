/**
 * Normalised market data. Every exchange parser produces `Tick`s of this one shape,
 * whatever the exchange's wire format (see ../shared/reference/exchange-feeds.md).
 */
export const EXCHANGES = ["coinbase", "gemini", "kraken", "gateio", "cryptocom", "okx"] as const
export type Exchange = (typeof EXCHANGES)[number]
export const isExchange = (s: string): s is Exchange => (EXCHANGES as ReadonlyArray<string>).includes(s)

export interface Tick {
  readonly exchange: Exchange
  /** Canonical asset symbol, upper case (BTC, not XBT). */
  readonly asset: string
  /** Canonical quote currency as the market trades it: USD, USDT, USDC, EUR… */
  readonly quote: string
  /** Last trade price, or undefined when the message carries none. */
  readonly last: number | undefined
  readonly bid: number | undefined
  readonly ask: number | undefined
  /** Exchange timestamp in ms since epoch, or undefined when the message has none. */
  readonly exchangeTs: number | undefined
  /** Local receive time in ms since epoch. */
  readonly receivedAt: number
}

/** One exchange's contribution to an answer (spec: `data.sources[]`). */
export interface SourceQuote {
  readonly exchange: Exchange
  readonly price: number
  readonly bid: number | null
  readonly ask: number | null
  /** Exchange timestamp (ms), or the receive time when the exchange sends none. */
  readonly ts: number
  readonly age_ms: number
}
