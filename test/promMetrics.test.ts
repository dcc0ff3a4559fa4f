import { describe, expect, it } from "vitest"
import type { UsageFacts } from "../src/domain/usageChunk.ts"
import { makePromMetrics, makeRouteOf } from "../src/layers/metrics/promMetrics.ts"
import { histogramCount, parseScrape, type Scrape, valueOf } from "./support/prometheus.ts"

const ROUTES = [
  { method: "GET", path: "/price" },
  { method: "GET", path: "/webhooks/:id" },
  { method: "POST", path: "/webhooks/:id/test" }
]

const facts = (over: Partial<UsageFacts>): UsageFacts => ({
  apiKeyId: "key-1", service: "LPO", protocol: "http", endpoint: "/price", code: "OK", latencyUs: 120, clientIp: "127.0.0.1", bytesOut: 10,
  createdAt: Date.now(), ...over
})

const scrapeOf = async (m: ReturnType<typeof makePromMetrics>): Promise<Scrape> => {
  const { body, contentType } = await m.exposition()
  return parseScrape(body, contentType)
}

describe("the prom-client recorder", () => {
  it("labels durations by the route template, so ids in paths do not make a series each; unknown paths share one", async () => {
    const m = makePromMetrics({ routes: ROUTES, processMetrics: false })
    m.answered(facts({ endpoint: "/webhooks/6f1c2a7e-0000-4000-8000-000000000002" }))
    m.answered(facts({ endpoint: "/webhooks/abc/test", status: 202 }))
    m.answered(facts({ endpoint: "/no/such/path-1", code: "NOT_FOUND" }))
    m.answered(facts({ endpoint: "/no/such/path-2", code: "NOT_FOUND" }))
    const s = await scrapeOf(m)
    expect(histogramCount(s, "http_server_request_duration_seconds", { service: "LPO", http_route: "/webhooks/:id", http_response_status_code: "200" })).toBe(1)
    expect(histogramCount(s, "http_server_request_duration_seconds", { service: "LPO", http_route: "/webhooks/:id/test", http_response_status_code: "202" })).toBe(1)
    expect(histogramCount(s, "http_server_request_duration_seconds", { service: "LPO", http_route: "unmatched", http_response_status_code: "404" })).toBe(2)
    expect(s.text).not.toContain("6f1c2a7e")
    expect(makeRouteOf(ROUTES)("/price?asset=BTC")).toBe("/price")
  })

  it("renders cumulative buckets, +Inf, sum and count of each series", async () => {
    const m = makePromMetrics({ routes: ROUTES, processMetrics: false })
    for (const latencyUs of [50, 300, 20_000_000]) m.answered(facts({ latencyUs }))
    const { body } = await m.exposition()
    const line = (le: string) => body.split("\n").find((l) => l.startsWith("http_server_request_duration_seconds_bucket{") && l.includes(`le="${le}"`))?.split(" ")[1]
    expect([line("0.0001"), line("0.00025"), line("0.0005"), line("10"), line("+Inf")]).toEqual(["1", "1", "2", "2", "3"])
    expect(body).toMatch(/^http_server_request_duration_seconds_sum\{[^}]*\} 20\.00035$/m)
    expect(body).toMatch(/^http_server_request_duration_seconds_count\{[^}]*\} 3$/m)
  })

  it("counts webhook deliveries by transport and outcome, not as served requests", async () => {
    const m = makePromMetrics({ routes: ROUTES, processMetrics: false })
    m.answered(facts({ service: "WEBHOOK", protocol: "http", endpoint: "price.update", status: 200 }))
    m.answered(facts({ service: "WEBHOOK", protocol: "http", endpoint: "webhook.verify", code: "SYSTEM_BUSY", status: 500 }))
    m.answered(facts({ service: "WEBHOOK", protocol: "udp", endpoint: "price.update", status: 200 }))
    // A subscriber's call to the webhook API is a served request, not a delivery.
    m.answered(facts({ service: "WEBHOOK", protocol: "http", endpoint: "/webhook/6f1c2a7e-0000-4000-8000-000000000001", status: 200 }))
    const s = await scrapeOf(m)
    expect(valueOf(s, "tb_webhook_deliveries_total", { transport: "http", outcome: "delivered" })).toBe(1)
    expect(valueOf(s, "tb_webhook_deliveries_total", { transport: "http", outcome: "failed" })).toBe(1)
    expect(valueOf(s, "tb_webhook_deliveries_total", { transport: "udp", outcome: "delivered" })).toBe(1)
    expect(histogramCount(s, "tb_webhook_delivery_duration_seconds", { transport: "http" })).toBe(2)
    expect(histogramCount(s, "http_server_request_duration_seconds", { service: "WEBHOOK", http_route: "unmatched", http_response_status_code: "200" })).toBe(1)
  })

  it("reads the stream's counts at each scrape, summed over hubs; stream rows are not request durations", async () => {
    const m = makePromMetrics({ routes: ROUTES, processMetrics: false })
    let open = 3
    m.streamHub(() => ({ connections: open, opened: 10, slowConsumerCloses: 2, messagesSent: 100 }))
    m.streamHub(() => ({ connections: 1, opened: 1, slowConsumerCloses: 0, messagesSent: 5 }))
    m.answered(facts({ protocol: "ws", endpoint: "/ws" }))
    m.answered(facts({ protocol: "http", endpoint: "/stream" }))
    let s = await scrapeOf(m)
    expect(valueOf(s, "tb_stream_connections")).toBe(4)
    expect(valueOf(s, "tb_stream_slow_consumer_closes_total")).toBe(2)
    expect(valueOf(s, "tb_stream_messages_sent_total")).toBe(105)
    expect(s.text).not.toContain("http_server_request_duration_seconds_count")
    open = 0
    s = await scrapeOf(m)
    expect(valueOf(s, "tb_stream_connections")).toBe(1)
  })

  it("has the queued writer's series only when asked for", async () => {
    const plain = await scrapeOf(makePromMetrics({ routes: ROUTES, processMetrics: false }))
    expect(plain.families.has("tb_queued_writer_messages_total")).toBe(false)
    const m = makePromMetrics({ routes: ROUTES, processMetrics: false, queuedWriter: true })
    m.queuedWriterBatch({ messages: 10, stored: 9, poison: 1, rows: 900, inserted: 850, seconds: 0.02 })
    m.queuedWriterRetry()
    const s = await scrapeOf(m)
    expect(valueOf(s, "tb_queued_writer_messages_total", { outcome: "stored" })).toBe(9)
    expect(valueOf(s, "tb_queued_writer_messages_total", { outcome: "poison" })).toBe(1)
    expect(valueOf(s, "tb_queued_writer_rows_inserted_total")).toBe(850)
    expect(valueOf(s, "tb_queued_writer_retries_total")).toBe(1)
  })
})
