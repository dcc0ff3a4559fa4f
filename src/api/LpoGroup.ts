/**
 * The LPO's price and probe routes. They are served by the raw fast path (src/http/fastHttp.ts),
 * not routed through HttpApi, but declared here so the OpenAPI document describes them.
 */
import { Schema } from "effect"
import { HttpApiEndpoint, HttpApiGroup, OpenApi } from "effect/http-api"
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
  HttpApiEndpoint.get("health", "/health", { query: { lang }, success: OkEnvelope(Probe) })
    .annotate(OpenApi.Description, "200 while the process can serve; no key needed."),
  HttpApiEndpoint.get("ready", "/ready", { query: { lang }, success: OkEnvelope(Probe), error: Error503 })
    .annotate(OpenApi.Description, "503 until the price cache is warm and the database answers; no key needed.")
).annotate(OpenApi.Title, "Prices") {}
