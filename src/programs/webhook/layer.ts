/**
 * Webhook delivery as a Layer (WEBHOOK_SERVER, ALL): the engine over PriceCache's subscription,
 * the senders with the SSRF guard, and the lease keeper that decides which webhooks this node
 * delivers. No listener.
 */
import { Config, Effect, Layer } from "effect"
import { AppConfig } from "../../config/AppConfig.ts"
import { withModule } from "../../layers/Logging.ts"
import { makeHttpSender, makeUdpSender, type SenderOptions } from "../../layers/webhooks/webhookNet.ts"
import { WebhookStoreLive } from "../../layers/webhooks/WebhookStoreLive.ts"
import { Cache } from "../../services/Cache.ts"
import { Params } from "../../services/Params.ts"
import { PriceCache } from "../../services/PriceCache.ts"
import { UsageSink } from "../../services/UsageSink.ts"
import { WebhookStore } from "../../services/Webhooks.ts"
import { makeDeliveryEngine } from "./deliveryEngine.ts"
import { DEFAULT_LEASE_OPTIONS, type LeaseOptions, runLeases } from "./webhookLease.ts"

/** WEBHOOK_ALLOW_PRIVATE (default false): let webhooks reach loopback/private addresses and plain http://. */
export const webhookAllowPrivate = Config.Boolean("WEBHOOK_ALLOW_PRIVATE").pipe(Config.withDefault(false))

export const makeWebhookDelivery = (options: { readonly lease?: Partial<LeaseOptions>; readonly sender?: Partial<SenderOptions> } = {}) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const config = yield* AppConfig
    const allowPrivate = yield* webhookAllowPrivate
    const senderOptions: SenderOptions = { allowPrivate, ...options.sender }
    const http = yield* Effect.acquireRelease(Effect.sync(() => makeHttpSender(senderOptions)), (s) => Effect.sync(s.close))
    const udp = yield* Effect.acquireRelease(Effect.sync(() => makeUdpSender(senderOptions)), (s) => Effect.sync(s.close))
    const store = yield* WebhookStore
    const cache = yield* Cache
    const prices = yield* PriceCache
    const engine = yield* makeDeliveryEngine({ store, cache, usage: yield* UsageSink, params: yield* Params, subscribe: prices.subscribe, http, udp })
    const { token } = yield* runLeases({ cache, store, engine }, { nodeId: config.nodeId, ...DEFAULT_LEASE_OPTIONS, ...options.lease })
    yield* Effect.logInfo("webhook delivery running", { node: token, allow_private: allowPrivate }).pipe(withModule("webhook"))
  })).pipe(Layer.provide(WebhookStoreLive))

/** Delivery with the defaults (sweep 5 s, lease 15 s). */
export const WebhookDeliveryLive = makeWebhookDelivery()
