import { Effect, Layer, Option } from "effect"
import cluster from "node:cluster"
import { AggregatorRegistry } from "prom-client"
import { routesOf } from "../../api/routeTable.ts"
import { TrinityApi } from "../../api/TrinityApi.ts"
import { AppConfig } from "../../config/AppConfig.ts"
import { COUNTER_NAMES, GAUGES } from "../../domain/runtimeCounters.ts"
import { CloudWatchLive } from "../../layers/CloudWatchLive.ts"
import { withModule } from "../../layers/Logging.ts"
import { makeMinuteBook, runCloudWatchPublisher } from "../../layers/metrics/cloudWatchPublisher.ts"
import { serveMetrics } from "../../layers/metrics/metricsListener.ts"
import { makePromMetrics } from "../../layers/metrics/promMetrics.ts"
import { makeUsageSpool, usageSpoolDir } from "../../layers/usage/spool.ts"
import { FeedStatus } from "../../services/FeedStatus.ts"
import { Metrics } from "../../services/Metrics.ts"
import type { RateLimiter } from "../../services/RateLimiter.ts"
import type { RuntimeStats } from "../../services/RuntimeStats.ts"
import type { UsageSink } from "../../services/UsageSink.ts"
import { currentStats } from "../lpo/statsPublisher.ts"

/** CloudWatch gets a minute's figures once a minute; at most an hour of them waits while it fails. */
const CLOUDWATCH_INTERVAL_MS = 60_000
const CLOUDWATCH_MAX_PENDING_DATUMS = 2 * 6 * 60

/**
 * The recorder of a long-running program, its `/metrics` listener on METRICS_PORT, and with
 * CLOUDWATCH_NAMESPACE_PREFIX set the CloudWatch publisher. Built below everything that records
 * into it, so at shutdown the listeners and the usage flush finish first, then the last minute is
 * published and the listener closes.
 */
export const metricsLayer = (options: { readonly queuedWriter: boolean }) => Layer.effect(Metrics, Effect.gen(function*() {
  const config = yield* AppConfig
  const book = Option.isSome(config.cloudwatchNamespacePrefix) ? makeMinuteBook() : undefined
  const metrics = makePromMetrics({
    routes: routesOf(TrinityApi),
    queuedWriter: options.queuedWriter,
    ...(book === undefined ? {} : { onAnswered: (f, status) => book.add(f.service, status, f.code, f.latencyUs, f.createdAt) })
  })
  if (book !== undefined && Option.isSome(config.cloudwatchNamespacePrefix)) {
    const prefix = config.cloudwatchNamespacePrefix.value
    // Built in this layer's scope: the client lives until the last minute is published at shutdown.
    const cloudWatch = yield* Layer.build(CloudWatchLive)
    metrics.addScraped(yield* runCloudWatchPublisher(book, {
      prefix,
      intervalMs: CLOUDWATCH_INTERVAL_MS,
      maxPendingDatums: CLOUDWATCH_MAX_PENDING_DATUMS,
      finalPublishMs: Math.min(5_000, Math.floor(config.shutdownTimeoutMs / 10))
    }).pipe(Effect.provideContext(cloudWatch)))
    yield* Effect.logInfo(`publishing to CloudWatch ${prefix}/LPO and ${prefix}/LRS once a minute`).pipe(withModule("metrics"))
  }
  // A worker of LPO_WORKERS > 1 answers its primary's scrape over cluster IPC instead (clusterMetrics).
  if (cluster.isWorker) {
    // Constructing one installs prom-client's IPC listener in this worker.
    void new AggregatorRegistry()
    AggregatorRegistry.setRegistries([metrics.registry])
  } else yield* serveMetrics(metrics, config.bindHost, config.metricsPort)
  return metrics
}))

/**
 * `/metrics` of a server with LPO_WORKERS > 1, served by the primary: every worker's series,
 * counters and histograms summed (prom-client's AggregatorRegistry asks each worker over IPC).
 */
export const serveClusterMetrics = Effect.gen(function*() {
  const config = yield* AppConfig
  const aggregator = new AggregatorRegistry()
  yield* serveMetrics({ exposition: async () => ({ contentType: aggregator.contentType, body: await aggregator.clusterMetrics() }) }, config.bindHost, config.metricsPort)
})

/** `tb serve`'s metrics. */
export const MetricsLive = metricsLayer({ queuedWriter: false })

/**
 * What `tb serve` exposes at each scrape: the 25 runtime counters (`tb_<name>_total`, the levels
 * as gauges), the usage backlog and spool, and each exchange feed's health.
 */
export const ServeMetricsLive = Layer.effectDiscard(Effect.gen(function*() {
  const metrics = yield* Metrics
  const config = yield* AppConfig
  const services = yield* Effect.context<RuntimeStats | UsageSink | RateLimiter>()
  const snapshot = currentStats.pipe(Effect.provide(services))
  let last = { at: 0, counters: Effect.runSync(snapshot).counters }
  /** One read serves every family of a scrape. */
  const counters = () => {
    const now = Date.now()
    if (now - last.at > 100) last = { at: now, counters: Effect.runSync(snapshot).counters }
    return last.counters
  }
  COUNTER_NAMES.forEach((name, i) => {
    const gauge = GAUGES.includes(i)
    metrics.addScraped({
      name: gauge || name.endsWith("_total") ? `tb_${name}` : `tb_${name}_total`,
      help: `runtime counter ${name} (also in /admin/stress-stats and stats:<node>)`,
      type: gauge ? "gauge" : "counter",
      labelNames: [],
      read: () => [{ labels: {}, value: counters()[name] }]
    })
  })
  const spool = makeUsageSpool(usageSpoolDir(config.dataDir))
  // Workers share DATA_DIR, so they all see the one spool: its size is not summed over them.
  metrics.addScraped({
    name: "tb_usage_spool_files", help: "Usage spool files waiting to be replayed", type: "gauge", labelNames: [], acrossWorkers: "max",
    read: () => [{ labels: {}, value: spool.backlog().files }]
  })
  metrics.addScraped({
    name: "tb_usage_spool_bytes", help: "Bytes of usage spool files waiting to be replayed", type: "gauge", labelNames: [], acrossWorkers: "max",
    read: () => [{ labels: {}, value: spool.backlog().bytes }]
  })

  const feeds = yield* Effect.serviceOption(FeedStatus)
  if (Option.isNone(feeds)) return
  const feedStatus = feeds.value
  const perExchange = (pick: (h: ReturnType<typeof feedStatus.snapshot>[number]) => number | undefined) => () =>
    feedStatus.snapshot(Date.now()).filter((h) => h.enabled).flatMap((h) => {
      const value = pick(h)
      return value === undefined ? [] : [{ labels: { exchange: h.exchange }, value }]
    })
  metrics.addScraped({ name: "tb_feed_connected", help: "1 when the exchange's WebSocket feed is connected", type: "gauge", labelNames: ["exchange"], acrossWorkers: "min",
    read: perExchange((h) => (h.connected ? 1 : 0))
  })
  metrics.addScraped({
    name: "tb_feed_last_message_age_seconds", help: "Age of the newest message from the exchange", type: "gauge", labelNames: ["exchange"], acrossWorkers: "max",
    read: perExchange((h) => (h.lastMessageAgeMs === undefined ? undefined : h.lastMessageAgeMs / 1000))
  })
  metrics.addScraped({ name: "tb_feed_markets", help: "Markets carried by the exchange's feed", type: "gauge", labelNames: ["exchange"], acrossWorkers: "max", read: perExchange((h) => h.markets) })
  metrics.addScraped({ name: "tb_feed_stale_markets", help: "Markets with no WebSocket tick within price_stale_ms", type: "gauge", labelNames: ["exchange"], acrossWorkers: "max", read: perExchange((h) => h.staleMarkets) })
  metrics.addScraped({ name: "tb_feed_reconnects_total", help: "WebSocket reconnects", type: "counter", labelNames: ["exchange"], read: perExchange((h) => h.reconnects) })
  metrics.addScraped({ name: "tb_feed_messages_total", help: "WebSocket messages received", type: "counter", labelNames: ["exchange"], read: perExchange((h) => h.messages) })
  metrics.addScraped({ name: "tb_feed_errors_total", help: "Feed errors (parse, connection)", type: "counter", labelNames: ["exchange"], read: perExchange((h) => h.errors) })
  metrics.addScraped({ name: "tb_feed_rest_failures_total", help: "REST fallback requests that failed", type: "counter", labelNames: ["exchange"], read: perExchange((h) => h.restFailures) })
}))
