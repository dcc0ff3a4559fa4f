import WebSocket from "ws"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { COUNTER_NAMES, GAUGES } from "../src/domain/runtimeCounters.ts"
import { histogramCount, scrape, valueOf } from "./support/prometheus.ts"
import { call, createKey, priceWith, type RunningServer, startServer, udpRequest } from "./support/server.ts"

let server: RunningServer

beforeAll(async () => {
  server = await startServer({ SERVER_TYPE: "APP_SERVER" })
}, 90_000)

afterAll(async () => {
  await server?.stop()
})

/** Waits until the simulated feeds price BTC, so /price answers 200. */
const pricedBtc = async (key: string) => {
  const deadline = Date.now() + 20_000
  while (Date.now() < deadline) {
    if ((await priceWith(server, key)).status === 200) return
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error("no BTC price from the simulated feeds")
}

describe("GET /metrics on METRICS_PORT", () => {
  it("answers Prometheus text with the spec's series: request durations by service, route and status; every runtime counter; feeds; usage backlog", async () => {
    const { key } = await createKey(server, "partner")
    await pricedBtc(key)
    const before = await scrape(server.metricsUrl)
    const okBefore = histogramCount(before, "http_server_request_duration_seconds", { service: "LPO", http_route: "/price", http_response_status_code: "200" }) ?? 0
    for (let i = 0; i < 5; i++) expect((await priceWith(server, key)).status).toBe(200)
    expect((await call(server, "/price?asset=BTC")).status).toBe(401)
    expect(await udpRequest(server.udpPort, `v1 price ${key} BTC`)).toContain("\"ok\":true")
    // Rows reach the usage sink after the answer is sent: give the last one a moment.
    await new Promise((r) => setTimeout(r, 300))

    const s = await scrape(server.metricsUrl)
    expect(s.contentType).toMatch(/^text\/plain; version=0\.0\.4/)
    expect(s.families.get("http_server_request_duration_seconds")?.type).toBe("HISTOGRAM")
    expect(histogramCount(s, "http_server_request_duration_seconds", { service: "LPO", http_route: "/price", http_response_status_code: "200" })).toBe(okBefore + 5)
    expect(histogramCount(s, "http_server_request_duration_seconds", { service: "LPO", http_route: "/price", http_response_status_code: "401" })).toBeGreaterThanOrEqual(1)
    expect(histogramCount(s, "tb_udp_request_duration_seconds", { service: "LPO", endpoint: "price", status: "OK" })).toBeGreaterThanOrEqual(1)

    // The runtime counters, each one series: monotonic ones as counters, levels as gauges.
    for (const [i, name] of COUNTER_NAMES.entries()) {
      const gauge = GAUGES.includes(i)
      const metric = gauge || name.endsWith("_total") ? `tb_${name}` : `tb_${name}_total`
      expect(s.families.get(metric)?.type, metric).toBe(gauge ? "GAUGE" : "COUNTER")
    }
    expect(valueOf(s, "tb_requests_total")).toBeGreaterThanOrEqual(7)
    expect(valueOf(s, "tb_udp_requests_total")).toBeGreaterThanOrEqual(1)
    expect(valueOf(s, "tb_auth_failures_total")).toBeGreaterThanOrEqual(1)

    // Feed health per exchange: the simulated feeds are connected.
    const connected = s.families.get("tb_feed_connected")?.metrics ?? []
    expect(connected.length).toBeGreaterThanOrEqual(1)
    expect(connected.some((m) => m.labels?.["exchange"] !== undefined && m.value === "1")).toBe(true)
    expect(s.families.has("tb_feed_last_message_age_seconds")).toBe(true)

    // Usage backlog and spool.
    expect(s.families.get("tb_usage_buffered")?.type).toBe("GAUGE")
    expect(valueOf(s, "tb_usage_spool_files")).toBe(0)
    // Stream series are there before any connection; the queued writer's are not (tb queued-writer has them).
    expect(valueOf(s, "tb_stream_connections")).toBe(0)
    expect(s.families.has("tb_queued_writer_rows_total")).toBe(false)
    // Node.js process metrics.
    expect(s.families.has("process_cpu_seconds_total")).toBe(true)
  }, 60_000)

  it("counts rate-limit refusals per key by its id, and never shows a key", async () => {
    const { key, key_id } = await createKey(server, "demo")
    await pricedBtc(key)
    const codes: Array<number> = []
    for (let i = 0; i < 25; i++) codes.push((await priceWith(server, key)).status)
    const refused = codes.filter((c) => c === 429).length
    expect(refused).toBeGreaterThan(0)
    await new Promise((r) => setTimeout(r, 300))
    const s = await scrape(server.metricsUrl)
    expect(valueOf(s, "tb_key_refusals_total", { key_id, reason: "rate_limited" })).toBe(refused)
    expect(s.text).not.toContain(key)
    expect(valueOf(s, "tb_rate_limited_total")).toBeGreaterThanOrEqual(refused)
  }, 60_000)

  it("counts open partner stream connections", async () => {
    const { key } = await createKey(server, "partner")
    const ws = new WebSocket(`${server.baseUrl.replace("http", "ws")}/ws`, { headers: { "x-api-key": key } })
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve())
      ws.once("error", reject)
    })
    try {
      const open = await scrape(server.metricsUrl)
      expect(valueOf(open, "tb_stream_connections")).toBe(1)
      expect(valueOf(open, "tb_stream_connections_opened_total")).toBeGreaterThanOrEqual(1)
    } finally {
      ws.close()
    }
  })

  it("answers only /metrics: another path is 404, a POST 405", async () => {
    const base = server.metricsUrl.replace(/\/metrics$/, "")
    expect((await fetch(`${base}/`)).status).toBe(404)
    expect((await fetch(server.metricsUrl, { method: "POST" })).status).toBe(405)
  })
})
