import * as OtelTracer from "@effect/opentelemetry/OtelTracer"
import { AlwaysOnSampler, BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { ConfigProvider, Context, Effect, Layer, ManagedRuntime, Option } from "effect"
import { NodeServices } from "@effect/platform-node"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { otelEnvironment, samplerFromEnv, tracesExported } from "../src/layers/ObservabilityLive.ts"
import { layerRequestTracing, parseTraceparent } from "../src/layers/tracing/requestTracing.ts"
import { makeSampler, type Sampler } from "../src/layers/tracing/sampler.ts"
import * as Tracer from "effect/Tracer"
import { LpoLive } from "../src/programs/serve.ts"
import { freePort, udpRequest } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"

/**
 * The LPO composed in this process (the same layers `tb serve` builds for APP_SERVER), its tracer
 * an OpenTelemetry SDK tracer writing to an in-memory exporter. `sampler`: the OTEL_TRACES_*
 * variables, read as ObservabilityLive reads them; undefined: tracing off (no RequestTracing).
 */
interface InProcessServer {
  readonly baseUrl: string
  readonly udpPort: number
  readonly adminToken: string
  readonly spans: InMemorySpanExporter
  readonly stop: () => Promise<void>
}

let dbUrl: string

/** Ports are picked free just before the start, so another test may take one first: then again, with new ports. */
const startInProcess = async (sampler: Readonly<Record<string, string>> | undefined): Promise<InProcessServer> => {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startInProcessOnce(sampler)
    } catch (error) {
      if (attempt >= 4 || !String(error).includes("EADDRINUSE")) throw error
    }
  }
}

const startInProcessOnce = async (sampler: Readonly<Record<string, string>> | undefined): Promise<InProcessServer> => {
  const spans = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({ sampler: new AlwaysOnSampler(), spanProcessors: [new SimpleSpanProcessor(spans)] })
  const otel = OtelTracer.layer.pipe(Layer.provide(Layer.succeed(OtelTracer.OtelTracerProvider, provider)))
  const tracing = sampler === undefined ? otel : Layer.unwrap(Effect.map(samplerFromEnv(sampler), layerRequestTracing)).pipe(Layer.provideMerge(otel))
  const dataDir = mkdtempSync(join(tmpdir(), "tb-tracing-"))
  const httpPort = await freePort()
  const udpPort = await freePort()
  // Secrets (ADMIN_TOKEN) are read from process.env itself, not the ConfigProvider; this file has its own worker.
  const adminToken = `admin-${crypto.randomUUID()}`
  process.env["ADMIN_TOKEN"] = adminToken
  const env = {
    SERVER_TYPE: "APP_SERVER", FEEDS: "simulated", LOG_LEVEL: "Warn", BIND_HOST: "127.0.0.1", DATABASE_URL: dbUrl, DATA_DIR: dataDir,
    ADMIN_TOKEN: adminToken, LPO_HTTP_PORT: String(httpPort), LPO_UDP_PORT: String(udpPort), METRICS_PORT: "0"
  }
  const runtime = ManagedRuntime.make(LpoLive.pipe(
    Layer.provide(tracing),
    Layer.provide(NodeServices.layer),
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord(env)))
  ))
  await runtime.runPromise(Effect.void).catch(async (error: unknown) => {
    await runtime.dispose()
    throw error
  })
  const baseUrl = `http://127.0.0.1:${httpPort}`
  const deadline = Date.now() + 60_000
  while ((await fetch(`${baseUrl}/ready`)).status !== 200) {
    if (Date.now() > deadline) throw new Error("the LPO did not become ready")
    await new Promise((r) => setTimeout(r, 200))
  }
  return { baseUrl, udpPort, adminToken, spans, stop: () => runtime.dispose() }
}

const createKey = async (server: InProcessServer): Promise<{ readonly key: string; readonly key_id: string }> => {
  const r = await fetch(`${server.baseUrl}/admin/keys`, {
    method: "POST", headers: { "x-admin-token": server.adminToken, "content-type": "application/json" }, body: JSON.stringify({ tier: "partner" })
  })
  const body = await r.json() as { data: { key: string; key_id: string } }
  if (r.status !== 201) throw new Error(`key creation failed: ${JSON.stringify(body)}`)
  return body.data
}

const hex = (span: ReadableSpan) => span.spanContext()
const parentOf = (span: ReadableSpan): string | undefined => span.parentSpanContext?.spanId
/** The span of `spans` named `name` in trace `traceId`. */
const named = (spans: ReadonlyArray<ReadableSpan>, name: string) => spans.filter((s) => s.name === name)

/** Every attribute value of every span, as text. */
const attributeText = (spans: ReadonlyArray<ReadableSpan>) => spans.map((s) => JSON.stringify(s.attributes)).join("\n")

beforeAll(() => {
  dbUrl = freshDatabase("tracing")
})

afterAll(() => {
  dropDatabase(dbUrl)
})

describe("request traces (always_on)", () => {
  let server: InProcessServer
  let key: { readonly key: string; readonly key_id: string }

  beforeAll(async () => {
    server = await startInProcess({ OTEL_TRACES_SAMPLER: "always_on" })
    key = await createKey(server)
  }, 120_000)

  afterAll(async () => {
    await server?.stop()
  })

  it("gives a /price request one trace: the edge's server span, with the key check, the limit and the lookup as its children", async () => {
    server.spans.reset()
    const r = await fetch(`${server.baseUrl}/price?asset=BTC`, { headers: { "x-api-key": key.key, "x-request-id": "trace-test-1" } })
    expect(r.status).toBe(200)
    await r.arrayBuffer()
    const edge = named(server.spans.getFinishedSpans(), "GET /price")
    expect(edge).toHaveLength(1)
    const root = edge[0]!
    const traceId = hex(root).traceId
    const trace = server.spans.getFinishedSpans().filter((s) => hex(s).traceId === traceId)
    expect(parentOf(root)).toBeUndefined()
    expect(root.kind).toBe(1) // SERVER
    expect(root.attributes).toMatchObject({
      "http.request.method": "GET", "url.path": "/price", "http.route": "/price", "http.response.status_code": 200,
      "request.id": "trace-test-1", "tb.code": "OK", "tb.api_key.id": key.key_id
    })
    for (const name of ["ApiKeys.authenticate", "RateLimiter.admit", "PriceCache.lookup"]) {
      const child = named(trace, name)
      expect(child, name).toHaveLength(1)
      expect(parentOf(child[0]!), name).toBe(hex(root).spanId)
    }
    expect(named(trace, "ApiKeys.authenticate")[0]!.attributes).toMatchObject({ "tb.key_cache": "hit", "tb.auth": "Authorized", "tb.api_key.id": key.key_id })
    expect(named(trace, "RateLimiter.admit")[0]!.attributes).toMatchObject({ "tb.admission": "Admitted" })
    expect(named(trace, "PriceCache.lookup")[0]!.attributes).toMatchObject({ "tb.assets": 1, "tb.found": 1, "tb.quote": "USD" })
    // Children start and end within the edge's span.
    for (const s of trace) expect(s.startTime[0] * 1e9 + s.startTime[1]).toBeGreaterThanOrEqual(root.startTime[0] * 1e9 + root.startTime[1])
    expect(attributeText(server.spans.getFinishedSpans())).not.toContain(key.key)
  })

  it("continues the caller's trace from a W3C traceparent header", async () => {
    server.spans.reset()
    const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
    const callerSpan = "00f067aa0ba902b7"
    const r = await fetch(`${server.baseUrl}/prices?assets=BTC,ETH`, { headers: { "x-api-key": key.key, traceparent: `00-${callerTrace}-${callerSpan}-01` } })
    expect(r.status).toBe(200)
    await r.arrayBuffer()
    const root = named(server.spans.getFinishedSpans(), "GET /prices")[0]
    expect(root).toBeDefined()
    expect(hex(root!).traceId).toBe(callerTrace)
    expect(parentOf(root!)).toBe(callerSpan)
    const trace = server.spans.getFinishedSpans().filter((s) => hex(s).traceId === callerTrace)
    expect(trace.map((s) => s.name).sort()).toEqual(["ApiKeys.authenticate", "GET /prices", "PriceCache.lookup", "RateLimiter.admit"])
    expect(named(trace, "PriceCache.lookup")[0]!.attributes["tb.assets"]).toBe(2)
  })

  it("traces refusals too: an unknown key's trace has the key check with its database lookup, no price lookup, and never the key", async () => {
    server.spans.reset()
    const wrong = "tb_" + "x".repeat(43)
    const r = await fetch(`${server.baseUrl}/price?asset=BTC`, { headers: { authorization: `Bearer ${wrong}` } })
    expect(r.status).toBe(401)
    await r.arrayBuffer()
    const spans = server.spans.getFinishedSpans()
    const root = named(spans, "GET /price")[0]!
    expect(root.attributes["http.response.status_code"]).toBe(401)
    const trace = spans.filter((s) => hex(s).traceId === hex(root).traceId)
    expect(trace.map((s) => s.name)).not.toContain("PriceCache.lookup")
    const check = named(trace, "ApiKeys.authenticate")[0]!
    expect(parentOf(check)).toBe(hex(root).spanId)
    expect(check.attributes).toMatchObject({ "tb.key_cache": "miss", "tb.code": "INVALID_API_KEY" })
    // The database lookup a key this node has not seen pays joins the request's trace.
    expect(parentOf(named(trace, "ApiKeys.authenticateSlow")[0]!)).toBe(hex(check).spanId)
    expect(attributeText(spans)).not.toContain(wrong)
  })

  it("gives a UDP price request a trace of its own, with the same children", async () => {
    server.spans.reset()
    const reply = await udpRequest(server.udpPort, `v1 price ${key.key} BTC r1`)
    expect(reply).toContain("\"ok\":true")
    const deadline = Date.now() + 2_000
    while (named(server.spans.getFinishedSpans(), "UDP price").length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    const root = named(server.spans.getFinishedSpans(), "UDP price")[0]
    expect(root).toBeDefined()
    expect(parentOf(root!)).toBeUndefined()
    expect(root!.attributes).toMatchObject({ "network.transport": "udp", "tb.code": "OK", "tb.api_key.id": key.key_id })
    const trace = server.spans.getFinishedSpans().filter((s) => hex(s).traceId === hex(root!).traceId)
    for (const name of ["ApiKeys.authenticate", "RateLimiter.admit", "PriceCache.lookup"]) {
      expect(parentOf(named(trace, name)[0]!), name).toBe(hex(root!).spanId)
    }
    expect(attributeText(server.spans.getFinishedSpans())).not.toContain(key.key)
  })
})

/** A few price requests on a server started with `sampler`; the spans it made for them. */
const priceSpansWith = async (sampler: Readonly<Record<string, string>> | undefined) => {
  const server = await startInProcess(sampler)
  try {
    const key = await createKey(server)
    server.spans.reset()
    for (let i = 0; i < 5; i++) {
      const r = await fetch(`${server.baseUrl}/price?asset=BTC`, { headers: { "x-api-key": key.key } })
      expect(r.status).toBe(200)
      await r.arrayBuffer()
    }
    return server.spans.getFinishedSpans().filter((s) => ["GET /price", "ApiKeys.authenticate", "RateLimiter.admit", "PriceCache.lookup"].includes(s.name))
  } finally {
    await server.stop()
  }
}

describe("sampling (OTEL_TRACES_SAMPLER)", () => {
  it("always_off: no spans at all, not even the HttpApi's", async () => {
    const server = await startInProcess({ OTEL_TRACES_SAMPLER: "always_off" })
    try {
      await createKey(server)
      const r = await fetch(`${server.baseUrl}/price?asset=BTC`)
      await r.arrayBuffer()
      expect(server.spans.getFinishedSpans().map((s) => s.name)).toEqual([])
    } finally {
      await server.stop()
    }
  }, 120_000)

  it("traceidratio 0: no price spans", async () => {
    expect(await priceSpansWith({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0" })).toEqual([])
  }, 120_000)

  it("tracing off (no RequestTracing): the price path makes no span", async () => {
    expect(await priceSpansWith(undefined)).toEqual([])
  }, 120_000)
})

describe("the sampler's decisions", () => {
  const sampler = (name: string, arg?: string): Sampler => {
    const made = makeSampler(name, arg)
    if (typeof made === "string") throw new Error(made)
    return made
  }
  const remote = (sampled: boolean, traceId = "4bf92f3577b34da6a3ce929d0e0e4736") => Tracer.externalSpan({ traceId, spanId: "00f067aa0ba902b7", sampled })
  const local = (sampled: boolean) => new Tracer.NativeSpan({
    name: "parent", parent: Option.none(), annotations: Context.empty(), links: [], startTime: 0n, kind: "internal", sampled
  })

  it("parentbased_*: a remote caller's sampled flag decides, whatever the ratio", () => {
    const s = sampler("parentbased_traceidratio", "0")
    expect(s.sample(undefined)).toBe(false)
    expect(s.sample(remote(true))).toBe(true)
    expect(s.sample(remote(false))).toBe(false)
    expect(sampler("parentbased_always_off").sample(remote(true))).toBe(true)
    expect(sampler("parentbased_always_on").sample(remote(false))).toBe(false)
    expect(sampler("parentbased_always_on").sample(undefined)).toBe(true)
  })

  it("a child of a span of this process follows it, so a trace is kept or dropped whole", () => {
    for (const name of ["always_on", "traceidratio", "parentbased_always_on"]) {
      expect(sampler(name, "0.5").sample(local(false)), name).toBe(false)
      expect(sampler(name, "0.5").sample(local(true)), name).toBe(true)
    }
  })

  it("traceidratio: roots kept at about the ratio; a remote trace decided by its id, the same way every time", () => {
    const s = sampler("traceidratio", "0.25")
    let kept = 0
    for (let i = 0; i < 20_000; i++) if (s.sample(undefined)) kept++
    expect(kept / 20_000).toBeGreaterThan(0.22)
    expect(kept / 20_000).toBeLessThan(0.28)
    expect(s.sample(remote(false, "0".repeat(18) + "00000000000001"))).toBe(true)
    expect(s.sample(remote(true, "0".repeat(18) + "ffffffffffffff"))).toBe(false)
    expect(sampler("always_on").sample(remote(false))).toBe(true)
    expect(sampler("always_off").sample(remote(true))).toBe(false)
  })

  it("refuses an unknown sampler or a ratio outside [0, 1]; defaults to parentbased_always_on", () => {
    expect(makeSampler("sometimes", undefined)).toMatch(/OTEL_TRACES_SAMPLER/)
    expect(makeSampler("traceidratio", "1.5")).toMatch(/OTEL_TRACES_SAMPLER_ARG/)
    expect(makeSampler("traceidratio", "abc")).toMatch(/OTEL_TRACES_SAMPLER_ARG/)
    expect((makeSampler(undefined, undefined) as Sampler).name).toBe("parentbased_always_on")
    expect((makeSampler("TraceIdRatio", "0.01") as Sampler).ratio).toBe(0.01)
  })

  it("reads traceparent as W3C Trace Context says, refusing what is malformed", () => {
    expect(parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).toMatchObject({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", sampled: true })
    expect(parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")?.sampled).toBe(false)
    expect(parseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")?.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736")
    for (const bad of [
      undefined, "", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "00-" + "0".repeat(32) + "-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0".repeat(16) + "-01", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
    ]) expect(parseTraceparent(bad), String(bad)).toBeUndefined()
  })
})

describe("when traces are on", () => {
  it("only with an OTLP endpoint, the otlp traces exporter (the default) and the SDK enabled", () => {
    const on = (env: Record<string, string>) => tracesExported(otelEnvironment(env))
    expect(on({})).toBe(false)
    expect(on({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" })).toBe(true)
    expect(on({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector:4318/v1/traces" })).toBe(true)
    expect(on({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_TRACES_EXPORTER: "none" })).toBe(false)
    expect(on({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_TRACES_EXPORTER: "console, otlp" })).toBe(true)
    expect(on({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_SDK_DISABLED: "true" })).toBe(false)
  })
})
