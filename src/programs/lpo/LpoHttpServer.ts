import { Context, Effect, Layer } from "effect"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import { type RequestInfo, latencyUs, parseRequest, readJsonBody, sendEnvelope, type ServerMeta } from "../../http/httpKit.ts"
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
import { UsageSink } from "../../services/UsageSink.ts"
import { adminRoute, type AdminServices } from "../admin/adminRoutes.ts"
import { usageRow } from "../usageRows.ts"
import { handlePriceHttp, type PriceHttpDeps } from "./priceHttp.ts"

export class ServerInfo extends Context.Service<ServerInfo, ServerMeta>()("tb/ServerInfo") {}

/** Listen, and on scope close: stop accepting, let in-flight requests finish, then close sockets. */
export const listenHttp = (server: Server, port: number, host: string, drainMs: number, inFlight: () => number) =>
  Effect.acquireRelease(
    Effect.callback<number, Error>((resume) => {
      const onError = (e: Error) => resume(Effect.fail(e))
      server.once("error", onError)
      server.listen(port, host, () => {
        server.off("error", onError)
        const address = server.address()
        resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : port))
      })
    }),
    () =>
      Effect.promise(async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()))
        server.closeIdleConnections()
        const deadline = Date.now() + drainMs
        while (inFlight() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
        server.closeAllConnections()
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
  const deps: PriceHttpDeps = {
    apiKeys: yield* ApiKeys, limiter: yield* RateLimiter, prices: yield* PriceCache, params: yield* Params,
    stats: yield* RuntimeStats, usage: yield* UsageSink, meta
  }
  const admin = yield* AdminToken
  const probes = yield* Probes
  const feeds = yield* FeedStatus
  const runAdmin = Effect.runPromiseWith(context)
  let inFlight = 0
  let draining = false

  const health = (res: ServerResponse, info: RequestInfo, readiness: boolean) => {
    const now = Date.now()
    const exchanges = feeds.snapshot(now)
    const ages = exchanges.map((e) => e.lastMessageAgeMs).filter((a): a is number => a !== undefined)
    const prices = deps.prices.snapshot(now)
    const data = {
      feeds: { mode: feeds.mode, connected: exchanges.filter((e) => e.connected).length, total: exchanges.length, freshest_age_ms: ages.length > 0 ? Math.min(...ages) : null },
      prices: { assets: prices.assets, fresh_assets: prices.freshAssets, warm: deps.prices.isWarm(now) },
      storage: { database: probes.database(), cache: probes.cache() },
      draining
    }
    const ready = data.prices.warm && data.storage.database && !draining
    sendEnvelope(res, info, meta, "LPO", readiness && !ready ? "SYSTEM_BUSY" : "OK", JSON.stringify(data))
  }

  const handleAdmin = (req: IncomingMessage, res: ServerResponse, info: RequestInfo) => {
    const finish = (code: Parameters<typeof sendEnvelope>[4], data: unknown, status?: number, message?: string) => {
      const bytes = sendEnvelope(res, info, meta, "ADMIN", code, JSON.stringify(data ?? null), undefined, status, message)
      deps.usage.record(usageRow(meta, {
        requestId: info.requestId, apiKeyId: undefined, service: "ADMIN", protocol: "http", endpoint: info.path,
        code, status, latencyUs: latencyUs(info), clientIp: info.clientIp, bytesOut: bytes, createdAt: info.receivedAt
      }))
    }
    const given = info.headers.adminToken
    if (given === undefined) return finish("MISSING_API_KEY", { error: "X-Admin-Token header required" })
    if (!admin.matches(given)) return finish("INVALID_API_KEY", { error: "invalid admin token" })
    const route = adminRoute(info.method, info.path, undefined)
    if (route === undefined) return finish("NOT_FOUND", null)
    // A GET route reads its query string where a POST route reads its body.
    void (info.method === "POST" ? readJsonBody(req) : Promise.resolve(Object.fromEntries(info.query))).then((body) => {
      if (body === undefined) return finish("BAD_REQUEST", { error: "body must be JSON" })
      const effect = adminRoute(info.method, info.path, body)
      if (effect === undefined) return finish("NOT_FOUND", null)
      return runAdmin(effect.pipe(withModule("admin"))).then(
        (r) => finish(r.code, r.data, r.status, r.message),
        () => finish("INTERNAL", null)
      )
    })
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    inFlight++
    res.once("close", () => void inFlight--)
    if (draining) res.setHeader("connection", "close")
    const info = parseRequest(req)
    const v = deps.stats.values
    v[COUNTER.requests_total]!++
    v[COUNTER.http_requests]!++
    if (info.method === "GET" && info.path === "/price") return handlePriceHttp(deps, req, res, info, false)
    if (info.method === "GET" && info.path === "/prices") return handlePriceHttp(deps, req, res, info, true)
    if (info.method === "GET" && info.path === "/health") return health(res, info, false)
    if (info.method === "GET" && info.path === "/ready") return health(res, info, true)
    if (info.path.startsWith("/admin/")) return handleAdmin(req, res, info)
    v[COUNTER.client_errors]!++
    sendEnvelope(res, info, meta, "LPO", "NOT_FOUND", "null")
  }

  const server = createServer({ keepAliveTimeout: 65_000, requestTimeout: 30_000 }, onRequest)
  const port = yield* listenHttp(server, config.lpoHttpPort, config.bindHost, config.shutdownTimeoutMs / 2, () => inFlight).pipe(
    Effect.tap(() => Effect.addFinalizer(() => Effect.sync(() => void (draining = true))))
  )
  yield* Effect.logInfo("LPO HTTP listening", { port, host: config.bindHost }).pipe(withModule("lpo-http"))
}))
