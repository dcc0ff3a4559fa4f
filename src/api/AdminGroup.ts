/** Operator endpoints behind `X-Admin-Token` (envelope service ADMIN). */
import { Schema } from "effect"
import { HttpApiEndpoint, HttpApiGroup, HttpApiMiddleware, HttpApiSecurity, OpenApi } from "effect/http-api"
import { isEmailAddress } from "../domain/apiKey.ts"
import { Error400, Error401, Error404, Error503, OkEnvelope } from "./envelopes.ts"

/** Checks X-Admin-Token before any admin handler runs; answers MISSING_API_KEY / INVALID_API_KEY (401). */
export class AdminAuth extends HttpApiMiddleware.Service<AdminAuth>()("tb/AdminAuth", {
  error: Error401,
  security: { adminToken: HttpApiSecurity.apiKey({ in: "header", key: "X-Admin-Token" }) }
}) {}

const KeyId = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(64)).annotate({ description: "The key's id (never the key itself)." })

export const KeySummary = Schema.Struct({
  key_id: Schema.String,
  prefix: Schema.String.annotate({ description: "The key's first characters, for recognising it." }),
  tier: Schema.String,
  status: Schema.Literals(["active", "revoked", "expired"]),
  lrs_enabled: Schema.Boolean,
  email: Schema.NullOr(Schema.String),
  created_at: Schema.String.annotate({ description: "RFC 3339." }),
  expires_at: Schema.NullOr(Schema.String).annotate({ description: "RFC 3339, or null for a key that does not expire." })
}).annotate({ identifier: "KeySummary" })

/** The same rule as `ApiKeys.create` (and `tb keys create`) applies. */
export const Email = Schema.String.check(Schema.makeFilter((s: string) => isEmailAddress(s) || "Expected an e-mail address"))

const ParamRow = Schema.Struct({ name: Schema.String, value: Schema.String, type: Schema.String, description: Schema.String })
const ParamsData = Schema.Struct({
  params: Schema.Array(ParamRow),
  profiles: Schema.Record(Schema.String, Schema.Record(Schema.String, Schema.String))
})
/** Operational figures whose shape follows the running feeds and counters (snake_case throughout). */
const Figures = Schema.Record(Schema.String, Schema.Unknown)
const keyErrors = [Error400, Error404] as const

export class AdminGroup extends HttpApiGroup.make("admin").add(
  HttpApiEndpoint.post("createKey", "/admin/keys", {
    payload: Schema.Struct({
      tier: Schema.String.annotate({ description: "demo, listener, associate or partner (rate_limit_template)." }),
      email: Schema.optional(Email),
      lrs: Schema.optional(Schema.Boolean).annotate({ description: "Enable usage reports (not on tiers without LRS)." })
    }),
    success: OkEnvelope(Schema.Struct({ key: Schema.String, key_id: Schema.String, tier: Schema.String })).pipe(Schema.annotate({ httpApiStatus: 201 })),
    error: Error400
  }).annotate(OpenApi.Description, "Create an API key. The only time the plaintext key is ever shown."),
  HttpApiEndpoint.get("listKeys", "/admin/keys", { success: OkEnvelope(Schema.Struct({ keys: Schema.Array(KeySummary) })) })
    .annotate(OpenApi.Description, "Every key, newest first; never the key itself."),
  HttpApiEndpoint.post("revokeKey", "/admin/revoke-key", {
    payload: Schema.Struct({ key_id: KeyId }),
    success: OkEnvelope(Schema.Struct({ key_id: Schema.String, status: Schema.Literal("revoked") })),
    error: keyErrors
  }).annotate(OpenApi.Description, "Revoke a key; takes effect on every node at once."),
  HttpApiEndpoint.post("invalidateKey", "/admin/invalidate-key", {
    payload: Schema.Struct({ key_id: KeyId }),
    success: OkEnvelope(Schema.Struct({ key_id: Schema.String, invalidated: Schema.Literal(true) })),
    error: keyErrors
  }).annotate(OpenApi.Description, "Make every node reload one key from the database now."),
  HttpApiEndpoint.get("getSystemMode", "/admin/system-mode", { success: OkEnvelope(Schema.Struct({ mode: Schema.String })) }),
  HttpApiEndpoint.post("setSystemMode", "/admin/system-mode", {
    payload: Schema.Struct({ mode: Schema.Literals(["normal", "maintenance"]) }),
    success: OkEnvelope(Schema.Struct({ mode: Schema.String })),
    error: Error400
  }).annotate(OpenApi.Description, "maintenance answers price queries with MAINTENANCE (503)."),
  HttpApiEndpoint.get("feedStatus", "/admin/feed-status", {
    query: {
      exchange: Schema.optional(Schema.String).annotate({ description: "Only this exchange." }),
      stale_only: Schema.optional(Schema.Literals(["true", "false"])).annotate({ description: "true: list only stale markets." })
    },
    success: OkEnvelope(Figures),
    error: Error400
  }).annotate(OpenApi.Description, "Each exchange feed's health and the price cache's freshness."),
  HttpApiEndpoint.post("feedReload", "/admin/feed-reload", { success: OkEnvelope(Figures) })
    .annotate(OpenApi.Description, "Re-read exchange_feeds / exchange_asset_map and restart the feeds that changed."),
  HttpApiEndpoint.get("stressStats", "/admin/stress-stats", { success: OkEnvelope(Figures) })
    .annotate(OpenApi.Description, "This node's runtime counters, usage pipeline and limiter figures."),
  HttpApiEndpoint.post("stressReset", "/admin/stress-reset", { success: OkEnvelope(Schema.Struct({ reset: Schema.Literal(true) })) }),
  HttpApiEndpoint.get("clusterStats", "/admin/cluster-stats", { success: OkEnvelope(Figures), error: Error503 })
    .annotate(OpenApi.Description, "Every node's counters (stats:<node> in the shared cache) and their totals."),
  HttpApiEndpoint.get("getParams", "/admin/params", { success: OkEnvelope(ParamsData) }),
  HttpApiEndpoint.post("setParams", "/admin/params", {
    payload: Schema.Record(Schema.String, Schema.Union([Schema.String, Schema.Number, Schema.Boolean])).annotate({
      description: "{\"<name>\": <value>, …} to set parameters, or {\"profile\": \"<name>\"} to apply a named profile."
    }),
    success: OkEnvelope(ParamsData),
    error: Error400
  })
).middleware(AdminAuth).annotate(OpenApi.Title, "Admin") {}
