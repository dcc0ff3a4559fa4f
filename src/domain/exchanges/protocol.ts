import type { Exchange, Tick } from "../price.ts"

/** One market an exchange carries, as `exchange_asset_map` describes it. */
export interface MarketSymbol {
  /** Canonical asset (BTC). */
  readonly asset: string
  /** Canonical quote (USD, USDT, USDC…). */
  readonly quote: string
  /** The exchange's own symbol for the market (BTC-USD, XBT/USD, BTC_USDT, btcusd…). */
  readonly symbol: string
}

/** What one inbound WebSocket frame meant. Parsers never throw: anything unusable is `ignored`. */
export interface ParsedFrame {
  /** Zero or more normalised ticks (all prices finite and > 0, or undefined). */
  readonly ticks: ReadonlyArray<Tick>
  /** Frames the client must send back at once (heartbeat answers such as Crypto.com's). */
  readonly replies: ReadonlyArray<string>
  /** What kind of frame this was, for health accounting. */
  readonly kind: "ticker" | "ack" | "heartbeat" | "pong" | "error" | "ignored"
  /** For `error` frames: the exchange's message. */
  readonly error?: string
}

/**
 * An exchange's protocol facts only: endpoints, symbols, subscribe messages, keep-alive rules,
 * and parsers from its wire format into `Tick`s. No I/O here; the shared feed engine does that.
 */
export interface ExchangeProtocol {
  readonly exchange: Exchange
  readonly defaultWsUrl: string
  readonly defaultRestUrl: string
  /** Symbol translation: canonical (asset, quote) → exchange symbol, e.g. ("BTC","USD") → "XBT/USD". */
  readonly symbolFor: (asset: string, quote: string) => string
  /**
   * Subscribe frames for these markets, split into the batches the exchange allows.
   * The engine sends them in order after connecting (and again after every reconnect).
   */
  readonly subscribeFrames: (markets: ReadonlyArray<MarketSymbol>) => ReadonlyArray<string>
  /**
   * WebSocket URL to connect to for these markets (most exchanges ignore markets;
   * Gemini-style per-symbol URLs use them). `base` is the configured WS URL.
   */
  readonly connectUrl: (base: string, markets: ReadonlyArray<MarketSymbol>) => string
  /** Parse one text frame. `markets` maps exchange symbol → canonical market. Never throws. */
  readonly parseFrame: (
    raw: string,
    markets: ReadonlyMap<string, MarketSymbol>,
    receivedAt: number
  ) => ParsedFrame
  /** Application-level ping the client must send, if any, and how often. */
  readonly clientPing: { readonly frame: string; readonly everyMs: number } | undefined
  /** Declare the connection dead after this long with no frame at all. */
  readonly silenceTimeoutMs: number
  /** REST fallback: URL of the single-ticker request for one market. */
  readonly restTickerUrl: (base: string, market: MarketSymbol) => string
  /** REST fallback: parse that request's body. Never throws; undefined when unusable. */
  readonly parseRestTicker: (body: string, market: MarketSymbol, receivedAt: number) => Tick | undefined
  /** Max REST requests per second we allow ourselves against this exchange (ban protection). */
  readonly restBudgetPerSecond: number
}
