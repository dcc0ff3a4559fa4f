import { Context, Effect, Exit, Layer, Option } from "effect"
import * as Tracer from "effect/Tracer"
import type { Sampler } from "./sampler.ts"

/**
 * Tracing of the raw price paths (HTTP fast path, UDP), which run as plain callbacks outside any
 * fiber: their spans are made directly through the Tracer the layers were built with.
 *
 * Undefined (the default) when traces go nowhere: the listeners then hold no tracer at all and
 * each request pays one `undefined` check.
 */
export interface RequestTracingShape {
  /** The exporting tracer, without the sampler: request spans are sampled once, at the edge. */
  readonly tracer: Tracer.Tracer
  readonly sampler: Sampler
}

export const RequestTracing = Context.Reference<RequestTracingShape | undefined>("trinity-beast/RequestTracing", {
  defaultValue: () => undefined
})

/**
 * `inner` behind a sampler: a span sampled out becomes a native span (kept in memory while it runs,
 * never exported, whatever backend `inner` is), and its children follow it.
 */
export const samplingTracer = (inner: Tracer.Tracer, sampler: Sampler): Tracer.Tracer =>
  Tracer.make({
    span(options) {
      if (options.sampled && sampler.sample(Option.getOrUndefined(options.parent))) return inner.span(options)
      return new Tracer.NativeSpan({ ...options, sampled: false })
    },
    ...(inner.context === undefined ? {} : { context: inner.context })
  })

/**
 * On top of a layer that provides the exporting Tracer: the same tracer behind `sampler`, for every
 * Effect span, and RequestTracing for the raw listeners.
 */
export const layerRequestTracing = (sampler: Sampler): Layer.Layer<never> =>
  Layer.effectContext(Effect.gen(function*() {
    const inner = yield* Effect.tracer
    return Context.make(Tracer.Tracer, samplingTracer(inner, sampler)).pipe(
      Context.add(RequestTracing, { tracer: inner, sampler })
    )
  }))

/** Now, in nanoseconds since the epoch (span times). */
const nowNanos = (): bigint => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1_000)) * 1_000n

const W3C_TRACE_ID = /^[0-9a-f]{32}$/
const W3C_SPAN_ID = /^[0-9a-f]{16}$/
const ZERO_TRACE_ID = "0".repeat(32)
const ZERO_SPAN_ID = "0".repeat(16)

/**
 * A W3C `traceparent` header (`00-<trace id>-<parent id>-<flags>`) as the remote parent; undefined
 * when absent or malformed (the request then starts a trace of its own, as the spec asks). Later
 * versions are read by their first four fields, as the spec says a version-00 parser should.
 */
export const parseTraceparent = (header: string | undefined): Tracer.ExternalSpan | undefined => {
  if (header === undefined) return undefined
  const parts = header.trim().split("-")
  if (parts.length < 4) return undefined
  const [version, traceId, spanId, flags] = parts as [string, string, string, string]
  if (version.length !== 2 || version === "ff" || (version === "00" && parts.length !== 4)) return undefined
  if (!W3C_TRACE_ID.test(traceId) || !W3C_SPAN_ID.test(spanId) || !/^[0-9a-f]{2}$/.test(flags)) return undefined
  if (traceId === ZERO_TRACE_ID || spanId === ZERO_SPAN_ID) return undefined
  return Tracer.externalSpan({ traceId, spanId, sampled: (Number.parseInt(flags, 16) & 1) === 1 })
}

/** A span's failure, for a 5xx or a refusal the server is to blame for. */
class SpanFailure extends Error {
  override readonly name = "ResponseError"
}

/**
 * One sampled request: its server span and the tracer its children come from. Made only for a
 * request the sampler kept, so nothing here runs for the others.
 */
export class RequestTrace {
  readonly tracer: Tracer.Tracer
  readonly server: Tracer.Span
  constructor(tracer: Tracer.Tracer, server: Tracer.Span) {
    this.tracer = tracer
    this.server = server
  }

  /** A child of the server span, started now. */
  child(name: string): Tracer.Span {
    return this.tracer.span({
      name, parent: Option.some(this.server), annotations: Context.empty(), links: [], startTime: nowNanos(), kind: "internal", root: false, sampled: true
    })
  }

  /** End a span now; `failure` marks it failed (the span's status is then ERROR with that message). */
  end(span: Tracer.Span, failure?: string): void {
    span.end(nowNanos(), failure === undefined ? Exit.void : Exit.fail(new SpanFailure(failure)))
  }
}

export interface RequestSpans {
  /**
   * The trace of an HTTP request served on the raw path (`GET /price`), continuing `traceparent`
   * when it is valid; undefined when the sampler leaves the request out.
   */
  readonly http: (method: string, route: string, path: string, requestId: string, clientIp: string, traceparent: string | undefined) => RequestTrace | undefined
  /** The trace of a UDP datagram (no header to continue: each is a root). */
  readonly udp: (clientIp: string, clientPort: number) => RequestTrace | undefined
  /** End a server span with the HTTP status answered (5xx marks it failed, as OpenTelemetry's HTTP conventions ask). */
  readonly endHttp: (trace: RequestTrace, status: number) => void
}

/** Spans for the raw listeners, or undefined when tracing is off (RequestTracing unset). */
export const makeRequestSpans = (tracing: RequestTracingShape | undefined): RequestSpans | undefined => {
  if (tracing === undefined) return undefined
  const { tracer, sampler } = tracing
  const server = (name: string, parent: Tracer.ExternalSpan | undefined): Tracer.Span =>
    tracer.span({
      name,
      parent: parent === undefined ? Option.none() : Option.some(parent),
      annotations: Context.empty(),
      links: [],
      startTime: nowNanos(),
      kind: "server",
      root: parent === undefined,
      sampled: true
    })
  return {
    http: (method, route, path, requestId, clientIp, traceparent) => {
      const parent = parseTraceparent(traceparent)
      if (!sampler.sample(parent)) return undefined
      const span = server(`${method} ${route}`, parent)
      span.attribute("http.request.method", method)
      span.attribute("url.scheme", "http")
      span.attribute("url.path", path)
      span.attribute("http.route", route)
      span.attribute("network.protocol.name", "http")
      span.attribute("client.address", clientIp)
      span.attribute("request.id", requestId)
      return new RequestTrace(tracer, span)
    },
    udp: (clientIp, clientPort) => {
      if (!sampler.sample(undefined)) return undefined
      const span = server("UDP price", undefined)
      span.attribute("network.transport", "udp")
      span.attribute("client.address", clientIp)
      span.attribute("client.port", clientPort)
      return new RequestTrace(tracer, span)
    },
    endHttp: (trace, status) => {
      trace.server.attribute("http.response.status_code", status)
      trace.end(trace.server, status >= 500 ? `HTTP ${status}` : undefined)
    }
  }
}
