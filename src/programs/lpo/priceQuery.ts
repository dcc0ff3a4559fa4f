import { runDetachedLog } from "../../layers/Logging.ts"
import { Effect } from "effect"
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

/** Everything after authentication: maintenance, admission, lookup, quota charge. No I/O. */
export const runQuery = (deps: PriceDeps, key: ApiKeyRecord, request: QueryRequest, now: number): QueryOutcome => {
  const { stats } = deps
  const { refused, admission } = admitQuery(deps, key, request.assets.length, now)
  if (refused !== undefined) return { code: refused, admission }
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
  if (!request.many && firstFailure !== undefined) {
    countMiss(deps, firstFailure)
    return { code: firstFailure, admission }
  }
  stats.values[COUNTER.price_hits]! += answers.length
  if (answers.length > 0) deps.limiter.chargeQueries(key, answers.length, now)
  return { code: "OK", answers, missing, admission }
}

/** `runQuery` for one asset (UDP), without the arrays: the answer, or the code refusing it. */
export const runOneQuery = (deps: PriceDeps, key: ApiKeyRecord, asset: string, quote: string, now: number): CompiledAnswer | ErrorCode => {
  const { stats } = deps
  const { refused } = admitQuery(deps, key, 1, now)
  if (refused !== undefined) return refused
  const found = deps.prices.lookup(asset, quote, undefined, now)
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
export const authenticateThen = (deps: PriceDeps, plainKey: string | undefined, now: number, k: (auth: AuthResult) => void, memo?: KeyHashMemo): void => {
  const auth = deps.apiKeys.authenticate(plainKey, now, memo)
  if (auth._tag !== "Unknown") return k(auth)
  authenticateSlowThen(deps, auth.hash, now, k)
}

/** The database lookup of a key this node has not seen (bounded in flight; SYSTEM_BUSY past that). Calls `k` exactly once. */
export const authenticateSlowThen = (deps: PriceDeps, hash: string, now: number, k: (auth: AuthResult) => void): void => {
  const v = deps.stats.values
  v[COUNTER.key_cache_misses]!++
  if (v[COUNTER.db_lookups_in_flight]! >= MAX_KEY_LOOKUPS_IN_FLIGHT) return k(BUSY)
  v[COUNTER.db_lookups_in_flight]!++
  void Effect.runPromise(deps.apiKeys.authenticateSlow(hash, now))
    .catch((): AuthResult => BUSY)
    .then((slow) => {
      v[COUNTER.db_lookups_in_flight]!--
      k(slow)
    })
    // A throw in the continuation (e.g. a socket closed at shutdown) must not become an
    // unhandled rejection, which would end the process.
    .catch((cause: unknown) => runDetachedLog(Effect.logError("request continuation failed", String(cause))))
}
