/**
 * The admin group's handlers (X-Admin-Token checked by AdminAuth first). Every answer is the
 * envelope with service ADMIN; an error's `message` is the localised text of its code and its
 * `data.error` says what was wrong.
 */
import { Effect, Layer, Redacted } from "effect"
import { HttpServerRequest } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import { AdminAuth } from "../../api/AdminGroup.ts"
import type { ErrorEnvelope } from "../../api/envelopes.ts"
import { TrinityApi } from "../../api/TrinityApi.ts"
import type { ErrorCode } from "../../domain/errorCodes.ts"
import { isExchange } from "../../domain/price.ts"
import { snakeCaseKeys } from "../../domain/snakeCase.ts"
import { AdminToken } from "../../services/AdminToken.ts"
import { ApiKeys } from "../../services/ApiKeys.ts"
import { Cache } from "../../services/Cache.ts"
import { FeedStatus } from "../../services/FeedStatus.ts"
import { Params } from "../../services/Params.ts"
import { PriceCache } from "../../services/PriceCache.ts"
import { RuntimeStats } from "../../services/RuntimeStats.ts"
import type { Edge } from "../http/edge.ts"
import { clusterStats, currentStats } from "../lpo/statsPublisher.ts"

/** X-Admin-Token: absent → MISSING_API_KEY, wrong → INVALID_API_KEY (both 401); compared in constant time. */
export const adminAuthLayer = (edge: Edge) =>
  Layer.effect(AdminAuth, Effect.gen(function*() {
    const admin = yield* AdminToken
    return AdminAuth.of({
      adminToken: (httpEffect, { credential }) =>
        Effect.gen(function*() {
          const request = yield* HttpServerRequest.HttpServerRequest
          const given = Redacted.value(credential)
          if (given === "") return yield* Effect.fail(edge.fail(request.source, "ADMIN", "MISSING_API_KEY", "X-Admin-Token header required"))
          if (!admin.matches(given)) return yield* Effect.fail(edge.fail(request.source, "ADMIN", "INVALID_API_KEY", "invalid admin token"))
          return yield* httpEffect
        })
    })
  }))

/** The admin group's handlers over the services they read. */
export const adminHandlers = (edge: Edge) =>
  HttpApiBuilder.group(TrinityApi, "admin", (handlers) =>
    Effect.gen(function*() {
      const keys = yield* ApiKeys
      const params = yield* Params
      const feeds = yield* FeedStatus
      const prices = yield* PriceCache
      const stats = yield* RuntimeStats
      const cache = yield* Cache
      const ok = <D>(request: HttpServerRequest.HttpServerRequest, data: D) => edge.ok(request.source, "ADMIN", data)
      const fail = (request: HttpServerRequest.HttpServerRequest, code: ErrorCode, detail?: string): Effect.Effect<never, ErrorEnvelope> =>
        Effect.fail(edge.fail(request.source, "ADMIN", code, detail))
      /** A failure the caller cannot fix: INTERNAL, with the cause in the log for the operator. */
      const internal = (request: HttpServerRequest.HttpServerRequest, cause: { readonly message: string }) =>
        Effect.logError("admin request failed", cause.message).pipe(Effect.andThen(fail(request, "INTERNAL")))
      const keyNotFound = (request: HttpServerRequest.HttpServerRequest, id: string) =>
        (e: { readonly reason: string; readonly message: string }) =>
          e.reason === "NotFound" ? fail(request, "NOT_FOUND", `no key with key_id ${id}`) : internal(request, e)
      const paramsData = Effect.gen(function*() {
        const profiles = yield* params.profiles.pipe(Effect.catch(() => Effect.succeed({})))
        return { params: yield* params.list, profiles }
      })

      return handlers
        .handle("createKey", ({ payload, request }) =>
          keys.create({ tier: payload.tier, email: payload.email, lrs: payload.lrs }).pipe(
            Effect.map((k) => ok(request, { key: k.key, key_id: k.key_id, tier: k.tier })),
            Effect.catchTag("ApiKeysError", (e) => e.reason === "Storage" ? internal(request, e) : fail(request, "BAD_REQUEST", e.message)),
            Effect.withSpan("Admin.createKey")
          ))
        .handle("listKeys", ({ request }) =>
          keys.list.pipe(
            Effect.map((keys) => ok(request, { keys })),
            Effect.catch((e) => internal(request, e)),
            Effect.withSpan("Admin.listKeys")
          ))
        .handle("revokeKey", ({ payload, request }) =>
          keys.revoke(payload.key_id).pipe(
            Effect.as(ok(request, { key_id: payload.key_id, status: "revoked" as const })),
            Effect.catchTag("ApiKeysError", keyNotFound(request, payload.key_id)),
            Effect.withSpan("Admin.revokeKey")
          ))
        .handle("invalidateKey", ({ payload, request }) =>
          keys.invalidate(payload.key_id).pipe(
            Effect.as(ok(request, { key_id: payload.key_id, invalidated: true as const })),
            Effect.catchTag("ApiKeysError", keyNotFound(request, payload.key_id)),
            Effect.withSpan("Admin.invalidateKey")
          ))
        .handle("getSystemMode", ({ request }) =>
          Effect.sync(() => ok(request, { mode: params.current().system_mode })).pipe(Effect.withSpan("Admin.getSystemMode")))
        .handle("setSystemMode", ({ payload, request }) =>
          params.set({ system_mode: payload.mode }).pipe(
            Effect.as(ok(request, { mode: payload.mode })),
            Effect.catch((e) => internal(request, e)),
            Effect.withSpan("Admin.setSystemMode")
          ))
        .handle("feedStatus", ({ query, request }) =>
          Effect.gen(function*() {
            const exchange = query.exchange?.toLowerCase()
            if (exchange !== undefined && !isExchange(exchange)) return yield* fail(request, "BAD_REQUEST", `unknown exchange ${JSON.stringify(exchange).slice(0, 40)}`)
            const now = Date.now()
            const exchanges = feeds.snapshot(now, { markets: true })
              .filter((e) => exchange === undefined || e.exchange === exchange)
              .map((e) => (query.stale_only === "true" ? { ...e, marketHealth: e.marketHealth?.filter((m) => m.stale) } : e))
            return ok(request, snakeCaseKeys({ mode: feeds.mode, staleAfterMs: params.int("price_stale_ms"), exchanges, prices: prices.snapshot(now) }) as Record<string, unknown>)
          }).pipe(Effect.withSpan("Admin.feedStatus")))
        .handle("feedReload", ({ request }) =>
          feeds.reload.pipe(
            Effect.map((result) => ok(request, snakeCaseKeys(result) as Record<string, unknown>)),
            Effect.catchTag("FeedReloadError", (e) => internal(request, e)),
            Effect.withSpan("Admin.feedReload")
          ))
        .handle("stressStats", ({ request }) =>
          currentStats.pipe(
            Effect.map((s) => ok(request, snakeCaseKeys(s) as Record<string, unknown>)),
            Effect.withSpan("Admin.stressStats")
          ))
        .handle("stressReset", ({ request }) =>
          Effect.sync(() => {
            stats.reset()
            return ok(request, { reset: true as const })
          }).pipe(Effect.withSpan("Admin.stressReset")))
        .handle("clusterStats", ({ request }) =>
          clusterStats.pipe(
            Effect.map((s) => ok(request, snakeCaseKeys(s) as Record<string, unknown>)),
            Effect.catch((e) => fail(request, "SYSTEM_BUSY", `shared cache (${cache.kind}): ${e.message}`)),
            Effect.withSpan("Admin.clusterStats")
          ))
        .handle("getParams", ({ request }) => paramsData.pipe(Effect.map((d) => ok(request, d)), Effect.withSpan("Admin.getParams")))
        .handle("setParams", ({ payload, request }) =>
          Effect.gen(function*() {
            const profile = payload["profile"]
            const changes = Object.fromEntries(Object.entries(payload).filter(([k]) => k !== "profile").map(([k, v]) => [k, String(v)]))
            const applied = typeof profile === "string"
              ? yield* params.applyProfile(profile).pipe(Effect.result)
              : yield* params.set(changes).pipe(Effect.result)
            if (applied._tag === "Failure") {
              const e = applied.failure
              return yield* (e.reason === "Storage" ? internal(request, e) : fail(request, "BAD_REQUEST", e.message))
            }
            return ok(request, yield* paramsData)
          }).pipe(Effect.withSpan("Admin.setParams")))
    }))
