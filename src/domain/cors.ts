/**
 * CORS for browsers calling the HTTP APIs (spec: "HTTP edge"): only origins listed in
 * CORS_ORIGINS get CORS headers, and the allowed origin is named, never `*`.
 */
export interface CorsPolicy {
  readonly origins: ReadonlySet<string>
}

export const NO_CORS: CorsPolicy = { origins: new Set() }

/** CORS_ORIGINS: comma-separated origins (`https://app.example.com`); blanks ignored. */
export const corsPolicyOf = (setting: string | undefined): CorsPolicy => ({
  origins: new Set((setting ?? "").split(",").map((o) => o.trim()).filter((o) => o !== ""))
})

/** Request headers a browser may send cross-origin. */
const ALLOWED_REQUEST_HEADERS = "X-API-Key, Authorization, Content-Type, X-Request-Id, X-Admin-Token, Accept-Language"
/** Response headers a browser script may read. */
const EXPOSED_HEADERS = "X-Request-Id, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset"

/** Headers for an actual (non-preflight) answer, as a flat [name, value, …] list; empty for an origin not listed. */
export const corsHeaders = (policy: CorsPolicy, origin: string | undefined): ReadonlyArray<string> =>
  origin !== undefined && policy.origins.has(origin)
    ? ["access-control-allow-origin", origin, "access-control-expose-headers", EXPOSED_HEADERS, "vary", "Origin"]
    : []

/** Headers for a preflight (OPTIONS with Access-Control-Request-Method), or undefined when the origin is not listed. */
export const preflightHeaders = (policy: CorsPolicy, origin: string | undefined, methods: ReadonlyArray<string>): ReadonlyArray<string> | undefined =>
  origin !== undefined && policy.origins.has(origin)
    ? [
      "access-control-allow-origin", origin,
      "access-control-allow-methods", methods.join(", "),
      "access-control-allow-headers", ALLOWED_REQUEST_HEADERS,
      "access-control-max-age", "600",
      "vary", "Origin"
    ]
    : undefined
