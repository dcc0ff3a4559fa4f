/**
 * The report server over HTTP on LRS_HTTP_PORT: a node:http server serving LrsListenerApi (the
 * report routes, /openapi.json and /docs) through the edge every listener shares (envelopes for
 * 404/405/malformed input, X-Request-Id, CORS, Retry-After, one usage row per answer). Reports are
 * not a hot path, so there is no raw fast path here.
 */
import { Config, Effect, Layer } from "effect"
import { HttpApiBuilder } from "effect/http-api"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { Socket } from "node:net"
import { routesOf } from "../../api/routeTable.ts"
import { LrsListenerApi } from "../../api/TrinityApi.ts"
import { AppConfig } from "../../config/AppConfig.ts"
import { corsPolicyOf } from "../../domain/cors.ts"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import { parseRequest } from "../../layers/http/httpKit.ts"
import { withModule } from "../../layers/Logging.ts"
import { Params } from "../../services/Params.ts"
import { RuntimeStats } from "../../services/RuntimeStats.ts"
import { ServerInfo } from "../../services/ServerInfo.ts"
import { cannotListen } from "../../services/StartupError.ts"
import { UsageSink } from "../../services/UsageSink.ts"
import { makeApiListener } from "../http/apiListener.ts"
import { docsHandlers } from "../http/docsHandlers.ts"
import { makeEdge } from "../http/edge.ts"
import { webhookOnOtherListener } from "../webhook/webhookElsewhere.ts"
import { receiptOnOtherListener } from "../receipt/receiptElsewhere.ts"
import { type LrsDeps, lrsHandlers } from "./lrsApi.ts"

/** The spec's request deadlines ("HTTP edge"): a head within 10 s, a body within 30 s of its head. */
const HEAD_DEADLINE_MS = 10_000
const BODY_DEADLINE_MS = 30_000

export const makeLrsHttpServer = (deps: LrsDeps) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const config = yield* AppConfig
    const meta = yield* ServerInfo
    const params = yield* Params
    const usage = yield* UsageSink
    const stats = yield* RuntimeStats
    const cors = corsPolicyOf(yield* Config.String("CORS_ORIGINS").pipe(Config.withDefault("")))
    const edge = makeEdge(meta)
    const apiLayer = HttpApiBuilder.layer(LrsListenerApi).pipe(Layer.provide([lrsHandlers(edge, deps), docsHandlers(meta.version), webhookOnOtherListener(edge), receiptOnOtherListener(edge)]))
    const serveApi = yield* makeApiListener(apiLayer, { edge, routes: routesOf(LrsListenerApi), cors, usage, serviceOf: () => "LRS" })

    let inFlight = 0
    let draining = false
    const onRequest = (req: IncomingMessage, res: ServerResponse) => {
      inFlight++
      stats.values[COUNTER.requests_total]!++
      stats.values[COUNTER.http_requests]!++
      res.once("close", () => void inFlight--)
      if (draining) res.setHeader("connection", "close")
      const info = parseRequest(req)
      serveApi(req, res, info)
    }
    // node checks the deadlines every connectionsCheckingInterval (30 s by default): every second here.
    const server = createServer({
      keepAliveTimeout: HEAD_DEADLINE_MS, headersTimeout: HEAD_DEADLINE_MS, requestTimeout: HEAD_DEADLINE_MS + BODY_DEADLINE_MS, connectionsCheckingInterval: 1_000
    }, onRequest)
    // A connection that sends no request at all is closed after the head deadline too (node's
    // headersTimeout only starts with a request's first byte, and its idle-connection check does not
    // see a connection that never sent one). Its first request clears the timer; keep-alive idleness
    // after that is keepAliveTimeout's.
    const silent = new WeakMap<Socket, ReturnType<typeof setTimeout>>()
    server.on("connection", (socket: Socket) => {
      server.maxConnections = params.int("max_connections")
      const timer = setTimeout(() => socket.destroy(), HEAD_DEADLINE_MS)
      silent.set(socket, timer)
      socket.once("close", () => clearTimeout(timer))
    })
    server.on("request", (req: IncomingMessage) => {
      const timer = silent.get(req.socket)
      if (timer !== undefined) clearTimeout(timer)
    })
    const port = yield* Effect.acquireRelease(
      Effect.callback<number, Error>((resume) => {
        const onError = (e: Error) => resume(Effect.fail(e))
        server.once("error", onError)
        server.maxConnections = params.int("max_connections")
        server.listen(config.lrsHttpPort, config.bindHost, () => {
          server.off("error", onError)
          const address = server.address()
          resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : config.lrsHttpPort))
        })
      }),
      // Stop accepting, let in-flight reports finish (idle keep-alive connections closed now), then close the rest.
      () =>
        Effect.promise(async () => {
          draining = true
          const closed = new Promise<void>((resolve) => server.close(() => resolve()))
          server.closeIdleConnections()
          const deadline = Date.now() + config.shutdownTimeoutMs / 2
          while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
          server.closeAllConnections()
          await closed
        })
    ).pipe(Effect.mapError((e) => cannotListen("LRS_HTTP_PORT", config.bindHost, config.lrsHttpPort, e)))
    yield* Effect.logInfo("LRS HTTP listening", { port, host: config.bindHost, docs: `http://127.0.0.1:${port}/docs` }).pipe(withModule("lrs-http"))
  }))
