import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client"
import { type ApiRoute, routeTemplate } from "../../api/routeTable.ts"
import { statusOf } from "../../domain/errorCodes.ts"
import type { UsageFacts } from "../../domain/usageChunk.ts"
import type { MetricsRecorder, ScrapedFamily, StreamCounts } from "../../services/Metrics.ts"
import { type HistogramSeries, makeSeriesHistogram } from "./seriesHistogram.ts"

/**
 * OpenTelemetry's recommended buckets for `http.server.request.duration` (seconds), with finer
 * ones below 5 ms: a price answer takes tens of microseconds.
 */
const DURATION_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10
]

/** Distinct request paths remembered with their route; past it the memo starts again. */
const ROUTE_MEMO_MAX = 4_096

/** Path → the route template that serves it (`/webhooks/:id`), `unmatched` for none; remembered per path. */
export const makeRouteOf = (routes: ReadonlyArray<ApiRoute>): ((path: string) => string) => {
  const templateOf = routeTemplate(routes)
  const memo = new Map<string, string>()
  return (path) => {
    const known = memo.get(path)
    if (known !== undefined) return known
    const route = templateOf(path.split("?")[0] ?? path) ?? "unmatched"
    if (memo.size >= ROUTE_MEMO_MAX) memo.clear()
    memo.set(path, route)
    return route
  }
}

/** Endpoints of the partner stream: connections, not request/response durations. */
const STREAM_ENDPOINTS = new Set(["/ws", "/stream"])

export interface PromMetricsOptions {
  readonly routes: ReadonlyArray<ApiRoute>
  /** Also told of every answered request (the CloudWatch minute figures). */
  readonly onAnswered?: (facts: UsageFacts, status: number) => void
  /** Node.js process metrics (CPU, memory, event-loop lag, GC); off in tests that count series. */
  readonly processMetrics?: boolean
  /** The queued writer's series (only `tb queued-writer` has them). */
  readonly queuedWriter?: boolean
}

/**
 * The MetricsRecorder on prom-client: one Registry per recorder (never the global one, so two
 * servers in one process, or tests, do not share series). Series recorded as they happen are
 * labelled children cached by their label values; `addScraped` families are read at each scrape.
 */
export const makePromMetrics = (options: PromMetricsOptions): MetricsRecorder & { readonly registry: Registry } => {
  const registry = new Registry()
  const registers = [registry]
  if (options.processMetrics !== false) collectDefaultMetrics({ register: registry })
  const routeOf = makeRouteOf(options.routes)

  // The request path's histograms: a few typed-array additions per request (seriesHistogram.ts).
  const httpDuration = makeSeriesHistogram({
    name: "http_server_request_duration_seconds",
    help: "Duration of HTTP server requests (OpenTelemetry http.server.request.duration), by service, route and status",
    buckets: DURATION_BUCKETS,
    registry
  })
  const udpDuration = makeSeriesHistogram({
    name: "tb_udp_request_duration_seconds",
    help: "Duration of UDP requests, by service, endpoint and status",
    buckets: DURATION_BUCKETS,
    registry
  })
  const refusals = new Counter({
    name: "tb_key_refusals_total",
    help: "Requests of a key refused by its rate limit or monthly quota, by key id (never the key) and reason",
    labelNames: ["key_id", "reason"],
    registers
  })
  const webhookDeliveries = new Counter({
    name: "tb_webhook_deliveries_total",
    help: "Webhook delivery attempts, by transport and outcome (delivered: 2xx, or sent for UDP; failed: anything else)",
    labelNames: ["transport", "outcome"],
    registers
  })
  const webhookDuration = makeSeriesHistogram({
    name: "tb_webhook_delivery_duration_seconds",
    help: "Duration of webhook delivery attempts, by transport",
    buckets: DURATION_BUCKETS,
    registry
  })
  const queuedRegisters = options.queuedWriter === true ? registers : []
  const queuedMessages = new Counter({
    name: "tb_queued_writer_messages_total",
    help: "Queue messages the queued writer handled, by outcome (stored, poison)",
    labelNames: ["outcome"],
    registers: queuedRegisters
  })
  const queuedRows = new Counter({ name: "tb_queued_writer_rows_total", help: "Usage rows in stored messages (inserted or already there)", registers: queuedRegisters })
  const queuedInserted = new Counter({ name: "tb_queued_writer_rows_inserted_total", help: "Usage rows newly inserted", registers: queuedRegisters })
  const queuedRetries = new Counter({ name: "tb_queued_writer_retries_total", help: "Batch writes retried because the database failed", registers: queuedRegisters })
  const queuedBatch = new Histogram({
    name: "tb_queued_writer_batch_duration_seconds",
    help: "Time to store one received batch",
    buckets: DURATION_BUCKETS,
    registers: queuedRegisters
  })

  /**
   * Labelled children in nested maps by label value: the hot path does a few Map lookups and
   * builds no key string (prom-client's own `labels()` hashes the label object on every call).
   */
  type Child = HistogramSeries
  const seriesOf = (root: Map<string, Map<string, Map<string | number, Child>>>, a: string, b: string, c: string | number, make: () => Child): Child => {
    let byB = root.get(a)
    if (byB === undefined) root.set(a, byB = new Map())
    let byC = byB.get(b)
    if (byC === undefined) byB.set(b, byC = new Map())
    let child = byC.get(c)
    if (child === undefined) byC.set(c, child = make())
    return child
  }
  const httpSeries = new Map<string, Map<string, Map<string | number, Child>>>()
  const udpSeries = new Map<string, Map<string, Map<string | number, Child>>>()
  const webhookSeries = new Map<string, Child>()

  const answered = (facts: UsageFacts) => {
    const status = facts.status ?? statusOf(facts.code)
    const seconds = facts.latencyUs / 1e6
    // A delivery's row names the event (`price.update`, `webhook.verify`); calls to the /webhook API name their path.
    if (facts.service === "WEBHOOK" && !facts.endpoint.startsWith("/")) {
      const outcome = status >= 200 && status < 300 ? "delivered" : "failed"
      webhookDeliveries.inc({ transport: facts.protocol, outcome })
      let child = webhookSeries.get(facts.protocol)
      if (child === undefined) webhookSeries.set(facts.protocol, child = webhookDuration.series({ transport: facts.protocol }))
      child.observe(seconds)
      return
    }
    options.onAnswered?.(facts, status)
    if ((facts.code === "RATE_LIMITED" || facts.code === "QUOTA_EXCEEDED") && facts.apiKeyId !== undefined) {
      refusals.inc({ key_id: facts.apiKeyId, reason: facts.code === "RATE_LIMITED" ? "rate_limited" : "quota_exceeded" })
    }
    if (facts.protocol === "udp") {
      seriesOf(udpSeries, facts.service, facts.endpoint, facts.code, () =>
        udpDuration.series({ service: facts.service, endpoint: facts.endpoint, status: facts.code })).observe(seconds)
      return
    }
    if (facts.protocol !== "http" || STREAM_ENDPOINTS.has(facts.endpoint)) return
    const route = routeOf(facts.endpoint)
    seriesOf(httpSeries, facts.service, route, status, () =>
      httpDuration.series({ service: facts.service, http_route: route, http_response_status_code: String(status) })).observe(seconds)
  }

  const addScraped = (family: ScrapedFamily) => {
    const labelNames = [...family.labelNames]
    if (family.type === "gauge") {
      new Gauge({
        name: family.name, help: family.help, labelNames, registers, aggregator: family.acrossWorkers ?? "sum",
        collect() {
          this.reset()
          for (const s of family.read()) this.set(s.labels, s.value)
        }
      })
      return
    }
    new Counter({
      name: family.name, help: family.help, labelNames, registers,
      collect() {
        this.reset()
        for (const s of family.read()) this.inc(s.labels, Math.max(0, s.value))
      }
    })
  }

  const streamReaders: Array<() => StreamCounts> = []
  const streamTotal = (pick: (c: StreamCounts) => number) => [{ labels: {}, value: streamReaders.reduce((sum, read) => sum + pick(read()), 0) }]
  addScraped({ name: "tb_stream_connections", help: "Open partner stream connections (WebSocket and SSE)", type: "gauge", labelNames: [], read: () => streamTotal((c) => c.connections) })
  addScraped({ name: "tb_stream_connections_opened_total", help: "Partner stream connections accepted", type: "counter", labelNames: [], read: () => streamTotal((c) => c.opened) })
  addScraped({
    name: "tb_stream_slow_consumer_closes_total", help: "Partner stream connections closed because the client did not keep up", type: "counter", labelNames: [],
    read: () => streamTotal((c) => c.slowConsumerCloses)
  })
  addScraped({ name: "tb_stream_messages_sent_total", help: "Partner stream messages sent", type: "counter", labelNames: [], read: () => streamTotal((c) => c.messagesSent) })

  return {
    registry,
    answered,
    streamHub: (read) => void streamReaders.push(read),
    queuedWriterBatch: (b) => {
      queuedMessages.inc({ outcome: "stored" }, b.stored)
      queuedMessages.inc({ outcome: "poison" }, b.poison)
      queuedRows.inc(b.rows)
      queuedInserted.inc(b.inserted)
      queuedBatch.observe(b.seconds)
    },
    queuedWriterRetry: () => queuedRetries.inc(),
    addScraped,
    exposition: async () => ({ contentType: registry.contentType, body: await registry.metrics() })
  }
}
