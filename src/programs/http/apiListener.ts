/**
 * Serves the HttpApi definition on a node:http server (the one the fast path hands non-price
 * requests to), with what the definition alone does not give:
 * - every answer is the envelope: malformed input (a schema failure) answers BAD_REQUEST with what
 *   was wrong, a known path with a wrong method 405 METHOD_NOT_ALLOWED with `Allow`, an unknown one
 *   NOT_FOUND, a defect INTERNAL (logged), a non-envelope error answer (415, 413) BAD_REQUEST;
 * - `X-Request-Id`, CORS (CORS_ORIGINS) and `Retry-After` on every 503;
 * - one usage row per answer, written once it is sent.
 */
import { NodeHttpPlatform, NodeHttpServer } from "@effect/platform-node"
import { type Cause, Effect, Fiber, Layer } from "effect"
import { Etag, HttpRouter, HttpServerError, HttpServerRequest, HttpServerResponse } from "effect/http"
import { HttpApiError } from "effect/http-api"
import type { IncomingMessage, ServerResponse } from "node:http"
import { allowedMethods, type ApiRoute } from "../../api/routeTable.ts"
import { corsHeaders, type CorsPolicy, preflightHeaders } from "../../domain/cors.ts"
import type { ServiceName } from "../../domain/envelope.ts"
import { type ErrorCode, statusOf } from "../../domain/errorCodes.ts"
import { latencyUs, type RequestInfo } from "../../layers/http/httpKit.ts"
import type { UsageSink } from "../../services/UsageSink.ts"
import type { Edge, EdgeRequest } from "./edge.ts"

/**
 * The body bytes a response writes, for its usage row (headers given to writeHead are not readable
 * with getHeader, and a streamed body has no content-length).
 */
const countBodyBytes = (res: ServerResponse) => {
  let bytes = 0
  const add = (chunk: unknown) => {
    if (typeof chunk === "string") bytes += Buffer.byteLength(chunk)
    else if (chunk instanceof Uint8Array) bytes += chunk.byteLength
  }
  const write = res.write.bind(res) as (chunk: unknown, ...rest: Array<unknown>) => boolean
  const end = res.end.bind(res) as (chunk?: unknown, ...rest: Array<unknown>) => ServerResponse
  res.write = ((chunk: unknown, ...rest: Array<unknown>) => {
    add(chunk)
    return write(chunk, ...rest)
  }) as ServerResponse["write"]
  res.end = ((chunk?: unknown, ...rest: Array<unknown>) => {
    if (typeof chunk !== "function") add(chunk)
    return end(chunk, ...rest)
  }) as ServerResponse["end"]
  return { bytes: () => bytes }
}

export interface ApiListenerOptions {
  readonly edge: Edge
  readonly routes: ReadonlyArray<ApiRoute>
  readonly cors: CorsPolicy
  readonly usage: UsageSink["Service"]
  /** The envelope service of an answer made outside a handler, by path. */
  readonly serviceOf: (path: string) => ServiceName
}

export type ApiListener = (req: IncomingMessage, res: ServerResponse, info: RequestInfo) => void

/** Seconds a client should wait before retrying a 503, by code. */
const retryAfterOf = (code: string | undefined): string => (code === "MAINTENANCE" ? "60" : "1")

const schemaProblem = (error: HttpApiError.HttpApiSchemaError): string =>
  `${error.kind.toLowerCase()}: ${error.cause.message}`.slice(0, 500)

export const makeApiListener = <E, R>(appLayer: Layer.Layer<never, E, R>, options: ApiListenerOptions) =>
  Effect.gen(function*() {
    const { edge } = options
    const allowed = allowedMethods(options.routes)
    const httpEffect = yield* HttpRouter.toHttpEffect(appLayer)

    const envelopeResponse = (request: HttpServerRequest.HttpServerRequest, state: EdgeRequest, code: ErrorCode, status: number | undefined, detail?: string) =>
      HttpServerResponse.jsonUnsafe(
        edge.fail(request.source, state.service, code, detail),
        { status: status ?? statusOf(code) }
      )

    /** Whatever the router or a handler left unanswered, answered as an envelope. */
    const answerCause = (request: HttpServerRequest.HttpServerRequest, state: EdgeRequest, cause: Cause.Cause<unknown>) =>
      Effect.gen(function*() {
        for (const reason of cause.reasons) {
          const thrown = reason._tag === "Fail" ? reason.error : reason._tag === "Die" ? reason.defect : undefined
          if (HttpApiError.HttpApiSchemaError.is(thrown)) return envelopeResponse(request, state, "BAD_REQUEST", undefined, schemaProblem(thrown))
          if (HttpServerError.isHttpServerError(thrown) && thrown.reason._tag === "RouteNotFound") {
            const methods = allowed(state.info.path)
            if (methods.length === 0) return envelopeResponse(request, state, "NOT_FOUND", undefined, `no route ${state.info.path.slice(0, 200)}`)
            state.headers.push(["allow", methods.join(", ")])
            return envelopeResponse(request, state, "METHOD_NOT_ALLOWED", undefined, `${request.method} is not allowed on ${state.info.path}`)
          }
          if (HttpServerError.isHttpServerError(thrown) && thrown.reason._tag === "RequestParseError") {
            return envelopeResponse(request, state, "BAD_REQUEST", undefined, "the request body could not be read")
          }
        }
        // A client that hung up: nothing to answer and nothing wrong with the server.
        if (cause.reasons.every((r) => r._tag === "Interrupt")) return envelopeResponse(request, state, "BAD_REQUEST", undefined, "the client went away")
        yield* Effect.logError("HTTP request failed", { path: state.info.path, request_id: state.info.requestId, cause: String(cause).slice(0, 2000) })
        return envelopeResponse(request, state, "INTERNAL", undefined)
      })

    const guarded = Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const state = edge.of(request.source)
      if (state === undefined) return yield* Effect.die(new Error("request reached the API without the listener's state"))
      // A handler runs to its end in a fiber of its own, even if the client hangs up (which interrupts
      // this one): a revocation must not stop between the database update and the invalidation.
      const handled = yield* Effect.forkDetach(httpEffect.pipe(Effect.catchCause((cause) => answerCause(request, state, cause))))
      let response = yield* Fiber.join(handled)
      const contentType = response.headers["content-type"]
      if (response.status >= 400 && (contentType === undefined || !contentType.startsWith("application/json"))) {
        // The framework's own plain-text refusals (415 unsupported content-type, 413 too large): BAD_REQUEST, as its status says.
        response = envelopeResponse(request, state, "BAD_REQUEST", undefined, `request refused (${response.status})`)
      }
      const headers: Record<string, string> = { "x-request-id": state.info.requestId }
      for (const [name, value] of state.headers) headers[name] = value
      const cors = corsHeaders(options.cors, state.info.headers.origin)
      for (let i = 0; i + 1 < cors.length; i += 2) headers[cors[i]!] = cors[i + 1]!
      if (response.status === 503 && response.headers["retry-after"] === undefined) headers["retry-after"] = retryAfterOf(state.code)
      return HttpServerResponse.setHeaders(response, headers)
    })
    const handle = yield* NodeHttpServer.makeHandler(guarded, { scope: yield* Effect.scope })

    const listener: ApiListener = (req, res, info) => {
      const state = edge.begin(req, info, options.serviceOf(info.path))
      // One row per request, when its answer is sent, or when the client left before it was.
      const body = countBodyBytes(res)
      const recordUsage = () => {
        if (state.usageRecorded) return
        state.usageRecorded = true
        options.usage.record({
          requestId: info.requestId, apiKeyId: state.apiKeyId, service: state.service, protocol: "http", endpoint: info.path.slice(0, 200),
          asset: state.asset, code: state.code ?? (res.statusCode < 400 ? "OK" : "INTERNAL"), status: res.statusCode, latencyUs: latencyUs(info),
          clientIp: info.clientIp, bytesOut: res.writableFinished ? body.bytes() : 0, createdAt: info.receivedAt
        })
      }
      res.once("finish", recordUsage)
      res.once("close", recordUsage)
      if (info.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined) {
        // A CORS preflight, answered here for every path the API knows: 204, with CORS headers only
        // for a listed origin (the browser then refuses the others), 404 for an unknown path.
        const methods = allowed(info.path)
        const headers = methods.length === 0 ? undefined : preflightHeaders(options.cors, info.headers.origin, [...methods, "OPTIONS"])
        state.code = methods.length === 0 ? "NOT_FOUND" : "OK"
        res.writeHead(methods.length === 0 ? 404 : 204, [...(headers ?? []), "content-length", "0", "x-request-id", info.requestId])
        res.end()
        return
      }
      // JSON bodies whatever they are labelled: `curl -d` sends application/x-www-form-urlencoded.
      const contentType = req.headers["content-type"]
      if (contentType === undefined || contentType.startsWith("application/x-www-form-urlencoded") || contentType.startsWith("text/plain")) {
        req.headers["content-type"] = "application/json"
      }
      handle(req, res)
    }
    return listener
  }).pipe(Effect.provide(Layer.mergeAll(NodeHttpPlatform.layer, Etag.layer)))
