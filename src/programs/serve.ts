import { Effect, Layer } from "effect"
import type { ServerType } from "../config/AppConfig.ts"
import { FeedsLive } from "../layers/feeds/FeedsLive.ts"
import { PartitionMaintenance } from "../layers/MigrationsLive.ts"
import { PriceCacheMemory } from "../layers/PriceCacheMemory.ts"
import { RateLimiterLive } from "../layers/RateLimiterLive.ts"
import { UsageSinkThreaded } from "../layers/usage/UsageSinkThreaded.ts"
import { SqsQueueUrlCheck } from "../layers/usage/UsageWriterSqs.ts"
import { AdminTokenLive } from "../layers/AdminTokenLive.ts"
import { ProbesLive } from "../layers/ProbesLive.ts"
import { RuntimeStatsLive } from "../layers/RuntimeStatsLive.ts"
import { KeysLive, ServerInfoLive } from "./layers.ts"
import { LpoHttpServer } from "./lpo/LpoHttpServer.ts"
import { LpoUdpServer } from "./lpo/LpoUdpServer.ts"
import { LrsListeners, LrsServicesLive } from "./lrs/layer.ts"
import { publishStats } from "./lpo/statsPublisher.ts"
import { WebhookDeliveryLive } from "./webhook/layer.ts"
import { AppConfig } from "../config/AppConfig.ts"
import { MetricsLive, ServeMetricsLive } from "./metrics/layer.ts"

/**
 * What the listeners stand on: feeds (LPO only) and the usage sink, then limits, keys and
 * parameters, then storage. Layers are released in reverse order of construction, which gives the
 * spec's shutdown: stop accepting and drain (LPO, then LRS), flush usage rows, close feeds, close
 * database and cache.
 */
const serving = <E, R>(listeners: Layer.Layer<never, E, R>, parts: { readonly feeds: boolean; readonly reports: boolean }) =>
  Layer.mergeAll(
    listeners,
    Layer.effectDiscard(Effect.gen(function*() {
      const config = yield* AppConfig
      yield* publishStats(config.nodeId)
    })),
    ServeMetricsLive,
    PartitionMaintenance
  ).pipe(
    Layer.provideMerge(Layer.mergeAll(UsageSinkThreaded, AdminTokenLive, SqsQueueUrlCheck, parts.feeds ? FeedsLive : Layer.empty)),
    Layer.provideMerge(Layer.mergeAll(RateLimiterLive, PriceCacheMemory, RuntimeStatsLive, ProbesLive, ServerInfoLive, parts.reports ? LrsServicesLive : Layer.empty)),
    Layer.provideMerge(MetricsLive),
    Layer.provideMerge(KeysLive)
  )

/** The LPO's listeners (price HTTP + admin, UDP). */
const LpoListeners = Layer.mergeAll(LpoHttpServer, LpoUdpServer)

/** The LPO alone (APP_SERVER). */
export const LpoLive = serving(LpoListeners, { feeds: true, reports: false })

/** The LRS alone (REPORT_SERVER): no feeds. */
export const LrsLive = serving(LrsListeners, { feeds: false, reports: true })

/**
 * LPO and LRS in one process. The LRS's listeners are built after the LPO's, so at shutdown they
 * close first, then the LPO's (each drains what it is answering).
 */
export const LpoLrsLive = serving(LrsListeners.pipe(Layer.provideMerge(LpoListeners)), { feeds: true, reports: true })

/** Webhook delivery alone (WEBHOOK_SERVER): feeds and delivery, no listener. */
export const WebhookLive = serving(WebhookDeliveryLive, { feeds: true, reports: false })

/** Everything (ALL): LPO, LRS and webhook delivery; delivery stops first at shutdown. */
export const AllLive = serving(WebhookDeliveryLive.pipe(Layer.provideMerge(LrsListeners.pipe(Layer.provideMerge(LpoListeners)))), { feeds: true, reports: true })

/** The parts of a server type this build does not have yet. */
const NOT_BUILT: Readonly<Record<ServerType, ReadonlyArray<string>>> = {
  APP_SERVER: [],
  APP_REPORT_SERVER: [],
  ALL: [],
  REPORT_SERVER: [],
  WEBHOOK_SERVER: []
}

/** The one line `tb serve` ends with (exit 2) for a server type with nothing built yet. */
export const notBuiltLine = (mode: ServerType): string =>
  `server type ${mode} is not built yet (${NOT_BUILT[mode].join(", ")}); APP_SERVER, REPORT_SERVER, APP_REPORT_SERVER and ALL serve`

/**
 * `tb serve`: the listeners the server type asks for, or undefined for a type of which nothing is
 * built yet. A type only partly built serves what it has and says once what it leaves out.
 */
export const serveLayer = (mode: ServerType) => {
  switch (mode) {
    case "APP_SERVER":
      return LpoLive
    case "REPORT_SERVER":
      return LrsLive
    case "APP_REPORT_SERVER":
      return LpoLrsLive
    case "ALL":
      return AllLive
    case "WEBHOOK_SERVER":
      return WebhookLive
  }
}
