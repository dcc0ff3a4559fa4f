/**
 * Lambda entry `trinity-beast/lambda/receipt`: API Gateway REST (v1) and HTTP API (v2) proxy
 * events in, a proxy result out. Routes POST /receipt and POST /stripe/webhook like the LPO's
 * listener (the same route code, src/programs/receipt/routes.ts) and answers in the same envelope,
 * service RECEIPT. Keys are invalidated on the LPO through LPO_ADMIN_URL with ADMIN_TOKEN from
 * the Secrets service (a Lambda holds no key cache a price request could reach).
 */
import { randomUUID } from "node:crypto"
import { Effect, Exit, Layer, ManagedRuntime } from "effect"
import { AppConfig, packageVersion } from "../../config/AppConfig.ts"
import { rfc3339 } from "../../domain/envelope.ts"
import { type ResponseCode, statusOf } from "../../domain/errorCodes.ts"
import { type Lang, messageFor, negotiateLang } from "../../domain/messages.ts"
import { KeysLive } from "../layers.ts"
import { ReceiptLive } from "../receipt/layer.ts"
import { receiptRoute, type RouteAnswer, stripeWebhookRoute } from "../receipt/routes.ts"

/** The fields of both API Gateway proxy event versions that routing needs. */
export interface ApiGatewayProxyEvent {
  readonly version?: string
  /** v1 */
  readonly httpMethod?: string
  readonly path?: string
  /** v2 */
  readonly rawPath?: string
  readonly requestContext?: { readonly requestId?: string; readonly http?: { readonly method?: string; readonly path?: string } }
  readonly headers?: Readonly<Record<string, string | undefined>> | null
  readonly queryStringParameters?: Readonly<Record<string, string | undefined>> | null
  readonly body?: string | null
  readonly isBase64Encoded?: boolean
}

export interface ApiGatewayProxyResult {
  readonly statusCode: number
  readonly headers: Record<string, string>
  readonly body: string
  readonly isBase64Encoded: false
}

const ROUTES = { "/receipt": "receipt", "/stripe/webhook": "stripeWebhook" } as const

/** The route a path ends with: a REST API's stage or a base-path mapping may precede it. */
const routeOf = (path: string): (typeof ROUTES)[keyof typeof ROUTES] | undefined => {
  const trimmed = path.replace(/\/+$/, "")
  for (const [suffix, route] of Object.entries(ROUTES)) if (trimmed === suffix || trimmed.endsWith(suffix)) return route
  return undefined
}

const ReceiptLambdaLive = ReceiptLive.pipe(Layer.provideMerge(KeysLive))

let runtime: ManagedRuntime.ManagedRuntime<Layer.Success<typeof ReceiptLambdaLive>, Layer.Error<typeof ReceiptLambdaLive>> | undefined

/** Closes the pool (tests; Lambda itself just freezes or ends the environment). */
export const disposeReceiptLambda = async (): Promise<void> => {
  const current = runtime
  runtime = undefined
  await current?.dispose()
}

interface Meta { readonly node: string; readonly region: string; readonly version: string }

const envelope = (meta: Meta, requestId: string, lang: Lang, started: number, code: ResponseCode, data: unknown) => ({
  success: code === "OK",
  service: "RECEIPT",
  code,
  message: messageFor(code, lang),
  data,
  request_id: requestId,
  timestamp: rfc3339(Date.now()),
  latency_us: Math.round((performance.now() - started) * 1000),
  node: meta.node,
  region: meta.region,
  version: meta.version,
  lang
})

export const handler = async (event: ApiGatewayProxyEvent): Promise<ApiGatewayProxyResult> => {
  const started = performance.now()
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(event.headers ?? {})) if (value !== undefined) headers[name.toLowerCase()] = value
  const requestId = headers["x-request-id"] ?? event.requestContext?.requestId ?? randomUUID()
  const lang = negotiateLang(event.queryStringParameters?.["lang"], headers["accept-language"])
  const method = (event.requestContext?.http?.method ?? event.httpMethod ?? "GET").toUpperCase()
  const path = event.rawPath ?? event.requestContext?.http?.path ?? event.path ?? "/"
  const rawBody = event.body == null ? "" : event.isBase64Encoded === true ? Buffer.from(event.body, "base64").toString("utf8") : event.body

  runtime ??= ManagedRuntime.make(ReceiptLambdaLive)
  const current = runtime
  const metaExit = await current.runPromiseExit(Effect.gen(function*() {
    const config = yield* AppConfig
    return { node: config.nodeId, region: config.region, version: yield* packageVersion }
  }))
  const reply = (meta: Meta, status: number, code: ResponseCode, data: unknown, extra: Record<string, string> = {}): ApiGatewayProxyResult => ({
    statusCode: status,
    headers: { "content-type": "application/json", "x-request-id": requestId, ...(status === 503 ? { "retry-after": code === "MAINTENANCE" ? "60" : "1" } : {}), ...extra },
    body: JSON.stringify(envelope(meta, requestId, lang, started, code, data)),
    isBase64Encoded: false
  })
  if (Exit.isFailure(metaExit)) {
    // A failed start (database out of reach) is not kept: the next invocation builds again.
    await disposeReceiptLambda()
    return reply({ node: "lambda", region: process.env["AWS_REGION"] ?? "local", version: "0.0.0" }, 503, "SYSTEM_BUSY", { error: "the receipt processor could not start" })
  }
  const meta = metaExit.value
  const route = routeOf(path)
  if (route === undefined) return reply(meta, 404, "NOT_FOUND", { error: `no route ${path.slice(0, 200)}` })
  if (method !== "POST") return reply(meta, 405, "METHOD_NOT_ALLOWED", { error: `${method} is not allowed on ${path.slice(0, 200)}` }, { allow: "POST" })
  const answerExit = await current.runPromiseExit(route === "receipt" ? receiptRoute(rawBody) : stripeWebhookRoute(rawBody, headers["stripe-signature"]))
  if (Exit.isFailure(answerExit)) return reply(meta, 500, "INTERNAL", null)
  const answer: RouteAnswer = answerExit.value
  switch (answer._tag) {
    case "Ok":
      return reply(meta, 200, "OK", answer.data)
    case "Fail":
      return reply(meta, statusOf(answer.code), answer.code, { error: answer.detail })
    case "Redirect":
      return { statusCode: 302, headers: { location: answer.location, "x-request-id": requestId }, body: "", isBase64Encoded: false }
  }
}
