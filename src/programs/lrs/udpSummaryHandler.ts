/**
 * The LRS over UDP: `v1 summary <api_key> [<from> <to>] [<rid>]` answers one datagram of
 * single-line JSON, the window's totals and a breakdown by service:
 *
 *     {"ok":true,"rid":"q1","from":"…","to":"…","requests":12,"errors":1,"bytes_out":3456,
 *      "services":[{"service":"LPO","requests":12,…,"p50_us":210,"p95_us":900,"p99_us":1500}],"data_through":"…"}
 *
 * (latency percentiles per service: those of a whole window are not a sum of its groups').
 *
 * The same rules as the HTTP reports (LRS-enabled keys, the tier's rate limit, the monthly report
 * limit, at most 93 days back) and the LPO's anti-amplification rule: a datagram that is malformed
 * or carries no valid key gets a reply only when the reply is no longer than the request. Every
 * datagram that gets a reply is one usage row (service LRS, protocol udp, endpoint `summary`).
 */
import { Effect } from "effect"
import type { RemoteInfo } from "node:dgram"
import { rfc3339 } from "../../domain/envelope.ts"
import type { ResponseCode } from "../../domain/errorCodes.ts"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import { encodeErrorReply, mayReplyUnauthenticated, parseUdpRequest } from "../../domain/udpCodec.ts"
import { nextRequestSeq } from "../../layers/http/httpKit.ts"
import { runDetachedLog } from "../../layers/Logging.ts"
import type { UsageSink } from "../../services/UsageSink.ts"
import type { SummaryGroup } from "../../services/UsageSummaries.ts"
import { authenticateKey, type LrsDeps } from "./lrsApi.ts"
import { reportWindow } from "./reportWindow.ts"

/** Replies stay well inside one unfragmented datagram; past this the per-service breakdown is left out. */
export const MAX_SUMMARY_REPLY_BYTES = 1200

export interface UdpReplySocket {
  readonly send: (reply: Uint8Array, port: number, address: string) => void
}

export interface UdpSummaryHandler {
  readonly onMessage: (socket: UdpReplySocket, msg: Buffer, rinfo: RemoteInfo) => void
  /** Requests still being answered. */
  readonly pending: () => number
  /** No more replies (shutdown). */
  readonly close: () => void
}

const ridMember = (rid: string | undefined): string => (rid === undefined ? "" : `,"rid":${JSON.stringify(rid)}`)
const num = (x: number | null): string => (x === null || !Number.isFinite(x) ? "null" : String(x))

const measures = (g: SummaryGroup): string =>
  `"requests":${num(g.requests)},"errors":${num(g.errors)},"bytes_out":${num(g.bytes_out)},"p50_us":${num(g.p50_us)},"p95_us":${num(g.p95_us)},"p99_us":${num(g.p99_us)}`

/** The reply text: totals over every group, then the groups (services) while they fit. */
export const encodeSummaryReply = (rid: string | undefined, from: number, to: number, services: ReadonlyArray<SummaryGroup>, dataThrough: number): Buffer => {
  const sum = (f: (g: SummaryGroup) => number) => services.reduce((n, g) => n + f(g), 0)
  const total = `"requests":${num(sum((g) => g.requests))},"errors":${num(sum((g) => g.errors))},"bytes_out":${num(sum((g) => g.bytes_out))}`
  const head = `{"ok":true${ridMember(rid)},"from":"${rfc3339(from)}","to":"${rfc3339(to)}",${total}`
  const tail = `,"data_through":"${rfc3339(dataThrough)}"}`
  const list = `,"services":[${services.map((s) => `{"service":${JSON.stringify(s.group ?? "")},${measures(s)}}`).join(",")}]`
  const full = Buffer.from(head + list + tail, "utf8")
  return full.length <= MAX_SUMMARY_REPLY_BYTES ? full : Buffer.from(head + tail, "utf8")
}

export const makeUdpSummaryHandler = (deps: LrsDeps, usage: UsageSink["Service"]): UdpSummaryHandler => {
  const v = deps.stats.values
  let pending = 0
  let closed = false

  const finish = (socket: UdpReplySocket, msg: Buffer, rinfo: RemoteInfo, reply: Uint8Array, code: ResponseCode, keyId: string | undefined, authenticated: boolean, startedAt: number, receivedAt: number) => {
    if (closed || (!authenticated && !mayReplyUnauthenticated(reply, msg))) {
      v[COUNTER.udp_silent_drops]!++
      return
    }
    socket.send(reply, rinfo.port, rinfo.address)
    usage.record({
      requestSeq: nextRequestSeq(), apiKeyId: keyId, service: "LRS", protocol: "udp", endpoint: "summary", code,
      latencyUs: Math.max(0, Math.round((performance.now() - startedAt) * 1000)), clientIp: rinfo.address, bytesOut: reply.length, createdAt: receivedAt
    })
  }

  /** Everything after parsing a summary request; always ends in `finish` (or a silent drop). */
  const answer = (request: { readonly apiKey: string; readonly from: string | undefined; readonly to: string | undefined; readonly rid: string | undefined }, startedAt: number, now: number) =>
    Effect.gen(function*() {
      const refused = (code: ResponseCode, keyId: string | undefined, authenticated: boolean) =>
        ({ reply: encodeErrorReply(request.rid, code), code, keyId, authenticated }) as const
      const auth = yield* authenticateKey(deps, request.apiKey, now)
      if (auth._tag !== "Authorized") {
        const code = auth._tag === "Refused" ? auth.code : "INVALID_API_KEY"
        v[code === "SYSTEM_BUSY" ? COUNTER.system_busy : COUNTER.auth_failures]!++
        return refused(code, auth._tag === "Refused" ? auth.keyId : undefined, false)
      }
      const key = auth.key
      if (!key.lrsEnabled || key.tier.lrsReportsPerMonth === 0) return refused("LRS_NOT_ENABLED", key.id, true)
      const admission = deps.limiter.admit(key, 1, 0, now)
      if (admission._tag === "RateLimited") {
        v[COUNTER.rate_limited]!++
        return refused("RATE_LIMITED", key.id, true)
      }
      if (admission._tag === "Busy") return refused("SYSTEM_BUSY", key.id, true)
      const window = reportWindow(request.from, request.to, now)
      if (typeof window === "string") return refused("BAD_REQUEST", key.id, true)
      const counted = yield* deps.quota.admit(key.id, key.tier.lrsReportsPerMonth, now)
      if (counted._tag === "QuotaExceeded") {
        v[COUNTER.quota_exceeded]!++
        return refused("QUOTA_EXCEEDED", key.id, true)
      }
      const queriedAt = Date.now()
      const summary = yield* deps.summaries.summary({ apiKeyId: key.id, from: window.from, to: window.to, groupBy: "service" }).pipe(Effect.result)
      if (summary._tag === "Failure") {
        yield* Effect.logError("UDP summary query failed", summary.failure.message)
        yield* deps.quota.release(key.id, now)
        return refused("SYSTEM_BUSY", key.id, true)
      }
      const reply = encodeSummaryReply(request.rid, window.from, window.to, summary.success.groups, Math.min(window.to, queriedAt))
      return { reply, code: "OK" as ResponseCode, keyId: key.id, authenticated: true }
    })

  const onMessage = (socket: UdpReplySocket, msg: Buffer, rinfo: RemoteInfo) => {
    const startedAt = performance.now()
    const now = Date.now()
    v[COUNTER.requests_total]!++
    v[COUNTER.udp_requests]!++
    const request = parseUdpRequest(msg)
    if (request._tag !== "summary") {
      v[COUNTER.udp_malformed]!++
      // A price request belongs to the LPO's port.
      const code = request._tag === "price" ? "NOT_FOUND" : "BAD_REQUEST"
      return finish(socket, msg, rinfo, encodeErrorReply(request.rid, code), code, undefined, false, startedAt, now)
    }
    pending++
    void Effect.runPromise(answer(request, startedAt, now))
      .then((a) => finish(socket, msg, rinfo, a.reply, a.code, a.keyId, a.authenticated, startedAt, now))
      .catch((cause: unknown) => runDetachedLog(Effect.logError("UDP summary failed", String(cause))))
      .finally(() => void pending--)
  }

  return { onMessage, pending: () => pending, close: () => void (closed = true) }
}
