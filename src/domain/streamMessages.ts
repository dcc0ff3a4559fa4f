/**
 * The partner stream's messages (spec: "Partner stream"). Server messages are built as JSON text
 * with `seq` last, so a price update is serialised once per change and per connection only its
 * `age_ms` and `seq` are appended.
 */

/** A symbol as the price routes accept it (priceQuery's rule). */
const SYMBOL = /^[A-Za-z0-9]{1,15}$/

export interface StreamAsset {
  readonly asset: string
  readonly quote: string
}

/** `BTC` (USD) or `ETH/USDT`, upper-cased; undefined when it is not one. */
export const parseStreamAsset = (raw: unknown): StreamAsset | undefined => {
  if (typeof raw !== "string") return undefined
  const slash = raw.indexOf("/")
  const asset = (slash === -1 ? raw : raw.slice(0, slash)).trim().toUpperCase()
  const quote = slash === -1 ? "USD" : raw.slice(slash + 1).trim().toUpperCase()
  return SYMBOL.test(asset) && SYMBOL.test(quote) ? { asset, quote } : undefined
}

/** How an asset is named back to the client: `BTC` for USD, else `ETH/USDT`. */
export const streamAssetName = (a: StreamAsset): string => (a.quote === "USD" ? a.asset : `${a.asset}/${a.quote}`)

export type ClientMessage =
  | { readonly type: "auth"; readonly key: string }
  | { readonly type: "subscribe" | "unsubscribe"; readonly assets: ReadonlyArray<unknown> }

/** At most this many assets named in one subscribe or unsubscribe. */
export const MAX_ASSETS_PER_MESSAGE = 500

/** A client's text message, or the sentence saying what is wrong with it. */
export const parseClientMessage = (text: string): ClientMessage | string => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return "a message is one JSON object"
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "a message is one JSON object"
  const record = value as Record<string, unknown>
  switch (record["type"]) {
    case "auth":
      return typeof record["key"] === "string" && record["key"] !== "" ? { type: "auth", key: record["key"] } : "auth needs a key"
    case "subscribe":
    case "unsubscribe": {
      const assets = record["assets"]
      if (!Array.isArray(assets) || assets.length === 0) return `${record["type"]} needs assets, e.g. ["BTC","ETH/USDT"]`
      if (assets.length > MAX_ASSETS_PER_MESSAGE) return `at most ${MAX_ASSETS_PER_MESSAGE} assets per message`
      return { type: record["type"], assets }
    }
    default:
      return "type is one of subscribe, unsubscribe, auth"
  }
}

/** A JSON object's text without its closing brace, to which `,"seq":n}` is appended. */
export type OpenMessage = string

export const responseMessage = (
  status: "success" | "error",
  code: string,
  message: string,
  assets: ReadonlyArray<string>
): OpenMessage => `{"type":"response","status":"${status}","code":${JSON.stringify(code)},"message":${JSON.stringify(message)},"assets":${JSON.stringify(assets)}`

/** The part of a price update shared by every connection: all but `age_ms` and `seq`. */
export const priceUpdateHead = (asset: string, quote: string, price: number, ts: number): string =>
  `{"type":"price_update","asset":${JSON.stringify(asset)},"quote":${JSON.stringify(quote)},"price":${price},"ts":${ts},"age_ms":`

export const priceUpdateMessage = (head: string, ts: number, now: number): OpenMessage => `${head}${Math.max(0, now - ts)}`

/** `age_ms` of the last price, null when there never was one. */
export const staleMessage = (asset: string, quote: string, ts: number | undefined, now: number): OpenMessage =>
  `{"type":"stale","asset":${JSON.stringify(asset)},"quote":${JSON.stringify(quote)},"age_ms":${ts === undefined ? "null" : Math.max(0, now - ts)}`

export const heartbeatMessage = (now: number): OpenMessage => `{"type":"heartbeat","ts":${now}`

export const withSeq = (open: OpenMessage, seq: number): string => `${open},"seq":${seq}}`

/** WebSocket close codes the server uses. */
export const CLOSE = {
  /** Server shutdown, or the connection's 24 h lifetime (a RECONNECT response comes first). */
  goingAway: 1001,
  /** Authentication missing, late or refused; key not allowed to stream; too many connections. */
  policy: 1008,
  /** The server failed on this connection (a bug); reconnect. */
  internalError: 1011,
  /** Unsent data passed 1 MiB, or a send waited 5 s. */
  slowConsumer: 4008
} as const
