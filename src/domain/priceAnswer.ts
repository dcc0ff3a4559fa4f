import { consensus, sourcePrice } from "./consensus.ts"
import type { Exchange, SourceQuote, Tick } from "./price.ts"
import { priceReplyBody } from "./udpCodec.ts"

/**
 * An answer computed once per price change and rendered per request: everything but the ages is
 * serialised ahead of time, so a request costs a few string joins, not a JSON.stringify.
 */
export interface CompiledAnswer {
  readonly asset: string
  readonly quote: string
  readonly price: number
  readonly method: "median" | "single"
  readonly source: string
  readonly ts: number
  readonly sourceCount: number
  /** `data` JSON of /price at `now`. */
  readonly render: (now: number) => string
  /** Cached UDP reply body (udpCodec.priceReplyBody) as UTF-8 bytes, for udpCodec.writePriceReply. */
  readonly udpBodyBytes: Uint8Array
  /** Oldest source time used: the answer must be recompiled once this passes the staleness limit. */
  readonly oldestTs: number
}

const tickTs = (t: Tick): number => t.exchangeTs ?? t.receivedAt

const num = (x: number | undefined): string => (x === undefined ? "null" : String(x))

/** Mids and medians are halves of sums: 12 significant digits drops float noise (…35500000001). */
const round = (x: number): number => Number(x.toPrecision(12))

/**
 * Build the answer for `asset` in `quote` from the latest tick of each source.
 * `source` restricts to one exchange ("single"), otherwise the consensus median of fresh sources.
 */
export const compileAnswer = (
  asset: string,
  quote: string,
  ticks: ReadonlyArray<Tick>,
  source: Exchange | undefined,
  now: number,
  staleMs: number,
  maxDeviationBps: number
): CompiledAnswer | undefined => {
  const quotes: Array<SourceQuote & { readonly tick: Tick }> = []
  for (const tick of ticks) {
    if (source !== undefined && tick.exchange !== source) continue
    const ts = tickTs(tick)
    if (now - ts > staleMs) continue
    const p = sourcePrice(tick)
    if (p === undefined) continue
    quotes.push({ exchange: tick.exchange, price: round(p.price), bid: tick.bid ?? null, ask: tick.ask ?? null, ts, age_ms: 0, tick })
  }
  const agreed = consensus(quotes, maxDeviationBps)
  if (agreed === undefined) return undefined
  const result = { ...agreed, price: round(agreed.price) }
  const used = [...result.used].sort((a, b) => (a.exchange < b.exchange ? -1 : 1))
  const ts = Math.max(...used.map((u) => u.ts))
  const oldestTs = Math.min(...used.map((u) => u.ts))
  const method = source === undefined ? "median" : "single"
  // Pieces between the per-request ages: sources' age_ms, then the answer's age_ms.
  const pieces: Array<string> = []
  let head = `{"asset":${JSON.stringify(asset)},"quote":${JSON.stringify(quote)},"price":${result.price},"method":"${method}","sources":[`
  used.forEach((u, i) => {
    head += `${i === 0 ? "" : ","}{"exchange":"${u.exchange}","price":${u.price},"bid":${num(u.bid ?? undefined)},"ask":${num(u.ask ?? undefined)},"ts":${u.ts},"age_ms":`
    pieces.push(head)
    head = "}"
  })
  pieces.push(`${head}],"spread_bps":${result.spread_bps},"ts":${ts},"age_ms":`)
  const agesOf = used.map((u) => u.ts)
  const tail = `,"stale":false}`
  // Requests in the same millisecond get the same text: under load most answers reuse the last
  // one, already flat, instead of joining ~15 pieces that the socket write must flatten again.
  let renderedAt = Number.NaN
  let rendered = ""
  const render = (at: number): string => {
    if (at === renderedAt) return rendered
    let out = ""
    for (let i = 0; i < agesOf.length; i++) out += pieces[i] + String(Math.max(0, at - (agesOf[i] ?? at)))
    renderedAt = at
    rendered = out + pieces[agesOf.length] + String(Math.max(0, at - ts)) + tail
    return rendered
  }
  const sourceName = source ?? "consensus"
  return {
    asset, quote, price: result.price, method, source: sourceName, ts, oldestTs, sourceCount: used.length, render,
    udpBodyBytes: Buffer.from(priceReplyBody(asset, quote, result.price, sourceName, ts), "utf8")
  }
}
