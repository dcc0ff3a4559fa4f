import type { RemoteInfo } from "node:dgram"
import { hashIfWellFormed, type KeyBytesMemo, keyBytesMatch, newKeyBytesMemo, rememberKeyBytes } from "../../domain/apiKey.ts"
import { type ResponseCode, statusOf } from "../../domain/errorCodes.ts"
import { requestIdOf } from "../../domain/requestId.ts"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import {
  type AssetPair,
  encodeErrorReply,
  makePairTable,
  mayReplyUnauthenticated,
  newPriceSpans,
  parseUdpRequest,
  scanPriceRequest,
  writePriceReply
} from "../../domain/udpCodec.ts"
import { nextRequestSeq, requestTag } from "../../layers/http/httpKit.ts"
import type { RequestSpans, RequestTrace } from "../../layers/tracing/requestTracing.ts"
import type { AuthResult } from "../../services/ApiKeys.ts"
import type { UsageSink } from "../../services/UsageSink.ts"
import { authenticateSlowThen, endKeySpan, type PriceDeps, runOneQuery } from "./priceQuery.ts"

/** A key that is not even well-formed, as the key span records it. */
const MALFORMED_KEY: AuthResult = { _tag: "Refused", code: "INVALID_API_KEY", keyId: undefined }

/** Client sockets whose last key is remembered; a flood of sources only restarts the memos. */
const MAX_KEY_MEMOS = 4_096
/** Distinct `ASSET[/QUOTE]` spellings remembered as strings (a power of two). */
const PAIR_SLOTS = 1_024

/** The part of a dgram socket a handler answers through. */
export interface UdpReplySocket {
  readonly send: (reply: Uint8Array, port: number, address: string) => void
}

export interface UdpPriceDeps extends PriceDeps {
  readonly usage: UsageSink["Service"]
  /** Request spans; undefined when tracing is off. */
  readonly requestSpans?: RequestSpans | undefined
}

export interface UdpPriceHandler {
  readonly onMessage: (socket: UdpReplySocket, msg: Buffer, rinfo: RemoteInfo) => void
  /** Requests waiting on a key lookup. */
  readonly pending: () => number
  /** No more replies (shutdown): what still arrives is dropped, and counted. */
  readonly close: () => void
}

/** A client socket (address and port) and the last key it sent. */
interface Source extends KeyBytesMemo {
  readonly address: string
}

/**
 * LPO over UDP: `v1 price <key> <ASSET>[/<QUOTE>] [<rid>]`. Malformed or unauthenticated datagrams
 * get a reply only when it is no longer than the request (no amplification). Every datagram that
 * gets a reply becomes a usage row.
 *
 * The hot path (a price request from a client whose key this node knows) allocates little: the
 * datagram is scanned in place, a client's repeated key is compared with the bytes it last sent
 * (no string, no hash), the asset pair's strings come from a table, and the reply is written as
 * bytes around the answer's cached body. Only a key this node has never seen waits, for one
 * database lookup.
 */
export const makeUdpPriceHandler = (deps: UdpPriceDeps): UdpPriceHandler => {
  const { usage, apiKeys, requestSpans: tracing } = deps
  const v = deps.stats.values
  const spans = newPriceSpans()
  const pairOf = makePairTable(PAIR_SLOTS)
  // By port first (a number key), then the address must match: the common case is one client per port.
  const sources = new Map<number, Source>()
  let pending = 0
  let closed = false

  const sourceOf = (rinfo: RemoteInfo): Source => {
    let source = sources.get(rinfo.port)
    if (source === undefined || source.address !== rinfo.address) {
      if (sources.size >= MAX_KEY_MEMOS) sources.clear()
      source = { ...newKeyBytesMemo(), address: rinfo.address }
      sources.set(rinfo.port, source)
    }
    return source
  }

  /** Send (unless closed, or an unauthenticated reply longer than the request) and record the usage row. */
  const finish = (
    socket: UdpReplySocket, msg: Buffer, rinfo: RemoteInfo, reply: Uint8Array, code: ResponseCode, keyId: string | undefined,
    authenticated: boolean, pair: AssetPair | undefined, price: number | undefined, source: string | undefined, startedAt: number, receivedAt: number,
    trace: RequestTrace | undefined
  ) => {
    if (closed || (!authenticated && !mayReplyUnauthenticated(reply, msg))) {
      v[COUNTER.udp_silent_drops]!++
      if (trace !== undefined) endUdpTrace(trace, code, keyId, pair, undefined)
      return
    }
    // No per-datagram callback (it costs an allocation per reply): send errors arrive as
    // socket "error" events and are counted there.
    socket.send(reply, rinfo.port, rinfo.address)
    const requestSeq = nextRequestSeq()
    if (trace !== undefined) endUdpTrace(trace, code, keyId, pair, requestSeq)
    usage.record({
      requestSeq, apiKeyId: keyId, service: "LPO", protocol: "udp", endpoint: "price",
      asset: pair?.asset, quote: pair === undefined ? undefined : pair.quote ?? "USD", source, price, code,
      latencyUs: Math.max(0, Math.round((performance.now() - startedAt) * 1000)), clientIp: rinfo.address, bytesOut: reply.length, createdAt: receivedAt
    })
  }

  /** The datagram's server span: the code answered (a 5xx code fails it), or that no reply was sent. */
  const endUdpTrace = (trace: RequestTrace, code: ResponseCode, keyId: string | undefined, pair: AssetPair | undefined, requestSeq: number | undefined) => {
    const span = trace.server
    span.attribute("tb.code", code)
    if (requestSeq === undefined) span.attribute("tb.udp.dropped", true)
    else span.attribute("request.id", requestIdOf(requestTag, requestSeq))
    if (keyId !== undefined) span.attribute("tb.api_key.id", keyId)
    if (pair !== undefined) span.attribute("tb.asset", pair.asset)
    trace.end(span, statusOf(code) >= 500 ? code : undefined)
  }

  const ridOf = (msg: Buffer, ridStart: number, ridEnd: number) => (ridStart < 0 ? undefined : msg.toString("latin1", ridStart, ridEnd))

  /** After authentication: the query and its answer. */
  const answer = (
    socket: UdpReplySocket, msg: Buffer, rinfo: RemoteInfo, auth: AuthResult, pair: AssetPair, ridStart: number, ridEnd: number, startedAt: number, now: number,
    trace: RequestTrace | undefined
  ) => {
    if (auth._tag !== "Authorized") {
      const code = auth._tag === "Refused" ? auth.code : "INVALID_API_KEY"
      v[code === "SYSTEM_BUSY" ? COUNTER.system_busy : COUNTER.auth_failures]!++
      const keyId = auth._tag === "Refused" ? auth.keyId : undefined
      return finish(socket, msg, rinfo, encodeErrorReply(ridOf(msg, ridStart, ridEnd), code), code, keyId, false, undefined, undefined, undefined, startedAt, now, trace)
    }
    const key = auth.key
    const found = runOneQuery(deps, key, pair.asset, pair.quote ?? "USD", now, trace)
    if (typeof found === "string") {
      return finish(socket, msg, rinfo, encodeErrorReply(ridOf(msg, ridStart, ridEnd), found), found, key.id, true, pair, undefined, undefined, startedAt, now, trace)
    }
    const reply = writePriceReply(msg, ridStart, ridEnd, found.udpBodyBytes, now - found.ts)
    finish(socket, msg, rinfo, reply, "OK", key.id, true, pair, found.price, found.source, startedAt, now, trace)
  }

  /** Anything but a well-formed price request: the parser says what it is. */
  const refuseMalformed = (socket: UdpReplySocket, msg: Buffer, rinfo: RemoteInfo, startedAt: number, now: number, trace: RequestTrace | undefined) => {
    v[COUNTER.udp_malformed]!++
    const request = parseUdpRequest(msg)
    // A summary request belongs to the report server's port.
    const code = request._tag === "summary" ? "NOT_FOUND" : "BAD_REQUEST"
    finish(socket, msg, rinfo, encodeErrorReply(request.rid, code), code, undefined, false, undefined, undefined, undefined, startedAt, now, trace)
  }

  const onMessage = (socket: UdpReplySocket, msg: Buffer, rinfo: RemoteInfo) => {
    const startedAt = performance.now()
    const now = Date.now()
    v[COUNTER.requests_total]!++
    v[COUNTER.udp_requests]!++
    const trace = tracing?.udp(rinfo.address, rinfo.port)
    if (!scanPriceRequest(msg, spans)) return refuseMalformed(socket, msg, rinfo, startedAt, now, trace)
    const { keyStart, keyEnd, ridStart, ridEnd } = spans
    const pair = pairOf(msg, spans.pairStart, spans.pairEnd)
    const keySpan = trace?.child("ApiKeys.authenticate")
    const source = sourceOf(rinfo)
    let hash = source.hash
    if (!keyBytesMatch(source, msg, keyStart, keyEnd)) {
      const wellFormed = hashIfWellFormed(msg.toString("latin1", keyStart, keyEnd))
      if (wellFormed === undefined) {
        v[COUNTER.auth_failures]!++
        if (keySpan !== undefined) endKeySpan(trace!, keySpan, MALFORMED_KEY)
        return finish(socket, msg, rinfo, encodeErrorReply(ridOf(msg, ridStart, ridEnd), "INVALID_API_KEY"), "INVALID_API_KEY", undefined, false, undefined, undefined, undefined, startedAt, now, trace)
      }
      hash = wellFormed
      rememberKeyBytes(source, msg, keyStart, keyEnd, hash)
    }
    const auth = apiKeys.authenticateHash(hash, now)
    if (keySpan !== undefined) keySpan.attribute("tb.key_cache", auth._tag === "Unknown" ? "miss" : "hit")
    if (auth._tag !== "Unknown") {
      if (keySpan !== undefined) endKeySpan(trace!, keySpan, auth)
      return answer(socket, msg, rinfo, auth, pair, ridStart, ridEnd, startedAt, now, trace)
    }
    // A key this node has not seen: one database lookup, then the answer.
    pending++
    authenticateSlowThen(deps, auth.hash, now, (slow) => {
      pending--
      if (keySpan !== undefined) endKeySpan(trace!, keySpan, slow)
      answer(socket, msg, rinfo, slow, pair, ridStart, ridEnd, startedAt, now, trace)
    }, keySpan === undefined ? undefined : { span: keySpan, tracer: trace!.tracer })
  }

  return {
    onMessage,
    pending: () => pending,
    close: () => {
      closed = true
    }
  }
}
