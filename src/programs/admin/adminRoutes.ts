import { Effect } from "effect"
import type { ResponseCode } from "../../domain/errorCodes.ts"
import { isExchange } from "../../domain/price.ts"
import { ApiKeys } from "../../services/ApiKeys.ts"
import { Cache } from "../../services/Cache.ts"
import { FeedStatus } from "../../services/FeedStatus.ts"
import { Params } from "../../services/Params.ts"
import { PriceCache } from "../../services/PriceCache.ts"
import { RateLimiter } from "../../services/RateLimiter.ts"
import { RuntimeStats } from "../../services/RuntimeStats.ts"
import { UsageSink } from "../../services/UsageSink.ts"
import { clusterStats, currentStats } from "../lpo/statsPublisher.ts"

export interface AdminResult {
  readonly code: ResponseCode
  readonly status?: number
  readonly data: unknown
  /** Overrides the standard message of `code` (e.g. to say which field is wrong). */
  readonly message?: string
}

const ok = (data: unknown, status?: number): AdminResult => (status === undefined ? { code: "OK", data } : { code: "OK", data, status })
const bad = (message: string): AdminResult => ({ code: "BAD_REQUEST", data: { error: message }, message })
/** A failure the caller cannot fix: answer INTERNAL and leave the cause in the log for the operator. */
const internal = (cause: { readonly message: string }) =>
  Effect.logError("admin request failed", cause.message).pipe(Effect.as<AdminResult>({ code: "INTERNAL", data: null }))

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const createKey = (body: unknown) =>
  Effect.gen(function*() {
    if (!isRecord(body) || typeof body["tier"] !== "string") return bad("tier is required")
    const email = body["email"]
    const lrs = body["lrs"]
    if (email !== undefined && (typeof email !== "string" || email.length > 320 || !email.includes("@"))) return bad("email must be an address")
    if (lrs !== undefined && typeof lrs !== "boolean") return bad("lrs must be true or false")
    const keys = yield* ApiKeys
    return yield* keys.create({ tier: body["tier"], email, lrs }).pipe(
      Effect.map((k) => ok({ key: k.key, key_id: k.key_id, tier: k.tier }, 201)),
      Effect.catchTag("ApiKeysError", (e) => e.reason === "UnknownTier" ? Effect.succeed(bad(e.message)) : internal(e))
    )
  })

const keyIdOf = (body: unknown) => (isRecord(body) && typeof body["key_id"] === "string" ? body["key_id"] : undefined)

const invalidateKey = (body: unknown) =>
  Effect.gen(function*() {
    const id = keyIdOf(body)
    if (id === undefined) return bad("key_id is required")
    const keys = yield* ApiKeys
    return yield* keys.invalidate(id).pipe(
      Effect.as(ok({ key_id: id, invalidated: true })),
      Effect.catchTag("ApiKeysError", (e) => e.reason === "NotFound" ? Effect.succeed<AdminResult>({ code: "NOT_FOUND", data: { key_id: id } }) : internal(e))
    )
  })

const revokeKey = (body: unknown) =>
  Effect.gen(function*() {
    const id = keyIdOf(body)
    if (id === undefined) return bad("key_id is required")
    const keys = yield* ApiKeys
    return yield* keys.revoke(id).pipe(
      Effect.as(ok({ key_id: id, status: "revoked" })),
      Effect.catchTag("ApiKeysError", (e) => e.reason === "NotFound" ? Effect.succeed<AdminResult>({ code: "NOT_FOUND", data: { key_id: id } }) : internal(e))
    )
  })

const systemMode = (method: string, body: unknown) =>
  Effect.gen(function*() {
    const params = yield* Params
    if (method === "POST") {
      const mode = isRecord(body) ? body["mode"] : undefined
      if (mode !== "normal" && mode !== "maintenance") return bad("mode must be normal or maintenance")
      const set = yield* params.set({ system_mode: mode }).pipe(Effect.result)
      if (set._tag === "Failure") return yield* internal(set.failure)
    }
    return ok({ mode: params.current().system_mode })
  })

const paramsRoute = (method: string, body: unknown) =>
  Effect.gen(function*() {
    const params = yield* Params
    if (method === "POST") {
      if (!isRecord(body)) return bad("body must be a JSON object of name: value, or {\"profile\": name}")
      const profile = body["profile"]
      const changes = Object.fromEntries(Object.entries(body).filter(([k]) => k !== "profile").map(([k, v]) => [k, String(v)]))
      const applied = typeof profile === "string"
        ? yield* params.applyProfile(profile).pipe(Effect.result)
        : yield* params.set(changes).pipe(Effect.result)
      if (applied._tag === "Failure") {
        const e = applied.failure
        return e.reason === "Storage" ? yield* internal(e) : bad(e.message)
      }
    }
    const profiles = yield* params.profiles.pipe(Effect.catch(() => Effect.succeed({})))
    return ok({ params: yield* params.list, profiles })
  })

/** `?exchange=` narrows to one exchange, `?stale_only=true` lists only its stale markets. */
const feedStatus = (query: unknown) =>
  Effect.gen(function*() {
    const feeds = yield* FeedStatus
    const prices = yield* PriceCache
    const params = yield* Params
    const exchange = isRecord(query) && typeof query["exchange"] === "string" ? query["exchange"].toLowerCase() : undefined
    if (exchange !== undefined && !isExchange(exchange)) return bad(`unknown exchange ${JSON.stringify(exchange).slice(0, 40)}`)
    const staleOnly = isRecord(query) && query["stale_only"] === "true"
    const now = Date.now()
    const exchanges = feeds.snapshot(now, { markets: true })
      .filter((e) => exchange === undefined || e.exchange === exchange)
      .map((e) => (staleOnly ? { ...e, marketHealth: e.marketHealth?.filter((m) => m.stale) } : e))
    return ok({ mode: feeds.mode, stale_after_ms: params.int("price_stale_ms"), exchanges, prices: prices.snapshot(now) })
  })

const feedReload = Effect.gen(function*() {
  const feeds = yield* FeedStatus
  return yield* feeds.reload.pipe(
    Effect.map((result) => ok(result)),
    Effect.catchTag("FeedReloadError", (e) => internal(e).pipe(Effect.as<AdminResult>({ code: "INTERNAL", data: { error: e.message } })))
  )
})

const stressStats = Effect.map(currentStats, ok)

const stressReset = Effect.gen(function*() {
  const stats = yield* RuntimeStats
  stats.reset()
  return ok({ reset: true })
})

const cluster = Effect.gen(function*() {
  const cache = yield* Cache
  return yield* clusterStats.pipe(
    Effect.map(ok),
    Effect.catch((e) => Effect.succeed<AdminResult>({ code: "SYSTEM_BUSY", data: { shared_cache: cache.kind, error: e.message } }))
  )
})

const listKeys = Effect.gen(function*() {
  const keys = yield* ApiKeys
  return yield* keys.list.pipe(Effect.map((list) => ok({ keys: list })), Effect.catch(internal))
})

export type AdminServices = ApiKeys | Cache | Params | RuntimeStats | FeedStatus | PriceCache | UsageSink | RateLimiter

/** The admin routes of the spec. Each answers an AdminResult; nothing here runs caller-supplied SQL or cache commands. */
export type AdminHandler = (body: unknown) => Effect.Effect<AdminResult, never, AdminServices>

/**
 * The handler for an admin route, or undefined. A GET handler receives the query string as its
 * body, a POST handler the JSON body.
 */
export const adminRoute = (method: string, path: string): AdminHandler | undefined => {
  switch (`${method} ${path}`) {
    case "POST /admin/keys": return createKey
    case "GET /admin/keys": return () => listKeys
    case "POST /admin/revoke-key": return revokeKey
    case "POST /admin/invalidate-key": return invalidateKey
    case "GET /admin/system-mode":
    case "POST /admin/system-mode": return (body) => systemMode(method, body)
    case "GET /admin/feed-status": return feedStatus
    case "POST /admin/feed-reload": return () => feedReload
    case "GET /admin/stress-stats": return () => stressStats
    case "POST /admin/stress-reset": return () => stressReset
    case "GET /admin/cluster-stats": return () => cluster
    case "GET /admin/params":
    case "POST /admin/params": return (body) => paramsRoute(method, body)
    default: return undefined
  }
}
