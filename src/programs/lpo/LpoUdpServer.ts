import { Effect, Layer } from "effect"
import { createSocket, type RemoteInfo, type Socket } from "node:dgram"
import { lookup as dnsLookup, type LookupOneOptions } from "node:dns"
import { isIP } from "node:net"
import { type KeyHashMemo, newKeyHashMemo } from "../../domain/apiKey.ts"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import type { ResponseCode } from "../../domain/errorCodes.ts"
import { encodeErrorReply, encodePriceReply, mayReplyUnauthenticated, parseUdpRequest } from "../../domain/udpCodec.ts"
import { newRequestId } from "../../http/httpKit.ts"
import { AppConfig } from "../../config/AppConfig.ts"
import { withModule } from "../../layers/Logging.ts"
import { ApiKeys } from "../../services/ApiKeys.ts"
import { Params } from "../../services/Params.ts"
import { PriceCache } from "../../services/PriceCache.ts"
import { RateLimiter } from "../../services/RateLimiter.ts"
import { RuntimeStats } from "../../services/RuntimeStats.ts"
import { UsageSink } from "../../services/UsageSink.ts"
import { usageRow } from "../usageRows.ts"
import { authenticateThen, parseQuery, runQuery } from "./priceQuery.ts"
import { ServerInfo } from "../../services/ServerInfo.ts"

/**
 * Address lookup for a dgram socket. A reply goes to `rinfo.address`, always an IP literal, yet
 * node's default resolves it through dns.lookup, which answers on the next tick: every datagram
 * sent paid a deferred callback. IP literals are answered at once; names still go to DNS.
 */
export const literalFirstLookup = (
  hostname: string,
  options: LookupOneOptions,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void
): void => {
  const family = isIP(hostname)
  if (family !== 0) return callback(null, hostname, family)
  dnsLookup(hostname, options, callback)
}

/** Client sockets whose last key is remembered; a flood of sources only restarts the memos. */
const MAX_KEY_MEMOS = 4_096

/** Bind a UDP socket as a scoped resource. */
export const bindUdp = (port: number, host: string, onMessage: (socket: Socket, msg: Buffer, rinfo: RemoteInfo) => void) =>
  Effect.acquireRelease(
    Effect.callback<Socket, Error>((resume) => {
      const socket = createSocket({ type: host.includes(":") ? "udp6" : "udp4", reuseAddr: false, lookup: literalFirstLookup })
      socket.on("message", (msg, rinfo) => onMessage(socket, msg, rinfo))
      const onError = (e: Error) => resume(Effect.fail(e))
      socket.once("error", onError)
      socket.bind(port, host, () => {
        socket.off("error", onError)
        // After binding, a socket error (e.g. ICMP unreachable on send) must not kill the listener.
        socket.on("error", () => {})
        resume(Effect.succeed(socket))
      })
    }),
    (socket) => Effect.callback<void>((resume) => void socket.close(() => resume(Effect.void)))
  )

/**
 * LPO over UDP: `v1 price <key> <ASSET>[/<QUOTE>] [<rid>]`. Malformed or unauthenticated datagrams
 * get a reply only when it is no longer than the request (no amplification); replies to valid
 * requests reuse the answer's cached body. Every datagram that gets a reply becomes a usage row.
 */
export const LpoUdpServer = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* AppConfig
  const meta = yield* ServerInfo
  const deps = {
    apiKeys: yield* ApiKeys, limiter: yield* RateLimiter, prices: yield* PriceCache, params: yield* Params, stats: yield* RuntimeStats
  }
  const usage = yield* UsageSink
  const v = deps.stats.values
  // Each client socket's last key and hash (KeyHashMemo): a client sends its key with every
  // datagram, from the same address and port. Bounded: past the limit the memos start over.
  const keyMemos = new Map<string, KeyHashMemo>()
  const memoFor = (rinfo: RemoteInfo): KeyHashMemo => {
    const source = `${rinfo.address} ${rinfo.port}`
    let memo = keyMemos.get(source)
    if (memo === undefined) {
      if (keyMemos.size >= MAX_KEY_MEMOS) keyMemos.clear()
      keyMemos.set(source, memo = newKeyHashMemo())
    }
    return memo
  }
  // Requests waiting on a key lookup; shutdown lets them answer before the socket closes.
  let pending = 0
  let closed = false

  const onMessage = (socket: Socket, msg: Buffer, rinfo: RemoteInfo) => {
    const startedAt = performance.now()
    const receivedAt = Date.now()
    v[COUNTER.requests_total]!++
    v[COUNTER.udp_requests]!++
    const request = parseUdpRequest(msg)
    const send = (reply: Buffer, code: ResponseCode, keyId: string | undefined, authenticated: boolean, extra?: { asset?: string; quote?: string; price?: number; source?: string }) => {
      if (closed || (!authenticated && !mayReplyUnauthenticated(reply, msg))) {
        v[COUNTER.udp_silent_drops]!++
        return
      }
      // No per-datagram callback (it costs an allocation per reply): send errors arrive as
      // socket "error" events and are counted there.
      socket.send(reply, rinfo.port, rinfo.address)
      usage.record(usageRow(meta, {
        requestId: newRequestId(), apiKeyId: keyId, service: "LPO", protocol: "udp", endpoint: "price",
        asset: extra?.asset, quote: extra?.quote, source: extra?.source, price: extra?.price, code,
        latencyUs: Math.max(0, Math.round((performance.now() - startedAt) * 1000)), clientIp: rinfo.address, bytesOut: reply.length, createdAt: receivedAt
      }))
      v[COUNTER.usage_rows_recorded]!++
    }
    if (request._tag !== "price") {
      v[COUNTER.udp_malformed]!++
      // A summary request belongs to the report server's port.
      const code = request._tag === "summary" ? "NOT_FOUND" : "BAD_REQUEST"
      return send(encodeErrorReply(request.rid, code), code, undefined, false)
    }
    pending++
    authenticateThen(deps, request.apiKey, receivedAt, (auth) => {
      pending--
      if (auth._tag !== "Authorized") {
        const code = auth._tag === "Refused" ? auth.code : "INVALID_API_KEY"
        v[code === "SYSTEM_BUSY" ? COUNTER.system_busy : COUNTER.auth_failures]!++
        return send(encodeErrorReply(request.rid, code), code, auth._tag === "Refused" ? auth.keyId : undefined, false)
      }
      const query = parseQuery(request.asset, request.quote ?? null, null, false)
      const extra = { asset: request.asset, quote: request.quote ?? "USD" }
      if (typeof query === "string") return send(encodeErrorReply(request.rid, "BAD_REQUEST"), "BAD_REQUEST", auth.key.id, true, extra)
      const now = Date.now()
      const outcome = runQuery(deps, auth.key, query, now)
      if (outcome.code !== "OK") return send(encodeErrorReply(request.rid, outcome.code), outcome.code, auth.key.id, true, extra)
      const answer = outcome.answers[0]!
      send(encodePriceReply(request.rid, answer.udpBody, now - answer.ts), "OK", auth.key.id, true, { ...extra, price: answer.price, source: answer.source })
    }, memoFor(rinfo))
  }

  const socket = yield* bindUdp(config.lpoUdpPort, config.bindHost, onMessage)
  socket.on("error", () => void v[COUNTER.udp_send_errors]!++)
  // Runs before the socket closes (finalizers run in reverse): answer what is waiting, briefly.
  yield* Effect.addFinalizer(() =>
    Effect.promise(async () => {
      const deadline = Date.now() + 2_000
      while (pending > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
      closed = true
    }))
  yield* Effect.logInfo("LPO UDP listening", { port: config.lpoUdpPort, host: config.bindHost }).pipe(withModule("lpo-udp"))
}))
