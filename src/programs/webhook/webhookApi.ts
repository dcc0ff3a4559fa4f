/**
 * The webhook management routes' handlers (on the LPO's listener, envelope service WEBHOOK). Each
 * request: the key (X-API-Key or Bearer, as the LPO reads it), the tier's rate limit, then the
 * route. Targets are checked when configured (https, host resolving to allowed addresses) and again
 * at every connection (webhookNet.ts). Each answer is one usage row (the edge's, with the caller's
 * key); each verify delivery attempt one more (endpoint `webhook.verify`).
 */
import { Clock, Effect, Layer } from "effect"
import type { HttpServerRequest } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import type { ErrorEnvelope } from "../../api/envelopes.ts"
import { WebhookApi } from "../../api/WebhookGroup.ts"
import { rfc3339 } from "../../domain/envelope.ts"
import type { ErrorCode } from "../../domain/errorCodes.ts"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import {
  assetName, DEFAULT_DEVIATION_BPS, DEFAULT_HEARTBEAT_S, DELIVERY_TIMEOUT_MS, parseUdpTarget, parseWebhookAsset, parseWebhookUrl, secretKeyBytes,
  standardSignature, udpDatagram, verifyBody, type WebhookAsset
} from "../../domain/webhook.ts"
import { apiKeyOf } from "../../layers/http/httpKit.ts"
import { checkHost, makeHttpSender, makeUdpSender } from "../../layers/webhooks/webhookNet.ts"
import { WebhookStoreLive } from "../../layers/webhooks/WebhookStoreLive.ts"
import { ApiKeys, type ApiKeyRecord } from "../../services/ApiKeys.ts"
import { Cache } from "../../services/Cache.ts"
import { RateLimiter } from "../../services/RateLimiter.ts"
import { RuntimeStats } from "../../services/RuntimeStats.ts"
import { UsageSink } from "../../services/UsageSink.ts"
import { type Webhook, WebhookStore } from "../../services/Webhooks.ts"
import type { Edge } from "../http/edge.ts"
import { authenticateKey } from "../lrs/lrsApi.ts"
import { webhookAllowPrivate } from "./layer.ts"
import { CHANGED_CHANNEL } from "./webhookLease.ts"

type Request = HttpServerRequest.HttpServerRequest

/** The assets as given: parsed, upper-cased, without repeats, within the tier's limit; or what is wrong. */
export const checkAssets = (given: ReadonlyArray<string>, key: ApiKeyRecord): ReadonlyArray<WebhookAsset> | string => {
  const limit = key.tier.webhookAssets
  const seen = new Map<string, WebhookAsset>()
  for (const text of given) {
    const a = parseWebhookAsset(text)
    if (typeof a === "string") return a
    seen.set(assetName(a), a)
  }
  if (seen.size === 0) return "assets: at least one asset"
  if (seen.size > limit) return `assets: at most ${limit} on tier ${key.tier.tier} (webhook_assets), ${seen.size} given`
  return [...seen.values()]
}

const webhookData = (w: Webhook, secret: string | undefined) => ({
  webhook_id: w.id,
  ...(secret === undefined ? {} : { secret }),
  url: w.url ?? null,
  udp: w.udp ?? null,
  assets: w.assets.map(assetName),
  deviation_bps: w.deviationBps,
  heartbeat_s: w.heartbeatS,
  status: w.status
})

export const webhookHandlers = (edge: Edge) =>
  HttpApiBuilder.group(WebhookApi, "webhook", (handlers) =>
    Effect.gen(function*() {
      const store = yield* WebhookStore
      const apiKeys = yield* ApiKeys
      const limiter = yield* RateLimiter
      const stats = yield* RuntimeStats
      const usage = yield* UsageSink
      const cache = yield* Cache
      const allowPrivate = yield* webhookAllowPrivate
      const http = makeHttpSender({ allowPrivate })
      const udp = makeUdpSender({ allowPrivate })
      yield* Effect.addFinalizer(() => Effect.sync(() => (http.close(), udp.close())))

      const fail = (request: Request, keyId: string | undefined, code: ErrorCode, detail?: string): Effect.Effect<never, ErrorEnvelope> =>
        Effect.suspend(() => {
          stats.values[code === "INTERNAL" || code === "SYSTEM_BUSY" ? COUNTER.server_errors : COUNTER.client_errors]!++
          // The edge's usage row carries the caller's key.
          const state = edge.of(request.source)
          if (state !== undefined && keyId !== undefined) state.apiKeyId = keyId
          return Effect.fail(edge.fail(request.source, "WEBHOOK", code, detail))
        })
      const ok = <D>(request: Request, key: ApiKeyRecord, data: D) => {
        const state = edge.of(request.source)
        if (state !== undefined) state.apiKeyId = key.id
        return edge.ok(request.source, "WEBHOOK", data)
      }
      const storageFailed = (request: Request, key: ApiKeyRecord) => (e: { readonly message: string }) =>
        Effect.logError("webhook store failed", e.message).pipe(Effect.andThen(fail(request, key.id, "SYSTEM_BUSY", "the webhook store did not answer; try again")))
      const changed = (id: string) => cache.publish(CHANGED_CHANNEL, id).pipe(Effect.ignore)

      /** The caller's key within its rate limit, on a tier with webhooks. */
      const admit = (request: Request) =>
        Effect.gen(function*() {
          const state = edge.of(request.source)
          if (state === undefined) return yield* Effect.die(new Error("webhook request without the listener's state"))
          const now = Date.now()
          const auth = yield* authenticateKey({ apiKeys, stats }, apiKeyOf(state.info), now, state.info.keyMemo)
          if (auth._tag !== "Authorized") {
            stats.values[auth._tag === "Refused" && auth.code === "SYSTEM_BUSY" ? COUNTER.system_busy : COUNTER.auth_failures]!++
            return yield* fail(request, auth._tag === "Refused" ? auth.keyId : undefined, auth._tag === "Refused" ? auth.code : "INVALID_API_KEY")
          }
          const key = auth.key
          const admission = limiter.admit(key, 1, 0, now)
          if (admission._tag === "RateLimited") {
            stats.values[COUNTER.rate_limited]!++
            const reset = String(admission.retryAfterSec)
            state.headers.push(["ratelimit-limit", String(admission.limit)], ["ratelimit-remaining", "0"], ["ratelimit-reset", reset], ["retry-after", reset])
            return yield* fail(request, key.id, "RATE_LIMITED")
          }
          if (admission._tag === "Busy") return yield* fail(request, key.id, "SYSTEM_BUSY")
          if (key.tier.webhookAssets === 0) {
            return yield* fail(request, key.id, "BAD_REQUEST", `webhooks are not part of tier ${key.tier.tier} (webhook_assets 0): associate and partner have them`)
          }
          return key
        })
      const existing = (request: Request, key: ApiKeyRecord) =>
        store.byKey(key.id).pipe(
          Effect.catch(storageFailed(request, key)),
          Effect.flatMap((w) => (w === undefined ? fail(request, key.id, "NOT_FOUND", "no webhook on this key: POST /webhook/configure first") : Effect.succeed(w)))
        )

      return handlers
        .handle("configure", ({ request, payload }) =>
          Effect.gen(function*() {
            const key = yield* admit(request)
            const bad = (detail: string) => fail(request, key.id, "BAD_REQUEST", detail)
            if (payload.url === undefined && payload.udp === undefined) return yield* bad("give url (https://…), udp (host:port) or both")
            const url = payload.url === undefined ? undefined : parseWebhookUrl(payload.url, allowPrivate)
            if (typeof url === "string") return yield* bad(url)
            const udpTarget = payload.udp === undefined ? undefined : parseUdpTarget(payload.udp)
            if (typeof udpTarget === "string") return yield* bad(udpTarget)
            const assets = checkAssets(payload.assets, key)
            if (typeof assets === "string") return yield* bad(assets)
            for (const host of [url?.hostname, udpTarget?.host]) {
              if (host === undefined) continue
              const refused = yield* Effect.promise(() => checkHost(host, allowPrivate))
              if (refused !== undefined) return yield* bad(refused)
            }
            const before = yield* store.byKey(key.id).pipe(Effect.catch(storageFailed(request, key)))
            const now = yield* Clock.currentTimeMillis
            const result = yield* store.configure(key.id, {
              url: url?.href, udp: udpTarget === undefined ? undefined : payload.udp!.trim(), assets,
              deviationBps: payload.deviation_bps ?? before?.deviationBps ?? DEFAULT_DEVIATION_BPS,
              heartbeatS: payload.heartbeat_s ?? before?.heartbeatS ?? DEFAULT_HEARTBEAT_S,
              rotateSecret: before !== undefined && payload.rotate_secret === true
            }, now).pipe(Effect.catch(storageFailed(request, key)))
            yield* changed(result.webhook.id)
            return ok(request, key, webhookData(result.webhook, result.secret))
          }).pipe(Effect.withSpan("Webhook.configure")))
        .handle("verify", ({ request }) =>
          Effect.gen(function*() {
            const key = yield* admit(request)
            const w = yield* existing(request, key)
            if (w.secrets.length === 0) return yield* fail(request, key.id, "SYSTEM_BUSY", "the webhook's secret cannot be read on this node (WEBHOOK_SECRET_KEY)")
            const now = yield* Clock.currentTimeMillis
            const body = verifyBody(w.id, now)
            const messageId = `msg_${crypto.randomUUID()}`
            const row = (protocol: "http" | "udp", status: number, latencyMs: number, bytes: number, target: string) =>
              usage.record({
                requestId: messageId, apiKeyId: key.id, service: "WEBHOOK", protocol, endpoint: "webhook.verify",
                code: status >= 200 && status < 300 ? "OK" : "SYSTEM_BUSY", status, latencyUs: Math.round(latencyMs * 1000),
                clientIp: target.slice(0, 200), bytesOut: bytes, createdAt: now
              })
            let udpResult: { sent: boolean; error: string | null } | null = null
            if (w.udp !== undefined) {
              const target = parseUdpTarget(w.udp)
              const datagram = udpDatagram(secretKeyBytes(w.secrets[0]!), w.id, body)
              const started = performance.now()
              const error = typeof target === "string" ? target : yield* Effect.promise(() => udp.send(target.host, target.port, datagram))
              row("udp", error === undefined ? 200 : 0, performance.now() - started, Buffer.byteLength(datagram), w.udp)
              udpResult = { sent: error === undefined, error: error ?? null }
            }
            let urlResult: { status_code: number; latency_ms: number; error: string | null } | null = null
            if (w.url !== undefined) {
              const ts = Math.floor(now / 1000)
              const headers = { "webhook-id": messageId, "webhook-timestamp": String(ts), "webhook-signature": standardSignature(w.secrets.map(secretKeyBytes), messageId, ts, body) }
              const outcome = yield* Effect.promise(() => http.post(new URL(w.url!), headers, body, DELIVERY_TIMEOUT_MS))
              row("http", outcome.status, outcome.latencyMs, Buffer.byteLength(body), new URL(w.url).host)
              urlResult = { status_code: outcome.status, latency_ms: Math.round(outcome.latencyMs * 10) / 10, error: outcome.error ?? (outcome.status >= 200 && outcome.status < 300 ? null : `HTTP ${outcome.status}`) }
            }
            const verified = urlResult === null ? udpResult?.sent === true : urlResult.status_code >= 200 && urlResult.status_code < 300
            let status = w.status
            if (verified && w.status !== "active") {
              yield* store.setStatus(w.id, "active", undefined).pipe(Effect.catch(storageFailed(request, key)))
              yield* changed(w.id)
              status = "active"
            }
            return ok(request, key, { webhook_id: w.id, status, url: urlResult, udp: udpResult })
          }).pipe(Effect.withSpan("Webhook.verify")))
        .handle("status", ({ request }) =>
          Effect.gen(function*() {
            const key = yield* admit(request)
            const w = yield* existing(request, key)
            const now = yield* Clock.currentTimeMillis
            const counts = yield* store.counts(key.id, now - 86_400_000).pipe(Effect.catch(storageFailed(request, key)))
            return ok(request, key, {
              webhook_id: w.id, status: w.status, disabled_reason: w.disabledReason ?? null, url: w.url ?? null, udp: w.udp ?? null,
              assets: w.assets.map(assetName), deviation_bps: w.deviationBps, heartbeat_s: w.heartbeatS, last_seq: w.lastSeq,
              last_delivery_at: w.lastDeliveryAt === undefined ? null : rfc3339(w.lastDeliveryAt), last_status_code: w.lastStatus ?? null,
              last_latency_ms: w.lastLatencyMs ?? null, consecutive_failures: w.consecutiveFailures,
              deliveries_24h: counts.deliveries, failures_24h: counts.failures
            })
          }).pipe(Effect.withSpan("Webhook.status")))
        .handle("getAssets", ({ request }) =>
          Effect.gen(function*() {
            const key = yield* admit(request)
            const w = yield* existing(request, key)
            return ok(request, key, { assets: w.assets.map(assetName) })
          }).pipe(Effect.withSpan("Webhook.getAssets")))
        .handle("setAssets", ({ request, payload }) =>
          Effect.gen(function*() {
            const key = yield* admit(request)
            const assets = checkAssets(payload.assets, key)
            if (typeof assets === "string") return yield* fail(request, key.id, "BAD_REQUEST", assets)
            const w = yield* store.setAssets(key.id, assets).pipe(Effect.catch(storageFailed(request, key)))
            if (w === undefined) return yield* fail(request, key.id, "NOT_FOUND", "no webhook on this key: POST /webhook/configure first")
            yield* changed(w.id)
            return ok(request, key, { assets: w.assets.map(assetName) })
          }).pipe(Effect.withSpan("Webhook.setAssets")))
        .handle("remove", ({ request }) =>
          Effect.gen(function*() {
            const key = yield* admit(request)
            const w = yield* existing(request, key)
            yield* store.remove(key.id).pipe(Effect.catch(storageFailed(request, key)))
            yield* changed(w.id)
            return ok(request, key, { webhook_id: w.id, deleted: true as const })
          }).pipe(Effect.withSpan("Webhook.remove")))
    })).pipe(Layer.provide(WebhookStoreLive))
