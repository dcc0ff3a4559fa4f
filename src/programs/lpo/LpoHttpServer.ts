import { Effect, Layer } from "effect"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import { type FastHttpServer, type FastRoute, makeFastHttpServer, type Reply } from "../../http/fastHttp.ts"
import { latencyUs, makeSendEnvelope, nodeReply, parseRequest, readJsonBody, type RequestInfo, requestInfo, type SendEnvelope, wantedHeadersFrom } from "../../http/httpKit.ts"
import { AppConfig } from "../../config/AppConfig.ts"
import { withModule } from "../../layers/Logging.ts"
import { AdminToken } from "../../services/AdminToken.ts"
import { ApiKeys } from "../../services/ApiKeys.ts"
import { FeedStatus } from "../../services/FeedStatus.ts"
import { Params } from "../../services/Params.ts"
import { PriceCache } from "../../services/PriceCache.ts"
import { Probes } from "../../services/Probes.ts"
import { RateLimiter } from "../../services/RateLimiter.ts"
import { RuntimeStats } from "../../services/RuntimeStats.ts"
import { ServerInfo } from "../../services/ServerInfo.ts"
import { UsageSink } from "../../services/UsageSink.ts"
import { adminRoute, type AdminServices } from "../admin/adminRoutes.ts"
import { handlePriceHttp, type PriceHttpDeps } from "./priceHttp.ts"

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

/**
 * LPO over HTTP. The price routes run as plain synchronous code over the services' in-memory
 * state (Effect composes and supervises the server, but stays off the per-request path: the hot
 * path is measured against a bare node:http server). Admin routes run as Effects.
 */
export const LpoHttpServer = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* AppConfig
  const meta = yield* ServerInfo
  const context = yield* Effect.context<AdminServices>()
  const sendEnvelope = makeSendEnvelope(meta)
  const deps: PriceHttpDeps = {
    apiKeys: yield* ApiKeys, limiter: yield* RateLimiter, prices: yield* PriceCache, params: yield* Params,
    stats: yield* RuntimeStats, usage: yield* UsageSink, meta, sendEnvelope
  }
  const admin = yield* AdminToken
  const probes = yield* Probes
  const feeds = yield* FeedStatus
  const runAdmin = Effect.runPromiseWith(context)
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
    const ready = data.prices.warm && data.storage.database && !draining
    sendEnvelope(reply, info, "LPO", readiness && !ready ? "SYSTEM_BUSY" : "OK", JSON.stringify(data))
  }

  const handleAdmin = (req: IncomingMessage, res: ServerResponse, info: RequestInfo) => {
    const finish = (code: Parameters<SendEnvelope>[3], data: unknown, status?: number, message?: string) => {
      const bytes = sendEnvelope(nodeReply(res), info, "ADMIN", code, JSON.stringify(data ?? null), undefined, status, message)
      deps.usage.record({
        requestId: info.requestId, apiKeyId: undefined, service: "ADMIN", protocol: "http", endpoint: info.path,
        code, status, latencyUs: latencyUs(info), clientIp: info.clientIp, bytesOut: bytes, createdAt: info.receivedAt
      })
    }
    const given = info.headers.adminToken
    if (given === undefined) return finish("MISSING_API_KEY", { error: "X-Admin-Token header required" })
    if (!admin.matches(given)) return finish("INVALID_API_KEY", { error: "invalid admin token" })
    const route = adminRoute(info.method, info.path)
    if (route === undefined) return finish("NOT_FOUND", null)
    // A GET route reads its query string where a POST route reads its body.
    void (info.method === "POST" ? readJsonBody(req) : Promise.resolve(Object.fromEntries(info.query)))
      .then((body) =>
        body === undefined
          ? finish("BAD_REQUEST", { error: "body must be JSON" })
          : runAdmin(route(body).pipe(withModule("admin"))).then((r) => finish(r.code, r.data, r.status, r.message))
      )
      .catch((cause: unknown) => {
        Effect.runFork(Effect.logError("admin request died", String(cause)).pipe(withModule("admin")))
        if (!res.headersSent) finish("INTERNAL", null)
      })
  }

  /** The GET routes both servers answer: price, prices, health, readiness. */
  const getRoute = (path: string): ((reply: Reply, info: RequestInfo) => void) | undefined => {
    switch (path) {
      case "/price": return (reply, info) => handlePriceHttp(deps, reply, info, false)
      case "/prices": return (reply, info) => handlePriceHttp(deps, reply, info, true)
      case "/health": return (reply, info) => health(reply, info, false)
      case "/ready": return (reply, info) => health(reply, info, true)
      default: return undefined
    }
  }
  const countRequest = () => {
    deps.stats.values[COUNTER.requests_total]!++
    deps.stats.values[COUNTER.http_requests]!++
  }

  // The hot path: GET routes on the fast server. Everything else goes to node:http.
  const fastRoute: FastRoute = (request) => {
    const q = request.target.indexOf("?")
    const handler = getRoute(q === -1 ? request.target : request.target.slice(0, q))
    if (handler === undefined) return undefined
    return (reply) => {
      countRequest()
      handler(reply, requestInfo(request.method, request.target, wantedHeadersFrom(request.rawHeaders), request.clientIp, request.startedAt, request.keyMemo))
    }
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    inFlight++
    res.once("close", () => void inFlight--)
    if (draining) res.setHeader("connection", "close")
    const info = parseRequest(req)
    countRequest()
    const handler = info.method === "GET" ? getRoute(info.path) : undefined
    if (handler !== undefined) return handler(nodeReply(res), info)
    if (info.path.startsWith("/admin/")) return handleAdmin(req, res, info)
    deps.stats.values[COUNTER.client_errors]!++
    const bytes = sendEnvelope(nodeReply(res), info, "LPO", "NOT_FOUND", "null")
    deps.usage.record({
      requestId: info.requestId, apiKeyId: undefined, service: "LPO", protocol: "http", endpoint: info.path.slice(0, 200),
      code: "NOT_FOUND", latencyUs: latencyUs(info), clientIp: info.clientIp, bytesOut: bytes, createdAt: info.receivedAt
    })
  }

  const fallback = createServer({ keepAliveTimeout: 65_000, requestTimeout: 30_000 }, onRequest)
  const fast = makeFastHttpServer({ route: fastRoute, fallback })
  const port = yield* listenHttp(fast, fallback, config.lpoHttpPort, config.bindHost, config.shutdownTimeoutMs / 2, () => inFlight).pipe(
    Effect.tap(() => Effect.addFinalizer(() => Effect.sync(() => void (draining = true))))
  )
  yield* Effect.logInfo("LPO HTTP listening", { port, host: config.bindHost }).pipe(withModule("lpo-http"))
}))
