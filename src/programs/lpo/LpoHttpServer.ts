import { Config, Effect, Layer, Schedule } from "effect"
import { HttpServerResponse } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { Socket } from "node:net"
import type { Duplex } from "node:stream"
import { routesOf } from "../../api/routeTable.ts"
import { TrinityApi } from "../../api/TrinityApi.ts"
import { corsPolicyOf } from "../../domain/cors.ts"
import type { ServiceName } from "../../domain/envelope.ts"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import { type FastHttpServer, type FastRoute, makeFastHttpServer, type Reply } from "../../layers/http/fastHttp.ts"
import type { RequestLine } from "../../layers/http/httpHead.ts"
import { removeListenerRecord, writeListenerRecord } from "../../layers/http/listenerFile.ts"
import { makeRequestSpans, RequestTracing } from "../../layers/tracing/requestTracing.ts"
import { makeSendEnvelope, nodeReply, parseRequest, type RequestInfo, requestInfo, wantedHeadersFrom } from "../../layers/http/httpKit.ts"
import { AppConfig } from "../../config/AppConfig.ts"
import { cannotListen } from "../../services/StartupError.ts"
import { withModule } from "../../layers/Logging.ts"
import { ApiKeys } from "../../services/ApiKeys.ts"
import { Cache } from "../../services/Cache.ts"
import { FeedStatus } from "../../services/FeedStatus.ts"
import { Params } from "../../services/Params.ts"
import { PriceCache } from "../../services/PriceCache.ts"
import { Probes } from "../../services/Probes.ts"
import { RateLimiter } from "../../services/RateLimiter.ts"
import { Metrics } from "../../services/Metrics.ts"
import { RuntimeStats } from "../../services/RuntimeStats.ts"
import { ServerInfo } from "../../services/ServerInfo.ts"
import { UsageSink } from "../../services/UsageSink.ts"
import { adminAuthLayer, adminHandlers } from "../admin/adminApi.ts"
import { makeApiListener } from "../http/apiListener.ts"
import { lrsOnOtherListener } from "../lrs/lrsElsewhere.ts"
import { webhookHandlers } from "../webhook/webhookApi.ts"
import { receiptHandlers } from "../receipt/receiptApi.ts"
import { docsHandlers } from "../http/docsHandlers.ts"
import { makeEdge } from "../http/edge.ts"
import { makeKeySlots } from "../stream/keySlots.ts"
import { makeStreamHub } from "../stream/streamHub.ts"
import { handlePriceHttp, type PriceHttpDeps } from "./priceHttp.ts"
import { readinessProblem } from "./readiness.ts"

/**
 * Listen with the fast server in front and node:http behind it; on scope close: stop accepting,
 * let in-flight requests finish (closing keep-alive connections as they go idle), then close what
 * is left.
 */
export const listenHttp = (fast: FastHttpServer, fallback: Server, port: number, host: string, drainMs: number, inFlight: () => number) =>
  Effect.acquireRelease(
    Effect.callback<number, Error>((resume) => {
      const onError = (e: Error) => resume(Effect.fail(e))
      fast.server.once("error", onError)
      fast.server.listen(port, host, () => {
        fast.server.off("error", onError)
        const address = fast.server.address()
        resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : port))
      })
    }),
    () =>
      Effect.promise(async () => {
        const closed = new Promise<void>((resolve) => fast.server.close(() => resolve()))
        fast.drain()
        fallback.closeIdleConnections()
        const deadline = Date.now() + drainMs
        while (inFlight() + fast.inFlight() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
        fallback.closeAllConnections()
        fast.closeAll()
        await closed
      })
  )

/** The routes the fast path answers itself (GET and HEAD); declared in TrinityApi's lpo group like every other route. */
export const FAST_PATH_ROUTES = ["/price", "/prices", "/health", "/ready"] as const

/** The spec's request deadlines ("HTTP edge"): a head within 10 s, a body within 30 s of its head. */
const HEAD_DEADLINE_MS = 10_000
const BODY_DEADLINE_MS = 30_000

/** An answer from the synchronous route code as an HttpServerResponse (headers as a flat list). */
const responseOf = (status: number, headers: ReadonlyArray<string | number>, body: string) => {
  const record: Record<string, string> = {}
  for (let i = 0; i + 1 < headers.length; i += 2) record[String(headers[i]).toLowerCase()] = String(headers[i + 1])
  return HttpServerResponse.text(body, { status, headers: record, contentType: record["content-type"] ?? "application/json; charset=utf-8" })
}

/**
 * LPO over HTTP. The price routes run as plain synchronous code over the services' in-memory
 * state on the raw fast path (Effect composes and supervises the server, but stays off the
 * per-request path: the hot path is measured against a bare node:http server). Every other route
 * is served by the HttpApi definition (src/api/TrinityApi.ts) on the node:http server behind it.
 */
export const LpoHttpServer = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* AppConfig
  const meta = yield* ServerInfo
  const cors = corsPolicyOf(yield* Config.String("CORS_ORIGINS").pipe(Config.withDefault("")))
  const sendEnvelope = makeSendEnvelope(meta, cors)
  const deps: PriceHttpDeps = {
    apiKeys: yield* ApiKeys, limiter: yield* RateLimiter, prices: yield* PriceCache, params: yield* Params,
    stats: yield* RuntimeStats, usage: yield* UsageSink, meta, sendEnvelope
  }
  const probes = yield* Probes
  const cache = yield* Cache
  const feeds = yield* FeedStatus
  // Undefined when traces go nowhere: the routes below then make no span and read no clock for one.
  const spans = makeRequestSpans(yield* RequestTracing)
  let inFlight = 0
  let draining = false

  const health = (reply: Reply, info: RequestInfo, readiness: boolean) => {
    const now = Date.now()
    const exchanges = feeds.snapshot(now)
    const ages = exchanges.map((e) => e.lastMessageAgeMs).filter((a): a is number => a !== undefined)
    const prices = deps.prices.snapshot(now)
    const data = {
      feeds: { mode: feeds.mode, connected: exchanges.filter((e) => e.connected).length, total: exchanges.length, freshest_age_ms: ages.length > 0 ? Math.min(...ages) : null },
      prices: { assets: prices.assets, fresh_assets: prices.freshAssets, warm: prices.warm },
      storage: { database: probes.database(), cache: probes.cache() },
      draining
    }
    const problem = readinessProblem(data)
    sendEnvelope(reply, info, "LPO", readiness && problem !== undefined ? "SYSTEM_BUSY" : "OK", JSON.stringify(problem === undefined ? data : { ...data, problem }))
  }

  /**
   * A price request, in a trace of its own when tracing is on and the sampler keeps it: the server
   * span ends once the answer is written. (Probes are not traced: a load balancer's checks would
   * fill the traces.)
   */
  const priceRoute = (route: "/price" | "/prices", many: boolean) => (reply: Reply, info: RequestInfo) => {
    const trace = spans?.http(info.method, route, info.path, info.requestId, info.clientIp, info.headers.traceparent)
    if (trace === undefined) return handlePriceHttp(deps, reply, info, many)
    handlePriceHttp(deps, (status, headers, body) => {
      try {
        reply(status, headers, body)
      } finally {
        spans!.endHttp(trace, status)
      }
    }, info, many, trace)
  }
  const priceOne = priceRoute("/price", false)
  const priceMany = priceRoute("/prices", true)

  /** The GET (and HEAD) routes both servers answer: price, prices, health, readiness. */
  const getRoute = (path: string): ((reply: Reply, info: RequestInfo) => void) | undefined => {
    switch (path) {
      case "/price": return priceOne
      case "/prices": return priceMany
      case "/health": return (reply, info) => health(reply, info, false)
      case "/ready": return (reply, info) => health(reply, info, true)
      default: return undefined
    }
  }
  const countRequest = () => {
    deps.stats.values[COUNTER.requests_total]!++
    deps.stats.values[COUNTER.http_requests]!++
  }

  // The HttpApi side. The price routes' handlers are the same synchronous code as on the fast path
  // (reached only if a price request ever gets past the fallback's own check below).
  const edge = makeEdge(meta)
  const lpoHandlers = HttpApiBuilder.group(TrinityApi, "lpo", (handlers) => {
    const replay = (path: string) => ({ request }: { readonly request: { readonly source: object } }) =>
      Effect.callback<HttpServerResponse.HttpServerResponse>((resume) => {
        const state = edge.of(request.source)
        if (state === undefined) return resume(Effect.die(new Error("price route without the listener's state")))
        if (path === "/price" || path === "/prices") state.usageRecorded = true
        getRoute(path)!((status, headers, body) => resume(Effect.succeed(responseOf(status, headers, body))), state.info)
      })
    // The stream routes are taken before the HttpApi (onRequest, 'upgrade'): these never run.
    const streamElsewhere = () => Effect.die(new Error("stream route reached the HttpApi"))
    return handlers.handleRaw("price", replay("/price")).handleRaw("prices", replay("/prices"))
      .handleRaw("health", replay("/health")).handleRaw("ready", replay("/ready"))
      .handleRaw("ws", streamElsewhere).handleRaw("stream", streamElsewhere)
  })
  const apiLayer = HttpApiBuilder.layer(TrinityApi).pipe(
    Layer.provide([lpoHandlers, adminHandlers(edge), docsHandlers(meta.version), lrsOnOtherListener(edge), webhookHandlers(edge), receiptHandlers(edge)])
  )
  const serviceOf = (path: string): ServiceName =>
    path.startsWith("/admin/") ? "ADMIN"
      : path === "/webhook" || path.startsWith("/webhook/") ? "WEBHOOK"
      : path === "/receipt" || path === "/stripe/webhook" || path === "/checkout" ? "RECEIPT"
      : "LPO"
  const serveApi = yield* makeApiListener(apiLayer, { edge, routes: routesOf(TrinityApi), cors, usage: deps.usage, serviceOf }).pipe(
    Effect.provide(adminAuthLayer(edge))
  )

  // The hot path: GET and HEAD price and probe routes on the fast server. Everything else goes to node:http.
  const fastRoute: FastRoute = (request) => {
    const q = request.target.indexOf("?")
    const handler = getRoute(q === -1 ? request.target : request.target.slice(0, q))
    if (handler === undefined) return undefined
    return (reply) => {
      countRequest()
      handler(reply, requestInfo(request.method, request.target, wantedHeadersFrom(request.rawHeaders), request.clientIp, request.startedAt, request.keyMemo))
    }
  }

  // The partner stream: GET /ws (WebSocket upgrade) and GET /stream (SSE, a long response that
  // does not count as in flight: shutdown ends it with a RECONNECT rather than waiting for it).
  // Connections per key are counted across the cluster through the shared cache (Valkey).
  const slots = yield* Effect.acquireRelease(
    Effect.sync(() => makeKeySlots(cache, meta.node, () => deps.params.int("stream_max_connections_per_key"))),
    (s) => Effect.sync(s.close)
  )
  const streams = makeStreamHub(deps, undefined, slots)
  ;(yield* Metrics).streamHub(streams.stats)
  const isStreamRoute = (info: RequestInfo) => (info.method === "GET" || info.method === "HEAD") && (info.path === "/stream" || info.path === "/ws")

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const info = parseRequest(req)
    countRequest()
    if (isStreamRoute(info)) return streams.request(req, res, info)
    inFlight++
    res.once("close", () => void inFlight--)
    if (draining) res.setHeader("connection", "close")
    const handler = info.method === "GET" || info.method === "HEAD" ? getRoute(info.path) : undefined
    if (handler !== undefined) return handler(nodeReply(res), info)
    serveApi(req, res, info)
  }

  /** A request the parser refused: 400 (or 431) with the envelope when the request line was readable. */
  const rejection = (status: 400 | 431, line: RequestLine) => {
    deps.stats.values[COUNTER.client_errors]!++
    let answer: { headers: ReadonlyArray<string | number>; body: string } | undefined
    const info = requestInfo(line.method, line.target.startsWith("/") ? line.target : "/", wantedHeadersFrom([]), "", performance.now())
    sendEnvelope((_, headers, body) => void (answer = { headers, body }), info, serviceOf(info.path), "BAD_REQUEST", JSON.stringify({ error: status === 431 ? "request head too large" : "malformed request" }), undefined, status)
    return answer
  }

  // The fallback never listens (the fast server accepts and hands connections over), so node's own
  // request timers never run: the fast server enforces the head and body deadlines for both.
  // Its keep-alive hint matches the head deadline, after which an idle connection is closed.
  const fallback = createServer({ keepAliveTimeout: HEAD_DEADLINE_MS, shouldUpgradeCallback: streams.wantsUpgrade }, onRequest)
  fallback.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    countRequest()
    streams.upgrade(req, socket, head, parseRequest(req))
  })
  // node:http's own refusals (a handed-over connection whose bytes llhttp rejects): its request line
  // is not known here, so the answer is a bare 400 (431 for an oversized head) and close.
  fallback.on("clientError", (error: NodeJS.ErrnoException, socket: Socket) => {
    if (!socket.writable) return socket.destroy()
    deps.stats.values[COUNTER.client_errors]!++
    socket.end(error.code === "HPE_HEADER_OVERFLOW"
      ? "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
      : "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
  })
  const fast = makeFastHttpServer({
    route: fastRoute, fallback, rejection, headDeadlineMs: HEAD_DEADLINE_MS, bodyDeadlineMs: BODY_DEADLINE_MS, firstByteTimeoutMs: HEAD_DEADLINE_MS,
    maxConnections: () => deps.params.int("max_connections")
  })
  const port = yield* listenHttp(fast, fallback, config.lpoHttpPort, config.bindHost, config.shutdownTimeoutMs / 2, () => inFlight).pipe(
    Effect.mapError((e) => cannotListen("LPO_HTTP_PORT", config.bindHost, config.lpoHttpPort, e)),
    Effect.tap(() => Effect.addFinalizer(() => Effect.sync(() => void (draining = true)))),
    // Runs before the listener drains: stream connections are told to reconnect and closed.
    Effect.tap(() => Effect.addFinalizer(() => streams.shutdown))
  )
  yield* Effect.logInfo("LPO HTTP listening", { port, host: config.bindHost, docs: `http://127.0.0.1:${port}/docs` }).pipe(withModule("lpo-http"))
  yield* Effect.acquireRelease(
    Effect.promise(() => writeListenerRecord(config.dataDir, { pid: process.pid, port }).catch(() => undefined)),
    () => Effect.promise(() => removeListenerRecord(config.dataDir).catch(() => undefined))
  )

  // A first run with live feeds and no internet: say so in the log, not only in /ready.
  yield* Effect.gen(function*() {
    const now = Date.now()
    const exchanges = feeds.snapshot(now)
    if (feeds.mode !== "live" || exchanges.length === 0 || exchanges.some((e) => e.connected)) return
    yield* Effect.logWarning("no exchange feed has connected: live feeds need internet access to the exchanges. Offline, start with FEEDS=simulated (loopback simulators).").pipe(withModule("lpo-http"))
  }).pipe(Effect.delay("20 seconds"), Effect.repeat(Schedule.spaced("5 minutes")), Effect.forkScoped)
}))
