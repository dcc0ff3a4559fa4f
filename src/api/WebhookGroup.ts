/**
 * Webhook management (spec "Webhook push"): served on LPO_HTTP_PORT with the subscriber's own API
 * key, envelope service WEBHOOK. One webhook per key; prices are pushed to it (HTTPS, signed as
 * Standard Webhooks 1.0, and/or UDP datagrams) once it is verified.
 */
import { Schema } from "effect"
import { HttpApi, HttpApiEndpoint, HttpApiGroup, OpenApi } from "effect/http-api"
import { DEFAULT_DEVIATION_BPS, DEFAULT_HEARTBEAT_S, MAX_DEVIATION_BPS, MAX_HEARTBEAT_S, MIN_HEARTBEAT_S, WEBHOOK_STATUSES } from "../domain/webhook.ts"
import { Error400, Error401, Error403, Error404, Error429, Error503, OkEnvelope } from "./envelopes.ts"

const Assets = Schema.Array(Schema.String.check(Schema.isMaxLength(41))).check(Schema.isMaxLength(1000)).annotate({
  description: "Assets like BTC (= BTC/USD) or ETH/USDT; at most the tier's webhook_assets (associate 25, partner 150)."
})
const lang = Schema.optional(Schema.String).annotate({ description: "Language of `message`: en es pt fr de ru hi ur it ar ja zh (else Accept-Language, else en)." })

export const WebhookData = Schema.Struct({
  webhook_id: Schema.String,
  secret: Schema.optional(Schema.String).annotate({
    description: "The signing secret (whsec_…): only in the answer that created or rotated it. Keep it; it is never shown again."
  }),
  url: Schema.NullOr(Schema.String),
  udp: Schema.NullOr(Schema.String),
  assets: Schema.Array(Schema.String),
  deviation_bps: Schema.Int,
  heartbeat_s: Schema.Int,
  status: Schema.Literals(WEBHOOK_STATUSES).annotate({ description: "pending_verification until POST /webhook/verify succeeds; disabled after 410 or a day of failures." })
}).annotate({ identifier: "Webhook" })

const Attempt = Schema.Struct({
  status_code: Schema.Int.annotate({ description: "The receiver's HTTP status; 0: no answer within 10 s, or the connection failed." }),
  latency_ms: Schema.Number,
  error: Schema.NullOr(Schema.String)
})

const VerifyData = Schema.Struct({
  webhook_id: Schema.String,
  status: Schema.Literals(WEBHOOK_STATUSES),
  url: Schema.NullOr(Attempt).annotate({ description: "The HTTPS delivery's outcome (null without a url)." }),
  udp: Schema.NullOr(Schema.Struct({ sent: Schema.Boolean, error: Schema.NullOr(Schema.String) })).annotate({ description: "The datagram (null without udp)." })
})

const StatusData = Schema.Struct({
  webhook_id: Schema.String,
  status: Schema.Literals(WEBHOOK_STATUSES),
  disabled_reason: Schema.NullOr(Schema.String),
  url: Schema.NullOr(Schema.String),
  udp: Schema.NullOr(Schema.String),
  assets: Schema.Array(Schema.String),
  deviation_bps: Schema.Int,
  heartbeat_s: Schema.Int,
  last_seq: Schema.Int.annotate({ description: "The highest seq delivered (or being retried)." }),
  last_delivery_at: Schema.NullOr(Schema.String).annotate({ description: "RFC 3339." }),
  last_status_code: Schema.NullOr(Schema.Int),
  last_latency_ms: Schema.NullOr(Schema.Int),
  consecutive_failures: Schema.Int,
  deliveries_24h: Schema.Int.annotate({ description: "Delivery attempts in the last 24 h (HTTPS and UDP)." }),
  failures_24h: Schema.Int
})

const errors = [Error400, Error401, Error403, Error404, Error429, Error503] as const

export class WebhookGroup extends HttpApiGroup.make("webhook").add(
  HttpApiEndpoint.post("configure", "/webhook/configure", {
    query: { lang },
    payload: Schema.Struct({
      url: Schema.optional(Schema.String).annotate({ description: "https://… receiving signed POSTs (Standard Webhooks 1.0)." }),
      udp: Schema.optional(Schema.String).annotate({ description: "host:port receiving signed datagrams." }),
      assets: Assets,
      deviation_bps: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: MAX_DEVIATION_BPS }))).annotate({
        description: `Deliver when the price moved this many basis points from the last delivered one (default ${DEFAULT_DEVIATION_BPS}).`
      }),
      heartbeat_s: Schema.optional(Schema.Int.check(Schema.isBetween({ minimum: MIN_HEARTBEAT_S, maximum: MAX_HEARTBEAT_S }))).annotate({
        description: `Deliver at least this often (seconds) even without a move (default ${DEFAULT_HEARTBEAT_S}).`
      }),
      rotate_secret: Schema.optional(Schema.Boolean).annotate({ description: "Make a new secret; the old one keeps signing beside it for 24 h." })
    }),
    success: OkEnvelope(WebhookData).pipe(Schema.annotate({ httpApiStatus: 201 })),
    error: errors
  }).annotate(OpenApi.Description, "Create or update the key's webhook (one per key). A new target needs POST /webhook/verify again."),
  HttpApiEndpoint.post("verify", "/webhook/verify", { query: { lang }, success: OkEnvelope(VerifyData), error: errors })
    .annotate(OpenApi.Description, "Send one signed webhook.verify delivery now; a 2xx (or, UDP only, the call itself) activates the webhook."),
  HttpApiEndpoint.get("status", "/webhook/status", { query: { lang }, success: OkEnvelope(StatusData), error: errors })
    .annotate(OpenApi.Description, "Status, the last delivery, consecutive failures, deliveries and failures in the last 24 h, why it was disabled."),
  HttpApiEndpoint.get("getAssets", "/webhook/assets", { query: { lang }, success: OkEnvelope(Schema.Struct({ assets: Schema.Array(Schema.String) })), error: errors })
    .annotate(OpenApi.Description, "The webhook's assets."),
  HttpApiEndpoint.post("setAssets", "/webhook/assets", {
    query: { lang },
    payload: Schema.Struct({ assets: Assets }),
    success: OkEnvelope(Schema.Struct({ assets: Schema.Array(Schema.String) })),
    error: errors
  }).annotate(OpenApi.Description, "Replace the webhook's assets."),
  HttpApiEndpoint.delete("remove", "/webhook", { query: { lang }, success: OkEnvelope(Schema.Struct({ webhook_id: Schema.String, deleted: Schema.Literal(true) })), error: errors })
    .annotate(OpenApi.Description, "Remove the key's webhook; deliveries stop within seconds.")
).annotate(OpenApi.Title, "Webhooks")
  .annotate(OpenApi.Description, "On LPO_HTTP_PORT, tiers with webhook assets (associate, partner). Key in X-API-Key or Authorization: Bearer.") {}

/** The webhook group alone under the one API's id: its handlers are built against this and serve TrinityApi. */
export class WebhookApi extends HttpApi.make("trinity-beast").add(WebhookGroup) {}
