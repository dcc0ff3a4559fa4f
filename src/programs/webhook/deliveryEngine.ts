/**
 * Webhook delivery (spec "Webhook push", delivery): one fiber per owned webhook, so each endpoint
 * has one delivery in flight at a time and `seq` arrives in order, and a slow or dead endpoint
 * only ever holds its own fiber. Price changes come from PriceCache's subscription (never polled):
 * a change that moves an asset `deviation_bps` from its last delivered price wakes the webhook's
 * fiber; heartbeats are the fiber's own timer. A failed HTTPS attempt blocks that endpoint (so
 * order holds) and is retried after 5 s, 30 s, 2 min, 10 min, 30 min (then every 30 min; longer
 * when the receiver's Retry-After asks, up to 30 min) with the same `seq` and `webhook-id` and the
 * newest price of its asset; 410 disables at once, and failing
 * for `webhook_disable_after_h` disables with the reason. Every attempt is one usage row.
 *
 * Ownership across WEBHOOK_SERVER nodes is a lease per webhook in the shared cache (webhookLease.ts);
 * `seq` is allocated there too (INCR), so a node taking over continues the sequence and no `seq`
 * is ever delivered by two nodes.
 */
import { Clock, Effect, Fiber, Latch, type Scope } from "effect"
import { randomUUID } from "node:crypto"
import {
  DELIVERY_TIMEOUT_MS, type DeliveryReason, dueReason, type LastDelivered, parseUdpTarget, priceUpdateBody, RETRY_DELAYS_MS, retryDelayMs,
  secretKeyBytes, standardSignature, udpDatagram, type WebhookAsset
} from "../../domain/webhook.ts"
import type { HttpSender, UdpSender } from "../../layers/webhooks/webhookNet.ts"
import type { Cache } from "../../services/Cache.ts"
import type { Params } from "../../services/Params.ts"
import type { PriceEvent, PriceKey, PriceSubscription } from "../../services/PriceCache.ts"
import type { UsageSink } from "../../services/UsageSink.ts"
import type { AttemptOutcome, Webhook, WebhookStore } from "../../services/Webhooks.ts"

export interface DeliveryDeps {
  readonly store: WebhookStore["Service"]
  readonly cache: Cache["Service"]
  readonly usage: UsageSink["Service"]
  readonly params: Params["Service"]
  readonly subscribe: Effect.Effect<PriceSubscription, never, Scope.Scope>
  readonly http: HttpSender
  readonly udp: UdpSender
}

/** The shared cache's seq counter of a webhook (INCR allocates the next one). */
export const seqKey = (webhookId: string) => `webhook:seq:${webhookId}`
const SEQ_TTL_MS = 90 * 86_400_000

const keyOf = (a: { readonly asset: string; readonly quote: string }) => `${a.asset}/${a.quote}`

interface Worker {
  webhook: Webhook
  keys: ReadonlyArray<WebhookAsset>
  signingKeys: ReadonlyArray<Buffer>
  /** The webhook's url, parsed once per settings change. */
  url: URL | undefined
  readonly last: Map<string, LastDelivered>
  readonly wake: Latch.Latch
  failingSince: number | undefined
  /** The newest attempt not yet written to the row (written once a second). */
  unwritten: AttemptOutcome | undefined
  fiber: Fiber.Fiber<void> | undefined
}

/** The running engine: what the lease keeper starts and stops. */
export interface DeliveryEngine {
  /** Start delivering a webhook (this node owns it now), or take its new settings. */
  readonly upsert: (webhook: Webhook) => Effect.Effect<void>
  readonly stop: (webhookId: string) => Effect.Effect<void>
  readonly owned: () => ReadonlyArray<string>
  /** Write the attempts' facts not yet in the rows. */
  readonly flushOutcomes: Effect.Effect<void>
}

export const makeDeliveryEngine = (deps: DeliveryDeps) =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const sub = yield* deps.subscribe
    const latest = new Map<string, { readonly price: number; readonly ts: number }>()
    const watchers = new Map<string, Set<Worker>>()
    const workers = new Map<string, Worker>()
    const unknown = new Set<string>()
    /** Webhooks whose secret this node cannot open, already logged (once per settings version). */
    const unreadable = new Set<string>()

    const onEvent = (e: PriceEvent | { readonly _tag: "UnknownAsset"; readonly asset: string; readonly quote: string }, now: number) => {
      const key = keyOf(e)
      if (e._tag !== "Price") {
        latest.delete(key)
        return
      }
      latest.set(key, { price: e.price, ts: e.ts })
      for (const w of watchers.get(key) ?? []) {
        const last = w.last.get(key)
        // Due by deviation, or by a heartbeat that passed while the asset had no fresh price.
        if (last !== undefined && dueReason(last, e.price, now, w.webhook.deviationBps, w.webhook.heartbeatS * 1000) === undefined) continue
        w.wake.openUnsafe()
      }
    }

    const watch = (w: Worker, keys: ReadonlyArray<WebhookAsset>, now: number) => {
      const fresh: Array<PriceKey> = []
      for (const k of keys) {
        const key = keyOf(k)
        let set = watchers.get(key)
        if (set === undefined) watchers.set(key, (set = new Set()))
        if (set.size === 0 || unknown.has(key)) fresh.push({ asset: k.asset, quote: k.quote })
        set.add(w)
      }
      for (const state of fresh.length === 0 ? [] : sub.watch(fresh)) {
        // No market trades it (yet): not watched; asked again at the next sweep (an asset map reload may add it).
        if (state._tag === "UnknownAsset") unknown.add(keyOf(state))
        else unknown.delete(keyOf(state))
        onEvent(state, now)
      }
    }
    const unwatch = (w: Worker, keys: ReadonlyArray<WebhookAsset>) => {
      const gone: Array<PriceKey> = []
      for (const k of keys) {
        const set = watchers.get(keyOf(k))
        if (set === undefined) continue
        set.delete(w)
        if (set.size === 0) {
          watchers.delete(keyOf(k))
          unknown.delete(keyOf(k))
          latest.delete(keyOf(k))
          gone.push({ asset: k.asset, quote: k.quote })
        }
      }
      if (gone.length > 0) sub.unwatch(gone)
    }

    // Price changes, as they come: marks and wakes the webhooks they make due.
    yield* Effect.gen(function*() {
      const events = yield* sub.take
      const now = yield* Clock.currentTimeMillis
      for (const e of events) onEvent(e, now)
    }).pipe(Effect.forever, Effect.forkIn(scope))

    const disable = (w: Worker, reason: string) =>
      Effect.gen(function*() {
        yield* Effect.logWarning("webhook disabled", { webhook_id: w.webhook.id, reason })
        yield* deps.store.setStatus(w.webhook.id, "disabled", reason).pipe(Effect.catch((e) => Effect.logError("webhook status not stored", e.message)))
      })

    const record = (w: Worker, p: {
      readonly messageId: string
      readonly protocol: "http" | "udp"
      readonly endpoint: string
      readonly asset: WebhookAsset
      readonly price: number
      readonly status: number
      readonly latencyMs: number
      readonly bytes: number
      readonly at: number
      readonly target: string
    }) =>
      deps.usage.record({
        requestId: p.messageId, apiKeyId: w.webhook.apiKeyId, service: "WEBHOOK", protocol: p.protocol, endpoint: p.endpoint,
        asset: p.asset.asset, quote: p.asset.quote, price: p.price,
        code: p.status >= 200 && p.status < 300 ? "OK" : "SYSTEM_BUSY", status: p.status,
        latencyUs: Math.round(p.latencyMs * 1000), clientIp: p.target.slice(0, 200), bytesOut: p.bytes, createdAt: p.at
      })

    /** One price delivery of `asset`, with its retries: true when delivered (or sent, UDP only), false when the webhook stopped. */
    const deliver = (w: Worker, asset: WebhookAsset, reason: DeliveryReason) =>
      Effect.gen(function*() {
        const key = keyOf(asset)
        const first = latest.get(key)
        if (first === undefined) return true
        const counted = yield* deps.cache.incrMany([{ key: seqKey(w.webhook.id), by: 1, ttlMs: SEQ_TTL_MS }]).pipe(Effect.result)
        if (counted._tag === "Failure") {
          // No seq without the shared counter (two nodes could give the same one): try at the next turn.
          yield* Effect.logWarning("webhook seq not allocated; delivery deferred", counted.failure.message)
          yield* Effect.sleep("1 second")
          return true
        }
        const seq = counted.success[0]!
        const messageId = `msg_${randomUUID()}`
        const udp = w.webhook.udp === undefined ? undefined : parseUdpTarget(w.webhook.udp)
        let attempt = 0
        let price = first
        while (true) {
          const now = yield* Clock.currentTimeMillis
          price = latest.get(key) ?? price
          const body = priceUpdateBody({ webhookId: w.webhook.id, seq, asset: asset.asset, quote: asset.quote, price: price.price, ts: price.ts, now, reason })
          if (attempt === 0 && udp !== undefined && typeof udp !== "string") {
            const datagram = udpDatagram(w.signingKeys[0]!, w.webhook.id, body)
            const started = performance.now()
            const error = yield* Effect.promise(() => deps.udp.send(udp.host, udp.port, datagram))
            record(w, { messageId, protocol: "udp", endpoint: "price.update", asset, price: price.price, status: error === undefined ? 200 : 0, latencyMs: performance.now() - started, bytes: Buffer.byteLength(datagram), at: now, target: w.webhook.udp! })
          }
          const url = w.url
          if (url === undefined) {
            w.last.set(key, { price: price.price, at: now })
            return true
          }
          const timestampS = Math.floor(now / 1000)
          const headers = { "webhook-id": messageId, "webhook-timestamp": String(timestampS), "webhook-signature": standardSignature(w.signingKeys, messageId, timestampS, body) }
          const outcome = yield* Effect.promise(() => deps.http.post(url, headers, body, DELIVERY_TIMEOUT_MS))
          const at = yield* Clock.currentTimeMillis
          const ok = outcome.status >= 200 && outcome.status < 300
          record(w, { messageId, protocol: "http", endpoint: "price.update", asset, price: price.price, status: outcome.status, latencyMs: outcome.latencyMs, bytes: Buffer.byteLength(body), at: now, target: url.host })
          w.unwritten = { at, status: outcome.status, latencyMs: outcome.latencyMs, ok, seq }
          if (ok) {
            w.failingSince = undefined
            w.last.set(key, { price: price.price, at })
            return true
          }
          w.failingSince ??= at
          if (outcome.status === 410) {
            yield* flushOne(w)
            yield* disable(w, "the receiver answered 410 Gone")
            return false
          }
          const limitH = deps.params.int("webhook_disable_after_h")
          if (at - w.failingSince >= limitH * 3_600_000) {
            yield* flushOne(w)
            yield* disable(w, `every delivery attempt failed for ${limitH} h (last: ${outcome.status === 0 ? (outcome.error ?? "no answer") : `HTTP ${outcome.status}`})`)
            return false
          }
          attempt++
          // A receiver asking for more time (429, 503 with Retry-After) gets it, up to the longest step.
          const asked = outcome.status === 429 || outcome.status >= 500 ? (outcome.retryAfterMs ?? 0) : 0
          yield* Effect.sleep(Math.max(retryDelayMs(attempt), Math.min(asked, RETRY_DELAYS_MS[RETRY_DELAYS_MS.length - 1]!)))
        }
      })

    const flushOne = (w: Worker) =>
      Effect.suspend(() => {
        const o = w.unwritten
        if (o === undefined) return Effect.void
        w.unwritten = undefined
        return deps.store.recordOutcome(w.webhook.id, o).pipe(Effect.catch((e) => Effect.logWarning("webhook delivery facts not stored", e.message)))
      })

    /** The webhook's fiber: deliver what is due, in the webhook's asset order, one at a time; sleep until the next heartbeat or a wake. */
    const run = (w: Worker): Effect.Effect<void> =>
      Effect.gen(function*() {
        while (true) {
          w.wake.closeUnsafe()
          const now = yield* Clock.currentTimeMillis
          const heartbeatMs = w.webhook.heartbeatS * 1000
          let next = Infinity
          let delivered = false
          for (const asset of w.keys) {
            const key = keyOf(asset)
            const price = latest.get(key)
            if (price === undefined) continue
            const last = w.last.get(key)
            const reason = dueReason(last, price.price, now, w.webhook.deviationBps, heartbeatMs)
            if (reason === undefined) {
              next = Math.min(next, last!.at + heartbeatMs)
              continue
            }
            if (!(yield* deliver(w, asset, reason))) return
            delivered = true
          }
          if (delivered) continue
          const waitMs = Math.max(1, Math.min(next - now, heartbeatMs))
          yield* Effect.raceFirst(w.wake.await, Effect.sleep(waitMs))
        }
      })

    const settle = (w: Worker, webhook: Webhook) => {
      w.webhook = webhook
      w.signingKeys = webhook.secrets.map(secretKeyBytes)
      w.keys = webhook.assets
      w.url = webhook.url === undefined ? undefined : new URL(webhook.url)
    }

    const upsert = (webhook: Webhook) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const known = workers.get(webhook.id)
        if (known !== undefined) {
          if (known.webhook.version === webhook.version) {
            if (known.keys.some((k) => unknown.has(keyOf(k)))) watch(known, known.keys.filter((k) => unknown.has(keyOf(k))), now)
            return
          }
          const before = known.keys
          settle(known, webhook)
          unwatch(known, before.filter((a) => !webhook.assets.some((b) => keyOf(a) === keyOf(b))))
          watch(known, webhook.assets, now)
          known.wake.openUnsafe()
          return
        }
        if (webhook.secrets.length === 0) {
          if (unreadable.has(`${webhook.id}@${webhook.version}`)) return
          unreadable.add(`${webhook.id}@${webhook.version}`)
          return yield* Effect.logError("webhook has no usable secret (WEBHOOK_SECRET_KEY differs from the one it was sealed with?)", { webhook_id: webhook.id })
        }
        // Continue the sequence from the row if the shared counter was lost.
        yield* deps.cache.setIfAbsent(seqKey(webhook.id), String(webhook.lastSeq), SEQ_TTL_MS).pipe(Effect.ignore)
        const w: Worker = {
          webhook, keys: [], signingKeys: [], url: undefined, last: new Map(), wake: Latch.makeUnsafe(false),
          failingSince: webhook.failingSince, unwritten: undefined, fiber: undefined
        }
        settle(w, webhook)
        workers.set(webhook.id, w)
        watch(w, w.keys, now)
        w.fiber = yield* run(w).pipe(
          Effect.ensuring(Effect.suspend(() => {
            workers.delete(webhook.id)
            unwatch(w, w.keys)
            return flushOne(w)
          })),
          Effect.forkIn(scope, { startImmediately: true })
        )
      })

    const stop = (webhookId: string) =>
      Effect.suspend(() => {
        const w = workers.get(webhookId)
        return w?.fiber === undefined ? Effect.void : Fiber.interrupt(w.fiber)
      })

    yield* Effect.suspend(() => Effect.forEach([...workers.values()], flushOne, { discard: true })).pipe(
      Effect.delay("1 second"), Effect.forever, Effect.forkIn(scope)
    )
    yield* Effect.addFinalizer(() => Effect.forEach([...workers.values()], (w) => (w.fiber === undefined ? Effect.void : Fiber.interrupt(w.fiber)), { discard: true }))

    const engine: DeliveryEngine = {
      upsert,
      stop,
      owned: () => [...workers.keys()],
      flushOutcomes: Effect.suspend(() => Effect.forEach([...workers.values()], flushOne, { discard: true }))
    }
    return engine
  })
