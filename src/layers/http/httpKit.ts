import type { IncomingMessage, ServerResponse } from "node:http"
import type { Reply } from "./fastHttp.ts"
import { originForm } from "./httpHead.ts"
import { randomBytes } from "node:crypto"
import type { KeyHashMemo } from "../../domain/apiKey.ts"
import { requestIdOf } from "../../domain/requestId.ts"
import type { ServerMeta } from "../../domain/serverMeta.ts"
import { corsHeaders, type CorsPolicy, NO_CORS } from "../../domain/cors.ts"
import { makeEnvelopeWriter, rfc3339, type ServiceName } from "../../domain/envelope.ts"
import { type ResponseCode, statusOf } from "../../domain/errorCodes.ts"
import { type Lang, messageFor, negotiateLang } from "../../domain/messages.ts"


/** What every handler needs to know about a request, parsed once. */
export interface RequestInfo {
  readonly startedAt: number
  readonly receivedAt: number
  readonly method: string
  readonly path: string
  readonly query: QueryParams
  readonly requestId: string
  readonly lang: Lang
  readonly clientIp: string
  readonly headers: WantedHeaders
  /** The connection's key memo, where the server keeps one per connection. */
  readonly keyMemo: KeyHashMemo | undefined
}

/** What handlers read of a query string: the first value of a name, and every pair in order. */
export interface QueryParams extends Iterable<[string, string]> {
  readonly get: (name: string) => string | null
}

/** A query string as pairs, searched in order: a request has a handful, so a scan beats a map. */
class QueryPairs implements QueryParams {
  constructor(private readonly pairs: ReadonlyArray<[string, string]>) {}
  get(name: string): string | null {
    for (const [n, v] of this.pairs) if (n === name) return v
    return null
  }
  [Symbol.iterator](): Iterator<[string, string]> {
    return this.pairs[Symbol.iterator]()
  }
}

const NO_PAIRS = new QueryPairs([])

/**
 * The query string's pairs, as URLSearchParams reads them. Without "%", "+" or a leading "?"
 * nothing needs decoding and the pairs are cut directly (most price requests); otherwise
 * URLSearchParams decodes them.
 */
export const parseQueryString = (qs: string): QueryParams => {
  if (qs === "") return NO_PAIRS
  if (qs.includes("%") || qs.includes("+") || qs.startsWith("?")) return new QueryPairs([...new URLSearchParams(qs)])
  const pairs: Array<[string, string]> = []
  for (let start = 0; start <= qs.length;) {
    const amp = qs.indexOf("&", start)
    const end = amp === -1 ? qs.length : amp
    if (end > start) {
      const eq = qs.indexOf("=", start)
      pairs.push(eq === -1 || eq >= end ? [qs.slice(start, end), ""] : [qs.slice(start, eq), qs.slice(eq + 1, end)])
    }
    start = end + 1
  }
  return new QueryPairs(pairs)
}

const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/
/** This process's request ids: `<requestTag>-<request number in base 36>` (domain/requestId.ts). */
export const requestTag = randomBytes(4).toString("hex")
let requestSeq = 0

/** The next request number; a request id made from it is unique across nodes and restarts. */
export const nextRequestSeq = (): number => requestSeq++

export const newRequestId = (): string => requestIdOf(requestTag, nextRequestSeq())

/** The request headers the handlers read. */
export interface WantedHeaders {
  apiKey: string | undefined
  authorization: string | undefined
  requestId: string | undefined
  acceptLanguage: string | undefined
  adminToken: string | undefined
  origin: string | undefined
  /** W3C trace context: a traced request continues the caller's trace. */
  traceparent: string | undefined
}

/**
 * One pass over `rawHeaders` for the few headers we use. Reading `req.headers` makes node build
 * an object of every header per request, which costs more than the rest of a price answer.
 * The first occurrence of a header wins (as `req.headers` gives for these single-value headers).
 */
export const wantedHeaders = (req: IncomingMessage): WantedHeaders => wantedHeadersFrom(req.rawHeaders)

export const wantedHeadersFrom = (raw: ReadonlyArray<string>): WantedHeaders => {
  const out: WantedHeaders = { apiKey: undefined, authorization: undefined, requestId: undefined, acceptLanguage: undefined, adminToken: undefined, origin: undefined, traceparent: undefined }
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!
    switch (name.length) {
      case 9:
        if (out.apiKey === undefined && name.toLowerCase() === "x-api-key") out.apiKey = raw[i + 1]
        break
      case 12:
        if (out.requestId === undefined && name.toLowerCase() === "x-request-id") out.requestId = raw[i + 1]
        break
      case 13:
        if (name.toLowerCase() === "authorization") out.authorization ??= raw[i + 1]
        else if (name.toLowerCase() === "x-admin-token") out.adminToken ??= raw[i + 1]
        break
      case 6:
        if (out.origin === undefined && name.toLowerCase() === "origin") out.origin = raw[i + 1]
        break
      case 11:
        if (out.traceparent === undefined && name.toLowerCase() === "traceparent") out.traceparent = raw[i + 1]
        break
      case 15:
        if (out.acceptLanguage === undefined && name.toLowerCase() === "accept-language") out.acceptLanguage = raw[i + 1]
        break
    }
  }
  return out
}

/** What the handlers need of a request, whichever server received it. */
export const requestInfo = (method: string, url: string, headers: WantedHeaders, clientIp: string, startedAt: number, keyMemo?: KeyHashMemo): RequestInfo => {
  const q = url.indexOf("?")
  const query = parseQueryString(q === -1 ? "" : url.slice(q + 1))
  const clientId = headers.requestId
  return {
    startedAt,
    receivedAt: Date.now(),
    method,
    path: q === -1 ? url : url.slice(0, q),
    query,
    requestId: clientId !== undefined && CLIENT_REQUEST_ID.test(clientId) ? clientId : newRequestId(),
    lang: negotiateLang(query.get("lang"), headers.acceptLanguage),
    clientIp,
    headers,
    keyMemo
  }
}

/** A node:http request as RequestInfo; an absolute-form target (sent through a proxy) by its origin-form, as on the fast path. */
export const parseRequest = (req: IncomingMessage): RequestInfo => {
  const url = req.url ?? "/"
  return requestInfo(req.method ?? "GET", originForm(url) ?? url, wantedHeaders(req), req.socket.remoteAddress ?? "", performance.now())
}

/** A node:http response as a Reply. */
export const nodeReply = (res: ServerResponse): Reply => (status, headers, body) => {
  res.writeHead(status, headers as unknown as Array<string>)
  res.end(body)
}

/** X-API-Key, or Authorization: Bearer. */
export const apiKeyOf = (info: RequestInfo): string | undefined => {
  const direct = info.headers.apiKey
  if (direct !== undefined) return direct.trim()
  const auth = info.headers.authorization
  return auth !== undefined && auth.length > 7 && auth.slice(0, 7).toLowerCase() === "bearer " ? auth.slice(7).trim() : undefined
}

export const latencyUs = (info: RequestInfo): number => Math.max(0, Math.round((performance.now() - info.startedAt) * 1000))

/** Send one envelope; returns the number of body bytes written (for usage rows). */
export type SendEnvelope = (
  reply: Reply,
  info: RequestInfo,
  service: ServiceName,
  code: ResponseCode,
  dataJson: string,
  extraHeaders?: ReadonlyArray<string | number>,
  status?: number,
  message?: string
) => number

const hasHeader = (headers: ReadonlyArray<string | number> | undefined, name: string): boolean => {
  if (headers !== undefined) for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return true
  return false
}

/**
 * One server's envelope sender: its node, region and version are serialised once (makeEnvelopeWriter).
 * Adds CORS headers for a listed Origin, and Retry-After to every 503 that lacks one.
 */
export const makeSendEnvelope = (meta: ServerMeta, cors: CorsPolicy = NO_CORS): SendEnvelope => {
  const write = makeEnvelopeWriter(meta)
  return (reply, info, service, code, dataJson, extraHeaders, status = statusOf(code), message = messageFor(code, info.lang)) => {
    const body = write({
      service, code, message, lang: info.lang, dataJson,
      requestId: info.requestId, timestamp: rfc3339(Date.now()), latencyUs: latencyUs(info)
    })
    const bytes = Buffer.byteLength(body)
    // A flat [name, value, …] list: node:http takes it without building a header object.
    const headers: Array<string | number> = ["content-type", "application/json; charset=utf-8", "content-length", bytes, "x-request-id", info.requestId]
    if (extraHeaders !== undefined) for (const h of extraHeaders) headers.push(h)
    if (info.headers.origin !== undefined) for (const h of corsHeaders(cors, info.headers.origin)) headers.push(h)
    if (status === 503 && !hasHeader(extraHeaders, "retry-after")) headers.push("retry-after", code === "MAINTENANCE" ? 60 : 1)
    reply(status, headers, body)
    return bytes
  }
}

/** Read a small JSON body (admin endpoints). Resolves undefined for invalid JSON or oversize bodies. */
export const readJsonBody = (req: IncomingMessage, maxBytes = 64 * 1024): Promise<unknown> =>
  new Promise((resolve) => {
    const chunks: Array<Buffer> = []
    let size = 0
    req.on("data", (c: Buffer) => {
      size += c.length
      if (size > maxBytes) {
        resolve(undefined)
        req.destroy()
      } else chunks.push(c)
    })
    req.on("end", () => {
      if (size === 0) return resolve({})
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")))
      } catch {
        resolve(undefined)
      }
    })
    req.on("error", () => resolve(undefined))
  })
