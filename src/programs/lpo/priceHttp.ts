import type { Reply } from "../../layers/http/fastHttp.ts"
import type { ErrorCode } from "../../domain/errorCodes.ts"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import type { ServerMeta } from "../../domain/serverMeta.ts"
import { apiKeyOf, latencyUs, type RequestInfo, type SendEnvelope } from "../../layers/http/httpKit.ts"
import type { Admission } from "../../services/RateLimiter.ts"
import type { UsageSink } from "../../services/UsageSink.ts"
import type { RequestTrace } from "../../layers/tracing/requestTracing.ts"
import { authenticateThen, parseQuery, type PriceDeps, type QueryOutcome, runQuery } from "./priceQuery.ts"

export interface PriceHttpDeps extends PriceDeps {
  readonly usage: UsageSink["Service"]
  readonly meta: ServerMeta
  readonly sendEnvelope: SendEnvelope
}

/** RateLimit-* and Retry-After, as a flat [name, value, …] list. */
export const rateHeaders = (a: Admission | undefined): ReadonlyArray<string | number> | undefined => {
  if (a === undefined) return undefined
  switch (a._tag) {
    case "Admitted":
      return a.limit === undefined ? undefined : ["ratelimit-limit", a.limit, "ratelimit-remaining", a.remaining, "ratelimit-reset", a.resetSec]
    case "RateLimited":
      return ["ratelimit-limit", a.limit, "ratelimit-remaining", 0, "ratelimit-reset", a.retryAfterSec, "retry-after", a.retryAfterSec]
    case "QuotaExceeded":
      // The quota's window is the month: its limit, nothing left, and when it resets.
      return ["ratelimit-limit", a.limit, "ratelimit-remaining", 0, "ratelimit-reset", a.retryAfterSec, "retry-after", a.retryAfterSec]
    case "Busy":
      return ["retry-after", 1]
  }
}

/**
 * GET /price and GET /prices: answer first, then hand the usage row to the sink. `trace` (a sampled
 * request): the key check, the admission and the lookup as children of its server span.
 */
export const handlePriceHttp = (deps: PriceHttpDeps, reply: Reply, info: RequestInfo, many: boolean, trace?: RequestTrace): void => {
  const { query } = info
  const endpoint = many ? "/prices" : "/price"
  const parsed = parseQuery(query.get(many ? "assets" : "asset"), query.get("quote"), query.get("source"), many)
  const assetField = typeof parsed === "string" ? (query.get(many ? "assets" : "asset") ?? undefined)?.slice(0, 200) : parsed.assets.join(",")
  const quoteField = typeof parsed === "string" ? undefined : parsed.quote

  const finish = (code: ErrorCode | "OK", keyId: string | undefined, dataJson: string, outcome: QueryOutcome | undefined, price?: number, source?: string) => {
    if (trace !== undefined) {
      trace.server.attribute("tb.code", code)
      if (keyId !== undefined) trace.server.attribute("tb.api_key.id", keyId)
      if (assetField !== undefined) trace.server.attribute("tb.asset", assetField)
    }
    const bytes = deps.sendEnvelope(reply, info, "LPO", code, dataJson, rateHeaders(outcome?.admission))
    if (code !== "OK") deps.stats.values[code === "INTERNAL" || code === "NO_FRESH_PRICE" || code === "SYSTEM_BUSY" || code === "MAINTENANCE" ? COUNTER.server_errors : COUNTER.client_errors]!++
    deps.usage.record({
      requestId: info.requestId, apiKeyId: keyId, service: "LPO", protocol: "http", endpoint,
      asset: assetField, quote: quoteField, source, price, code, latencyUs: latencyUs(info),
      clientIp: info.clientIp, bytesOut: bytes, createdAt: info.receivedAt
    })
  }

  authenticateThen(deps, apiKeyOf(info), info.receivedAt, (auth) => {
    if (auth._tag !== "Authorized") {
      deps.stats.values[auth._tag === "Refused" && auth.code === "SYSTEM_BUSY" ? COUNTER.system_busy : COUNTER.auth_failures]!++
      return finish(auth._tag === "Refused" ? auth.code : "INVALID_API_KEY", auth._tag === "Refused" ? auth.keyId : undefined, "null", undefined)
    }
    const key = auth.key
    if (typeof parsed === "string") return finish("BAD_REQUEST", key.id, JSON.stringify({ error: parsed }), undefined)
    const now = Date.now()
    const outcome = runQuery(deps, key, parsed, now, trace)
    if (outcome.code !== "OK") return finish(outcome.code, key.id, "null", outcome)
    if (many) {
      const prices = outcome.answers.map((a) => a.render(now)).join(",")
      return finish("OK", key.id, `{"prices":[${prices}],"missing":${JSON.stringify(outcome.missing)}}`, outcome)
    }
    const answer = outcome.answers[0]!
    finish("OK", key.id, answer.render(now), outcome, answer.price, answer.source)
  }, info.keyMemo, trace)
}
