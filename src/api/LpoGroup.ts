/**
 * The LPO's price and probe routes. They are served by the raw fast path (src/http/fastHttp.ts),
 * not routed through HttpApi, but declared here so the OpenAPI document describes them.
 */
import { Schema } from "effect"
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "effect/http-api"
import { Error400, Error401, Error403, Error404, Error429, Error503, OkEnvelope } from "./envelopes.ts"

const Source = Schema.Struct({
  exchange: Schema.String,
  price: Schema.Number,
  bid: Schema.NullOr(Schema.Number),
  ask: Schema.NullOr(Schema.Number),
  ts: Schema.Int.annotate({ description: "Exchange timestamp, ms since the epoch." }),
  age_ms: Schema.Int
})

export const PriceData = Schema.Struct({
  asset: Schema.String,
  quote: Schema.String,
  price: Schema.Number,
  method: Schema.Literals(["median", "single"]).annotate({ description: "median of the fresh sources (outliers rejected), or single when `source=` asked for one exchange" }),
  sources: Schema.Array(Source),
  spread_bps: Schema.Number,
  ts: Schema.Int.annotate({ description: "Newest exchange timestamp used, ms." }),
  age_ms: Schema.Int,
  stale: Schema.Boolean
}).annotate({ identifier: "Price" })

const lang = Schema.optional(Schema.String).annotate({ description: "Language of `message`: en es pt fr de ru hi ur it ar ja zh (else Accept-Language, else en)." })
const quote = Schema.optional(Schema.String).annotate({ description: "Quote currency, default USD; USDT or USDC ask for those markets alone." })
const priceErrors = [Error400, Error401, Error403, Error404, Error429, Error503] as const

const Probe = Schema.Struct({
  feeds: Schema.Struct({ mode: Schema.String, connected: Schema.Int, total: Schema.Int, freshest_age_ms: Schema.NullOr(Schema.Int) }),
  prices: Schema.Struct({ assets: Schema.Int, fresh_assets: Schema.Int, warm: Schema.Boolean }),
  storage: Schema.Struct({ database: Schema.Boolean, cache: Schema.Boolean }),
  draining: Schema.Boolean,
  problem: Schema.optional(Schema.String).annotate({ description: "Why the node is not ready, and what to do about it." })
}).annotate({ identifier: "Probe" })

const seq = Schema.Int.annotate({ description: "Rises by one per server message on the connection: a gap means a lost message." })

/** What the partner stream sends (WebSocket text frames; SSE `data:` with `event:` = type, `id:` = seq). */
export const StreamMessage = Schema.Union([
  Schema.Struct({
    type: Schema.Literal("response"),
    status: Schema.Literals(["success", "error"]),
    code: Schema.String.annotate({ description: "OK, an envelope error code, or RECONNECT (lifetime or shutdown: reconnect)." }),
    message: Schema.String,
    assets: Schema.Array(Schema.String),
    seq
  }).annotate({ identifier: "StreamResponse" }),
  Schema.Struct({ type: Schema.Literal("price_update"), asset: Schema.String, quote: Schema.String, price: Schema.Number, ts: Schema.Int, age_ms: Schema.Int, seq })
    .annotate({ identifier: "StreamPriceUpdate" }),
  Schema.Struct({ type: Schema.Literal("stale"), asset: Schema.String, quote: Schema.String, age_ms: Schema.NullOr(Schema.Int), seq })
    .annotate({ identifier: "StreamStale" }),
  Schema.Struct({ type: Schema.Literal("heartbeat"), seq, ts: Schema.Int }).annotate({ identifier: "StreamHeartbeat" })
])

const streamErrors = [Error400, Error401, Error403, Error404, Error429, Error503] as const

export class LpoGroup extends HttpApiGroup.make("lpo").add(
  HttpApiEndpoint.get("price", "/price", {
    query: { asset: Schema.String, quote, source: Schema.optional(Schema.String).annotate({ description: "One exchange instead of the consensus." }), lang },
    success: OkEnvelope(PriceData),
    error: priceErrors
  }).annotate(OpenApi.Description, "The consensus price of one asset. Key in X-API-Key or Authorization: Bearer."),
  HttpApiEndpoint.get("prices", "/prices", {
    query: { assets: Schema.String.annotate({ description: "Comma-separated assets, e.g. BTC,ETH,SOL." }), quote, lang },
    success: OkEnvelope(Schema.Struct({ prices: Schema.Array(PriceData), missing: Schema.Array(Schema.String) })),
    error: priceErrors
  }).annotate(OpenApi.Description, "Several prices in one request: one usage row, one query per asset against the quota."),
  HttpApiEndpoint.get("ws", "/ws", {
    query: { lang },
    success: HttpApiSchema.Empty(101).annotate({ description: "Switching Protocols: the WebSocket." }),
    error: streamErrors
  }).annotate(
    OpenApi.Description,
    "Partner stream (tiers with partner_ws), WebSocket. Key in X-API-Key / Authorization: Bearer, or as the first message " +
      "{\"type\":\"auth\",\"key\":\"…\"} within 5 s. Client: {\"type\":\"subscribe\"|\"unsubscribe\",\"assets\":[\"BTC\",\"ETH/USDT\"]}. " +
      "Server messages: StreamResponse, StreamPriceUpdate, StreamStale, StreamHeartbeat (see GET /stream). A key refused before the upgrade gets the envelope."
  ),
  HttpApiEndpoint.get("stream", "/stream", {
    query: { assets: Schema.String.annotate({ description: "Comma-separated assets, e.g. BTC,ETH/USDT." }), lang },
    success: HttpApiSchema.StreamSse({ data: StreamMessage }),
    error: streamErrors
  }).annotate(
    OpenApi.Description,
    "Partner stream as Server-Sent Events: the WebSocket's messages as data:, event: = type, id: = seq; a comment line every 15 s; " +
      "Last-Event-ID is accepted (the snapshot is sent again)."
  ),
  HttpApiEndpoint.get("health", "/health", { query: { lang }, success: OkEnvelope(Probe) })
    .annotate(OpenApi.Description, "200 while the process can serve; no key needed."),
  HttpApiEndpoint.get("ready", "/ready", { query: { lang }, success: OkEnvelope(Probe), error: Error503 })
    .annotate(OpenApi.Description, "503 until the price cache is warm and the database answers; no key needed.")
).annotate(OpenApi.Title, "Prices") {}
