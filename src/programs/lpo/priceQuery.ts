import { runDetachedLog } from "../../layers/Logging.ts"
import { Effect } from "effect"
import type * as Tracer from "effect/Tracer"
import type { KeyHashMemo } from "../../domain/apiKey.ts"
import type { ErrorCode } from "../../domain/errorCodes.ts"
import { type Exchange, isExchange } from "../../domain/price.ts"
import type { CompiledAnswer } from "../../domain/priceAnswer.ts"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import type { ApiKeyRecord, ApiKeys, AuthResult } from "../../services/ApiKeys.ts"
import type { Params } from "../../services/Params.ts"
import type { PriceCache, PriceLookup } from "../../services/PriceCache.ts"
import type { Admission, RateLimiter } from "../../services/RateLimiter.ts"
import type { RuntimeStats } from "../../services/RuntimeStats.ts"
import type { RequestTrace } from "../../layers/tracing/requestTracing.ts"

/** The services a price query touches, resolved once at start. All calls here are synchronous. */
export interface PriceDeps {
  readonly apiKeys: ApiKeys["Service"]
  readonly limiter: RateLimiter["Service"]
  readonly prices: PriceCache["Service"]
  readonly params: Params["Service"]
  readonly stats: RuntimeStats["Service"]
}

export const MAX_ASSETS_PER_REQUEST = 100
const SYMBOL = /^[A-Za-z0-9]{1,15}$/

export type QueryOutcome =
  | { readonly code: "OK"; readonly answers: ReadonlyArray<CompiledAnswer>; readonly missing: ReadonlyArray<string>; readonly admission: Admission | undefined }
  | { readonly code: ErrorCode; readonly admission: Admission | undefined; readonly detail?: string }

export interface QueryRequest {
  readonly assets: ReadonlyArray<string>
  readonly quote: string
  readonly source: Exchange | undefined
  /** /prices answers what it can and lists the rest as missing; /price fails on its one asset. */
  readonly many: boolean
}

/** Validate query parameters into a request, or the reason they are bad. */
export const parseQuery = (rawAssets: string | null, rawQuote: string | null, rawSource: string | null, many: boolean): QueryRequest | string => {
  if (rawAssets === null || rawAssets === "") return many ? "assets is required, e.g. assets=BTC,ETH" : "asset is required, e.g. asset=BTC"
  const assets = many ? [...new Set(rawAssets.split(",").map((a) => a.trim().toUpperCase()))] : [rawAssets.toUpperCase()]
  if (assets.length > MAX_ASSETS_PER_REQUEST) return `at most ${MAX_ASSETS_PER_REQUEST} assets per request`
  for (const a of assets) if (!SYMBOL.test(a)) return `invalid asset ${JSON.stringify(a).slice(0, 40)}`
  const quote = (rawQuote ?? "USD").toUpperCase()
  if (!SYMBOL.test(quote)) return "invalid quote"
  let source: Exchange | undefined
  if (rawSource !== null && rawSource !== "") {
    const s = rawSource.toLowerCase()
    if (!isExchange(s)) return `unknown source ${JSON.stringify(rawSource).slice(0, 40)}; one of coinbase, gemini, kraken, gateio, cryptocom, okx`
    source = s
  }
  return { assets, quote, source, many }
}

const admissionCode = (a: Admission): ErrorCode | undefined =>
  a._tag === "RateLimited" ? "RATE_LIMITED" : a._tag === "QuotaExceeded" ? "QUOTA_EXCEEDED" : a._tag === "Busy" ? "SYSTEM_BUSY" : undefined

/** Maintenance and admission, counted: the admission, or the code refusing the request. */
const admitQuery = (deps: PriceDeps, key: ApiKeyRecord, queries: number, now: number): { readonly refused: ErrorCode | undefined; readonly admission: Admission | undefined } => {
  const { stats } = deps
  if (deps.params.current().system_mode === "maintenance") {
    stats.values[COUNTER.maintenance_refusals]!++
    return MAINTENANCE
  }
  const admission = deps.limiter.admit(key, 1, queries, now)
  const refused = admissionCode(admission)
  if (refused !== undefined) stats.values[refused === "RATE_LIMITED" ? COUNTER.rate_limited : refused === "QUOTA_EXCEEDED" ? COUNTER.quota_exceeded : COUNTER.system_busy]!++
  return { refused, admission }
}

const MAINTENANCE = { refused: "MAINTENANCE", admission: undefined } as const

/** The code a failed lookup answers. */
const missCode = (found: Exclude<PriceLookup, { readonly _tag: "Found" }>): "UNKNOWN_ASSET" | "NO_FRESH_PRICE" =>
  found._tag === "UnknownAsset" ? "UNKNOWN_ASSET" : "NO_FRESH_PRICE"

/** Count a request refused for its asset's price. */
const countMiss = (deps: PriceDeps, code: "UNKNOWN_ASSET" | "NO_FRESH_PRICE"): void => {
  deps.stats.values[code === "UNKNOWN_ASSET" ? COUNTER.unknown_asset : COUNTER.no_fresh_price]!++
}

/** The rate-limit and quota check's span: what it decided. */
const endAdmitSpan = (trace: RequestTrace, span: Tracer.Span, refused: ErrorCode | undefined, admission: Admission | undefined) => {
  span.attribute("tb.admission", admission?._tag ?? refused ?? "Admitted")
  if (admission?._tag === "Admitted" && admission.limit !== undefined) span.attribute("tb.rate_limit.remaining", admission.remaining)
  if (refused !== undefined) span.attribute("tb.code", refused)
  trace.end(span)
}

/** The price lookup's span: how many assets were asked for and found. */
const endLookupSpan = (trace: RequestTrace, span: Tracer.Span, quote: string, asked: number, found: number) => {
  span.attribute("tb.quote", quote)
  span.attribute("tb.assets", asked)
  span.attribute("tb.found", found)
  trace.end(span)
}

/** Everything after authentication: maintenance, admission, lookup, quota charge. No I/O. */
export const runQuery = (deps: PriceDeps, key: ApiKeyRecord, request: QueryRequest, now: number, trace?: RequestTrace): QueryOutcome => {
  const { stats } = deps
  const admitSpan = trace?.child("RateLimiter.admit")
  const { refused, admission } = admitQuery(deps, key, request.assets.length, now)
  if (admitSpan !== undefined) endAdmitSpan(trace!, admitSpan, refused, admission)
  if (refused !== undefined) return { code: refused, admission }
  const lookupSpan = trace?.child("PriceCache.lookup")
  const answers: Array<CompiledAnswer> = []
  const missing: Array<string> = []
  let firstFailure: "UNKNOWN_ASSET" | "NO_FRESH_PRICE" | undefined
  for (const asset of request.assets) {
    const found = deps.prices.lookup(asset, request.quote, request.source, now)
    if (found._tag === "Found") answers.push(found.answer)
    else {
      missing.push(asset)
      firstFailure ??= missCode(found)
    }
  }
  if (lookupSpan !== undefined) endLookupSpan(trace!, lookupSpan, request.quote, request.assets.length, answers.length)
  if (!request.many && firstFailure !== undefined) {
    countMiss(deps, firstFailure)
    return { code: firstFailure, admission }
  }
  stats.values[COUNTER.price_hits]! += answers.length
  if (answers.length > 0) deps.limiter.chargeQueries(key, answers.length, now)
  return { code: "OK", answers, missing, admission }
}

/** `runQuery` for one asset (UDP), without the arrays: the answer, or the code refusing it. */
export const runOneQuery = (deps: PriceDeps, key: ApiKeyRecord, asset: string, quote: string, now: number, trace?: RequestTrace): CompiledAnswer | ErrorCode => {
  const { stats } = deps
  const admitSpan = trace?.child("RateLimiter.admit")
  const { refused, admission } = admitQuery(deps, key, 1, now)
  if (admitSpan !== undefined) endAdmitSpan(trace!, admitSpan, refused, admission)
  if (refused !== undefined) return refused
  const lookupSpan = trace?.child("PriceCache.lookup")
  const found = deps.prices.lookup(asset, quote, undefined, now)
  if (lookupSpan !== undefined) endLookupSpan(trace!, lookupSpan, quote, 1, found._tag === "Found" ? 1 : 0)
  if (found._tag !== "Found") {
    const code = missCode(found)
    countMiss(deps, code)
    return code
  }
  stats.values[COUNTER.price_hits]!++
  deps.limiter.chargeQueries(key, 1, now)
  return found.answer
}

/**
 * Database lookups for keys this node has not seen, at most this many at once: a flood of
 * well-formed random keys must not take the connections usage writes need.
 */
export const MAX_KEY_LOOKUPS_IN_FLIGHT = 32

const BUSY: AuthResult = { _tag: "Refused", code: "SYSTEM_BUSY", keyId: undefined }

/**
 * Authenticate from the in-process cache; on a miss, one database lookup (off the hot path: only a
 * key this node has never seen pays it). Calls `k` synchronously whenever possible, and exactly
 * once in every case.
 */
export const authenticateThen = (
  deps: PriceDeps, plainKey: string | undefined, now: number, k: (auth: AuthResult) => void, memo?: KeyHashMemo, trace?: RequestTrace
): void => {
  if (trace !== undefined) return authenticateTracedThen(deps, plainKey, now, k, memo, trace)
  const auth = deps.apiKeys.authenticate(plainKey, now, memo)
  if (auth._tag !== "Unknown") return k(auth)
  authenticateSlowThen(deps, auth.hash, now, k)
}

/**
 * The key check's span: cache hit or miss, the outcome, and the key's id (never the key). Ends it
 * and hands the outcome on.
 */
export const endKeySpan = (trace: RequestTrace, span: Tracer.Span, auth: AuthResult): AuthResult => {
  span.attribute("tb.auth", auth._tag)
  const keyId = auth._tag === "Authorized" ? auth.key.id : auth._tag === "Refused" ? auth.keyId : undefined
  if (keyId !== undefined) span.attribute("tb.api_key.id", keyId)
  if (auth._tag === "Refused") span.attribute("tb.code", auth.code)
  trace.end(span, auth._tag === "Refused" && auth.code === "SYSTEM_BUSY" ? "key lookup unavailable" : undefined)
  return auth
}

/** `authenticateThen` for a traced request: the same steps inside an `ApiKeys.authenticate` span. */
const authenticateTracedThen = (
  deps: PriceDeps, plainKey: string | undefined, now: number, k: (auth: AuthResult) => void, memo: KeyHashMemo | undefined, trace: RequestTrace
): void => {
  const span = trace.child("ApiKeys.authenticate")
  const auth = deps.apiKeys.authenticate(plainKey, now, memo)
  span.attribute("tb.key_cache", auth._tag === "Unknown" ? "miss" : "hit")
  if (auth._tag !== "Unknown") return k(endKeySpan(trace, span, auth))
  authenticateSlowThen(deps, auth.hash, now, (slow) => k(endKeySpan(trace, span, slow)), { span, tracer: trace.tracer })
}

/**
 * The database lookup of a key this node has not seen (bounded in flight; SYSTEM_BUSY past that).
 * Calls `k` exactly once. With `parent`, the lookup's spans (and its SQL) join the request's trace.
 */
export const authenticateSlowThen = (
  deps: PriceDeps, hash: string, now: number, k: (auth: AuthResult) => void, parent?: { readonly span: Tracer.Span; readonly tracer: Tracer.Tracer }
): void => {
  const v = deps.stats.values
  v[COUNTER.key_cache_misses]!++
  if (v[COUNTER.db_lookups_in_flight]! >= MAX_KEY_LOOKUPS_IN_FLIGHT) return k(BUSY)
  v[COUNTER.db_lookups_in_flight]!++
  const lookup = deps.apiKeys.authenticateSlow(hash, now)
  void Effect.runPromise(parent === undefined ? lookup : lookup.pipe(Effect.withParentSpan(parent.span), Effect.withTracer(parent.tracer)))
    .catch((): AuthResult => BUSY)
    .then((slow) => {
      v[COUNTER.db_lookups_in_flight]!--
      k(slow)
    })
    // A throw in the continuation (e.g. a socket closed at shutdown) must not become an
    // unhandled rejection, which would end the process.
    .catch((cause: unknown) => runDetachedLog(Effect.logError("request continuation failed", String(cause))))
}
