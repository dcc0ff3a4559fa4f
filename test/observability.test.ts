import { createServer, type Server } from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { createKey, type RunningServer, startServer } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"

/** A loopback OTLP/HTTP collector: records the JSON bodies posted to /v1/<signal>. */
const received: Record<string, Array<unknown>> = {}
/** The x-collector-token header of each export request (OTEL_EXPORTER_OTLP_HEADERS). */
const tokens: Array<string | undefined> = []
let collector: Server
let server: RunningServer
let dbUrl: string

beforeAll(async () => {
  collector = createServer((req, res) => {
    let body = ""
    req.on("data", (c: Buffer) => void (body += c.toString()))
    req.on("end", () => {
      tokens.push(req.headers["x-collector-token"] as string | undefined)
      const signal = (req.url ?? "").replace("/v1/", "")
      try {
        ;(received[signal] ??= []).push(JSON.parse(body))
      } catch {
        ;(received[signal] ??= []).push(body)
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}")
    })
  })
  await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", () => resolve()))
  const address = collector.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  dbUrl = freshDatabase("observability")
  server = await startServer({
    DATABASE_URL: dbUrl,
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
    OTEL_BSP_SCHEDULE_DELAY: "200",
    OTEL_SERVICE_NAME: "tb-test",
    OTEL_EXPORTER_OTLP_HEADERS: "x-collector-token=s3cret%20value"
  })
}, 90_000)

afterAll(async () => {
  await server?.stop()
  collector?.close()
  dropDatabase(dbUrl)
})

interface ExportedSpan {
  readonly name: string
  readonly traceId?: string
  readonly spanId?: string
  readonly parentSpanId?: string
  readonly attributes?: ReadonlyArray<{ readonly key: string; readonly value: { readonly intValue?: string | number; readonly doubleValue?: number } }>
}

/** Every span the collector received. */
const exportedSpans = (): Array<ExportedSpan> =>
  (received["traces"] ?? []).flatMap((body) =>
    ((body as { resourceSpans?: Array<{ scopeSpans?: Array<{ spans?: Array<ExportedSpan> }> }> }).resourceSpans ?? [])
      .flatMap((r) => r.scopeSpans ?? []).flatMap((s) => s.spans ?? []))

const spanNames = (): Array<string> => exportedSpans().map((s) => s.name)
const spansNamed = (name: string): Array<ExportedSpan> => exportedSpans().filter((s) => s.name === name)

describe("OpenTelemetry export", () => {
  it("sends spans of service methods to the OTLP endpoint with the service's name", async () => {
    await createKey(server, "demo")
    const deadline = Date.now() + 15_000
    while (!spanNames().includes("ApiKeys.create") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    expect(spanNames()).toContain("ApiKeys.create")
    const first = received["traces"]?.[0] as { resourceSpans?: Array<{ resource?: unknown }> } | undefined
    const resource = JSON.stringify(first?.resourceSpans?.[0]?.resource)
    expect(resource).toContain("tb-test")
    // The documented header variable reaches the collector (values URL-decoded, as the spec says).
    expect(tokens.length).toBeGreaterThan(0)
    expect(tokens.every((t) => t === "s3cret value")).toBe(true)
  }, 30_000)

  it("sends the usage thread's spans too: each usage write, with its row count", async () => {
    const { key } = await createKey(server, "demo")
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${server.baseUrl}/price?asset=BTC`, { headers: { "x-api-key": key } })
      expect([200, 503]).toContain(r.status)
    }
    const deadline = Date.now() + 15_000
    while (!spanNames().includes("UsageWriter.write") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    expect(spanNames()).toContain("UsageWriter.write")
    const rows = spansNamed("UsageWriter.write").flatMap((s) => s.attributes ?? []).filter((a) => a.key === "rows")
    expect(rows.length).toBeGreaterThan(0)
    expect(rows.every((a) => Number(a.value.intValue ?? a.value.doubleValue ?? 0) > 0)).toBe(true)
    // One trace per batch: the write is a child of its batch's root span.
    const write = spansNamed("UsageWriter.write")[0]!
    const batch = spansNamed("usage.batch").find((s) => s.spanId === write.parentSpanId)
    expect(batch?.traceId).toBe(write.traceId)
    expect(batch?.parentSpanId ?? "").toBe("")
  }, 30_000)

  it("exports a price request's trace through OTLP: the edge's server span and its children", async () => {
    const { key } = await createKey(server, "demo")
    const r = await fetch(`${server.baseUrl}/price?asset=BTC`, { headers: { "x-api-key": key } })
    expect([200, 503]).toContain(r.status)
    await r.arrayBuffer()
    const deadline = Date.now() + 15_000
    while (!spanNames().includes("GET /price") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    const edge = spansNamed("GET /price")[0]
    expect(edge).toBeDefined()
    expect(edge?.parentSpanId ?? "").toBe("")
    while (exportedSpans().filter((s) => s.parentSpanId === edge?.spanId).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    const children = exportedSpans().filter((s) => s.parentSpanId === edge?.spanId).map((s) => s.name)
    expect(children).toEqual(expect.arrayContaining(["ApiKeys.authenticate", "RateLimiter.admit"]))
    expect(JSON.stringify(received["traces"])).not.toContain(key)
  }, 30_000)

  it("gives every HTTP API endpoint a span of its own, around the service calls it makes", async () => {
    await createKey(server, "demo")
    const deadline = Date.now() + 15_000
    while (!spanNames().includes("Admin.createKey") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    const endpoint = spansNamed("Admin.createKey")[0]
    expect(endpoint).toBeDefined()
    const create = spansNamed("ApiKeys.create").find((s) => s.traceId === endpoint?.traceId)
    expect(create?.parentSpanId).toBe(endpoint?.spanId)
  }, 30_000)
})
