/**
 * What every HttpApi answer shares: the request's parsed facts (request id, language, start
 * time), the envelope builders, and what the usage row needs to know once the answer is sent.
 * Kept per request in a WeakMap keyed by node's IncomingMessage (HttpServerRequest.source), so
 * handlers, middleware and the edge wrapper all see the same request id.
 */
import { Effect } from "effect"
import { HttpServerResponse } from "effect/http"
import type { IncomingMessage } from "node:http"
import type { ErrorEnvelope } from "../../api/envelopes.ts"
import { rfc3339, type ServiceName } from "../../domain/envelope.ts"
import type { ErrorCode, ResponseCode } from "../../domain/errorCodes.ts"
import { messageFor } from "../../domain/messages.ts"
import type { ServerMeta } from "../../domain/serverMeta.ts"
import { latencyUs, type RequestInfo } from "../../layers/http/httpKit.ts"

export interface EdgeRequest {
  readonly info: RequestInfo
  /** The envelope's service, for answers made outside a handler (404, 405, malformed input). */
  readonly service: ServiceName
  /** The code answered, for the usage row. */
  code: ResponseCode | undefined
  /** A handler that logs its own usage row (the price routes) sets this. */
  usageRecorded: boolean
  /** The caller's key, once a handler knows it (valid, or refused for a reason of its own): the usage row's key. */
  apiKeyId: string | undefined
  /** The usage row's asset, when the request names one. */
  asset: string | undefined
  /** Extra response headers (Retry-After, RateLimit-*, Allow) the handler wants sent. */
  readonly headers: Array<readonly [string, string]>
}

export interface Edge {
  readonly meta: ServerMeta
  readonly begin: (req: IncomingMessage, info: RequestInfo, service: ServiceName) => EdgeRequest
  /** The state of a request, by its HttpServerRequest's `source`. */
  readonly of: (source: object) => EdgeRequest | undefined
  readonly ok: <D>(source: object, service: ServiceName, data: D) => OkEnvelopeOf<D>
  readonly fail: (source: object, service: ServiceName, code: ErrorCode, detail?: string) => ErrorEnvelope
  /**
   * A handler for routes of the one API definition that another listener serves: 404 NOT_FOUND
   * (service `service`) with `detail` naming where they are served.
   */
  readonly servedElsewhere: (service: ServiceName, detail: string) => (args: { readonly request: { readonly source: object } }) => Effect.Effect<HttpServerResponse.HttpServerResponse>
}

/** A success envelope: the error envelope's fields, with `data` and the OK code. */
export type OkEnvelopeOf<D> = Omit<ErrorEnvelope, "success" | "code" | "data"> & { readonly success: true; readonly code: "OK"; readonly data: D }

export const makeEdge = (meta: ServerMeta): Edge => {
  const states = new WeakMap<object, EdgeRequest>()
  /** Every request reaches the API through the listener, which begins its state (apiListener checks it first). */
  const stateOf = (source: object): EdgeRequest => {
    const known = states.get(source)
    if (known === undefined) throw new Error("an envelope for a request the listener did not begin")
    return known
  }
  const common = (state: EdgeRequest, service: ServiceName, code: ResponseCode) => {
    state.code = code
    return {
      service,
      message: messageFor(code, state.info.lang),
      request_id: state.info.requestId,
      timestamp: rfc3339(Date.now()),
      latency_us: latencyUs(state.info),
      node: meta.node,
      region: meta.region,
      version: meta.version,
      lang: state.info.lang
    }
  }
  return {
    meta,
    begin: (req, info, service) => {
      const state: EdgeRequest = { info, service, code: undefined, usageRecorded: false, apiKeyId: undefined, asset: undefined, headers: [] }
      states.set(req, state)
      return state
    },
    of: (source) => states.get(source),
    ok: (source, service, data) => ({ success: true, code: "OK", data, ...common(stateOf(source), service, "OK") }),
    fail: (source, service, code, detail) => ({
      success: false, code, data: detail === undefined ? null : { error: detail }, ...common(stateOf(source), service, code)
    }),
    servedElsewhere: (service, detail) => ({ request }) =>
      Effect.sync(() =>
        HttpServerResponse.jsonUnsafe(
          { success: false, code: "NOT_FOUND", data: { error: detail }, ...common(stateOf(request.source), service, "NOT_FOUND") },
          { status: 404 }
        ))
  }
}
