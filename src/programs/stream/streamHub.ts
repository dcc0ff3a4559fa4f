/**
 * The partner stream (spec: "Partner stream"): WebSocket `GET /ws` and Server-Sent Events
 * `GET /stream` on the LPO's HTTP port. Both speak the same messages through one session type;
 * only the transport differs.
 *
 * Per connection: one PriceCache subscription (at most one pending event per subscribed asset, so
 * a slow reader holds `subscriptions` events, never a backlog), per-asset coalescing at
 * `stream_min_interval_ms` (newest wins), `seq` on every message. Transport buffers are bounded by
 * the slow-consumer rule: 1 MiB unsent, or unsent data that has not drained for 5 s, closes the
 * connection (4008). Timers are one sweep per hub, not per connection.
 */
import { Cause, Effect, Exit, type Fiber, Scope } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import type { Duplex } from "node:stream"
import { type WebSocket, WebSocketServer } from "ws"
import type { ErrorCode, ResponseCode } from "../../domain/errorCodes.ts"
import { type Lang, messageFor } from "../../domain/messages.ts"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import {
  CLOSE,
  heartbeatMessage,
  type OpenMessage,
  parseClientMessage,
  parseStreamAsset,
  priceUpdateHead,
  priceUpdateMessage,
  responseMessage,
  type StreamAsset,
  streamAssetName,
  staleMessage,
  withSeq
} from "../../domain/streamMessages.ts"
import { formatResponse, takeUpgradedSocket } from "../../layers/http/fastHttp.ts"
import { apiKeyOf, latencyUs, type RequestInfo } from "../../layers/http/httpKit.ts"
import { runDetachedLog, withModule } from "../../layers/Logging.ts"
import type { ApiKeyRecord, AuthResult } from "../../services/ApiKeys.ts"
import type { PriceEvent, PriceSubscription, WatchResult } from "../../services/PriceCache.ts"
import { authenticateThen } from "../lpo/priceQuery.ts"
import { type KeySlots, makeKeySlots } from "./keySlots.ts"
import type { PriceHttpDeps } from "../lpo/priceHttp.ts"

/** The 403 code for a key whose tier has no partner stream (the spec names only the status). */
export const NOT_PARTNER_CODE: ErrorCode = "STREAM_NOT_ENABLED"
const NOT_PARTNER_DETAIL = "the partner stream needs a key of a tier with partner_ws (partner)"

/** Limits and timings; the defaults are the spec's. Tests shorten them. */
export interface StreamOptions {
  /** A heartbeat after this long without another message. */
  readonly heartbeatMs: number
  /** WebSocket ping period; a connection that has not answered the previous ping by the next one is closed. */
  readonly pingIntervalMs: number
  /** Connections end after this long, with a RECONNECT response first. */
  readonly lifetimeMs: number
  /** A WebSocket without a header key must authenticate within this long. */
  readonly authTimeoutMs: number
  /** Unsent bytes past which a connection is a slow consumer. */
  readonly maxUnsentBytes: number
  /** Unsent data that has not drained for this long makes a slow consumer. */
  readonly maxBlockedMs: number
  /** SSE comment line period. */
  readonly sseCommentMs: number
  /** After a close frame, how long the peer has to answer before the socket is destroyed. */
  readonly closeGraceMs: number
  /** How often the hub's sweep runs (heartbeats, pings, lifetimes, blocked sends). */
  readonly sweepMs: number
  /** How often a connection's key is checked again (a revocation ends its streams within this). */
  readonly keyCheckMs: number
  /** Client messages a connection may send per second; past it they are refused (each would be a usage row). */
  readonly maxClientMessagesPerSecond: number
}

export const DEFAULT_STREAM_OPTIONS: StreamOptions = {
  heartbeatMs: 1000,
  pingIntervalMs: 30_000,
  lifetimeMs: 24 * 60 * 60 * 1000,
  authTimeoutMs: 5000,
  maxUnsentBytes: 1024 * 1024,
  maxBlockedMs: 5000,
  sseCommentMs: 15_000,
  closeGraceMs: 5000,
  sweepMs: 200,
  keyCheckMs: 1000,
  maxClientMessagesPerSecond: 20
}

/** The largest client message accepted (Hermes caps at 1 MiB; a subscribe of 500 assets is ~5 KiB). */
const MAX_CLIENT_MESSAGE_BYTES = 64 * 1024

export interface StreamHubStats {
  readonly connections: number
  readonly opened: number
  readonly slowConsumerCloses: number
  /** The most a connection had unsent when it was closed as a slow consumer. */
  readonly slowConsumerUnsentMax: number
  readonly messagesSent: number
}

export interface StreamHub {
  /** node:http `shouldUpgradeCallback`: only `GET /ws` with `Upgrade: websocket` is upgraded. */
  readonly wantsUpgrade: (req: IncomingMessage) => boolean
  /** node:http 'upgrade' for `/ws`. */
  readonly upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer, info: RequestInfo) => void
  /** `GET|HEAD /stream` (SSE), and `GET|HEAD /ws` without an upgrade (answered 400). */
  readonly request: (req: IncomingMessage, res: ServerResponse, info: RequestInfo) => void
  readonly stats: () => StreamHubStats
  /** Shutdown: every connection gets a RECONNECT response and is closed (going away). */
  readonly shutdown: Effect.Effect<void>
}

interface Transport {
  /** Queues one message; answers the bytes it puts on the wire. */
  readonly send: (text: string, type: string, seq: number) => number
  readonly unsent: () => number
  /** Messages sent until `flush` leave together (one write), not one system call each. */
  readonly hold: () => void
  readonly flush: () => void
  /** Ends the connection (a WebSocket close code; SSE just ends the response). */
  readonly end: (code: number, reason: string) => void
  readonly destroy: () => void
}

interface Subscribed {
  readonly asset: string
  readonly quote: string
  readonly name: string
  lastSentAt: number
  /** The newest event not yet sent because of the per-asset interval. */
  held: PriceEvent | undefined
}

interface Session {
  readonly protocol: "ws" | "http"
  readonly endpoint: "/ws" | "/stream"
  readonly clientIp: string
  readonly lang: Lang
  readonly openedAt: number
  readonly transport: Transport
  readonly ws: WebSocket | undefined
  key: ApiKeyRecord | undefined
  seq: number
  bytesOut: number
  lastSentAt: number
  readonly subs: Map<string, Subscribed>
  heldCount: number
  heldTimer: ReturnType<typeof setTimeout> | undefined
  heldDueAt: number
  subscription: PriceSubscription | undefined
  scope: Scope.Closeable | undefined
  fiber: Fiber.Fiber<void> | undefined
  /** Last time the transport had nothing unsent (slow-consumer rule). */
  clearAt: number
  nextPingAt: number
  nextKeyCheckAt: number
  /** Client messages in the current one-second window, and when it started. */
  messages: number
  messagesSince: number
  awaitingPong: boolean
  nextCommentAt: number
  authDeadline: number | undefined
  /** Messages that came while the first-message key was being looked up, handled after it. */
  waiting: Array<{ readonly data: unknown; readonly isBinary: boolean }> | undefined
  /** Refused at authentication (its one usage row is written): no closing row. */
  refused: boolean
  closed: boolean
  closeRecorded: boolean
}

const subKey = (asset: string, quote: string): string => `${asset}/${quote}`

/** Bytes a WebSocket text frame of `length` payload bytes takes (server frames are unmasked). */
const wsFrameBytes = (length: number): number => length + (length < 126 ? 2 : length < 65536 ? 4 : 10)

/**
 * `slots` counts connections per key (makeKeySlots: across the cluster through the shared cache);
 * without it, per process.
 */
export const makeStreamHub = (
  deps: PriceHttpDeps,
  options: StreamOptions = DEFAULT_STREAM_OPTIONS,
  slots: KeySlots = makeKeySlots(undefined, "local", () => deps.params.int("stream_max_connections_per_key"))
): StreamHub => {
  const sessions = new Set<Session>()
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_CLIENT_MESSAGE_BYTES, perMessageDeflate: false, clientTracking: false })
  const counts = { opened: 0, slowConsumerCloses: 0, slowConsumerUnsentMax: 0, messagesSent: 0 }
  /** Price update text shared by every connection sent the same event. */
  const heads = new WeakMap<PriceEvent, string>()
  let sweepTimer: ReturnType<typeof setInterval> | undefined

  const record = (s: { readonly protocol: "ws" | "http"; readonly clientIp: string }, endpoint: string, keyId: string | undefined, code: ResponseCode, extra: {
    readonly requestId?: string
    readonly status?: number
    readonly asset?: string
    readonly bytesOut?: number
    readonly latencyUs?: number
  } = {}) =>
    deps.usage.record({
      requestId: extra.requestId, apiKeyId: keyId, service: "LPO", protocol: s.protocol, endpoint,
      asset: extra.asset?.slice(0, 200), code, status: extra.status, latencyUs: extra.latencyUs ?? 0,
      clientIp: s.clientIp, bytesOut: extra.bytesOut ?? 0, createdAt: Date.now()
    })

  // --- sending -------------------------------------------------------------------------------

  const send = (s: Session, open: OpenMessage, type: string, now: number) => {
    if (s.closed) return
    const unsentBefore = s.transport.unsent()
    const seq = ++s.seq
    s.bytesOut += s.transport.send(withSeq(open, seq), type, seq)
    s.lastSentAt = now
    counts.messagesSent++
    if (unsentBefore === 0) s.clearAt = now
    if (s.transport.unsent() > options.maxUnsentBytes) slowConsumer(s)
  }

  const respond = (s: Session, status: "success" | "error", code: string, message: string, assets: ReadonlyArray<string>) =>
    send(s, responseMessage(status, code, message, assets), "response", Date.now())

  const respondCode = (s: Session, code: ResponseCode, assets: ReadonlyArray<string>, detail?: string) =>
    respond(s, code === "OK" ? "success" : "error", code, detail === undefined ? messageFor(code, s.lang) : `${messageFor(code, s.lang)} (${detail})`, assets)

  const sendEvent = (s: Session, sub: Subscribed, e: PriceEvent, now: number) => {
    sub.lastSentAt = now
    if (e._tag === "Price") {
      let head = heads.get(e)
      if (head === undefined) {
        head = priceUpdateHead(e.asset, e.quote, e.price, e.ts)
        heads.set(e, head)
      }
      send(s, priceUpdateMessage(head, e.ts, now), "price_update", now)
    } else send(s, staleMessage(e.asset, e.quote, e.ts, now), "stale", now)
  }

  const sendHeld = (s: Session) => {
    s.heldTimer = undefined
    if (s.closed) return
    const now = Date.now()
    const interval = deps.params.int("stream_min_interval_ms")
    let nextDue = Number.POSITIVE_INFINITY
    batched(s, () => {
      for (const sub of s.subs.values()) {
        const held = sub.held
        if (held === undefined) continue
        const due = sub.lastSentAt + interval
        if (due <= now) {
          sub.held = undefined
          s.heldCount--
          sendEvent(s, sub, held, now)
          if (s.closed) break
        } else if (due < nextDue) nextDue = due
      }
    })
    if (!s.closed && s.heldCount > 0) scheduleHeld(s, nextDue, now)
  }

  const scheduleHeld = (s: Session, due: number, now: number) => {
    if (s.heldTimer !== undefined && s.heldDueAt <= due) return
    if (s.heldTimer !== undefined) clearTimeout(s.heldTimer)
    s.heldDueAt = due
    s.heldTimer = setTimeout(sendHeld, Math.max(0, due - now), s)
  }

  /** Changes from the PriceCache: sent now, or held until the asset's interval has passed (the newest wins). */
  /** Runs `send` with the connection's writes held, released even when it throws (a corked socket sends nothing). */
  const batched = (s: Session, send: () => void) => {
    s.transport.hold()
    try {
      send()
    } finally {
      s.transport.flush()
    }
  }

  const onEvents = (s: Session, events: ReadonlyArray<PriceEvent>) => {
    if (s.closed) return
    batched(s, () => sendEvents(s, events))
  }

  const sendEvents = (s: Session, events: ReadonlyArray<PriceEvent>) => {
    const now = Date.now()
    const interval = deps.params.int("stream_min_interval_ms")
    for (const e of events) {
      const sub = s.subs.get(subKey(e.asset, e.quote))
      if (sub === undefined) continue
      if (sub.held === undefined && now - sub.lastSentAt >= interval) {
        sendEvent(s, sub, e, now)
        if (s.closed) return
      } else {
        if (sub.held === undefined) s.heldCount++
        sub.held = e
        scheduleHeld(s, sub.lastSentAt + interval, now)
      }
    }
  }

  // --- lifecycle -----------------------------------------------------------------------------

  const startSweep = () => {
    if (sweepTimer !== undefined) return
    sweepTimer = setInterval(sweep, options.sweepMs)
    sweepTimer.unref()
  }

  const newSession = (protocol: "ws" | "http", transport: Transport, ws: WebSocket | undefined, info: RequestInfo, key: ApiKeyRecord | undefined): Session => {
    const now = Date.now()
    const s: Session = {
      protocol, endpoint: protocol === "ws" ? "/ws" : "/stream", clientIp: info.clientIp, lang: info.lang, openedAt: now, transport, ws, key,
      seq: 0, bytesOut: 0, lastSentAt: now, subs: new Map(), heldCount: 0, heldTimer: undefined, heldDueAt: 0,
      subscription: undefined, scope: undefined, fiber: undefined, clearAt: now,
      nextPingAt: now + options.pingIntervalMs, nextKeyCheckAt: now + options.keyCheckMs, messages: 0, messagesSince: now, awaitingPong: false, nextCommentAt: now + options.sseCommentMs,
      authDeadline: key === undefined ? now + options.authTimeoutMs : undefined, waiting: undefined, refused: false, closed: false, closeRecorded: false
    }
    sessions.add(s)
    counts.opened++
    startSweep()
    return s
  }

  /** The session's PriceCache subscription and the fiber reading it, made when it first subscribes. */
  const subscriptionOf = (s: Session): PriceSubscription => {
    if (s.subscription !== undefined) return s.subscription
    const scope = Scope.makeUnsafe()
    const subscription = Effect.runSync(Scope.provide(scope)(deps.prices.subscribe))
    s.scope = scope
    s.subscription = subscription
    s.fiber = Effect.runFork(Effect.forever(Effect.map(subscription.take, (events) => onEvents(s, events))).pipe(
      // A bug here must not leave a connection open that no longer sends: say so, and close it.
      Effect.catchCause((cause) =>
        Effect.sync(() => {
          if (Cause.hasInterruptsOnly(cause)) return
          runDetachedLog(Effect.logError("stream session failed", Cause.pretty(cause)).pipe(withModule("stream")))
          closeSession(s, CLOSE.internalError, "internal error")
        })
      )
    ))
    return subscription
  }

  const releaseKeySlot = (key: ApiKeyRecord) => slots.release(key.id)

  /** Frees everything the session holds and writes its closing usage row; idempotent. */
  const release = (s: Session) => {
    if (!s.closed) s.closed = true
    if (s.closeRecorded) return
    s.closeRecorded = true
    sessions.delete(s)
    if (s.heldTimer !== undefined) clearTimeout(s.heldTimer)
    s.heldTimer = undefined
    for (const sub of s.subs.values()) sub.held = undefined
    s.heldCount = 0
    s.fiber?.interruptUnsafe()
    if (s.scope !== undefined) Effect.runFork(Scope.close(s.scope, Exit.void))
    s.subscription = undefined
    if (s.key !== undefined) {
      releaseKeySlot(s.key)
      record(s, `${s.endpoint}:close`, s.key.id, "OK", { bytesOut: s.bytesOut })
    } else if (!s.refused) {
      // Closed by the client before it authenticated: the connection's one row.
      record(s, s.endpoint, undefined, "MISSING_API_KEY", { bytesOut: s.bytesOut })
    }
  }

  /** A WebSocket refused at its first-message authentication: the error response, its row, close. */
  const refuseSession = (s: Session, code: ErrorCode, keyId: string | undefined, detail: string | undefined, reason: string) => {
    respondCode(s, code, [], detail)
    s.refused = true
    record(s, s.endpoint, keyId, code, { bytesOut: s.bytesOut })
    closeSession(s, CLOSE.policy, reason)
  }

  /** Close with a code: no more messages; the socket is destroyed if the peer does not finish closing in time. */
  const closeSession = (s: Session, code: number, reason: string) => {
    if (s.closed) return
    s.closed = true
    s.transport.end(code, reason)
    const timer = setTimeout(() => s.transport.destroy(), options.closeGraceMs)
    timer.unref()
    // Memory goes now, not when the peer gets round to it.
    release(s)
  }

  const slowConsumer = (s: Session) => {
    if (s.closed) return
    counts.slowConsumerCloses++
    const unsent = s.transport.unsent()
    counts.slowConsumerUnsentMax = Math.max(counts.slowConsumerUnsentMax, unsent)
    runDetachedLog(Effect.logInfo("stream: slow consumer closed", { key_id: s.key?.id ?? null, protocol: s.protocol, unsent_bytes: unsent }).pipe(withModule("stream")))
    closeSession(s, CLOSE.slowConsumer, "slow consumer")
  }

  const reconnect = (s: Session, why: string) => {
    respond(s, "error", "RECONNECT", why, [])
    closeSession(s, CLOSE.goingAway, "reconnect")
  }

  const sweep = () => {
    const now = Date.now()
    for (const s of sessions) {
      if (s.closed) continue
      const unsent = s.transport.unsent()
      if (unsent === 0) s.clearAt = now
      else if (now - s.clearAt >= options.maxBlockedMs) {
        slowConsumer(s)
        continue
      }
      if (s.authDeadline !== undefined) {
        if (now >= s.authDeadline) {
          refuseSession(s, "MISSING_API_KEY", undefined, `send {"type":"auth","key":"…"} within ${options.authTimeoutMs / 1000} s`, "authentication timeout")
        }
        continue
      }
      if (now - s.openedAt >= options.lifetimeMs) {
        reconnect(s, `connections last ${Math.round(options.lifetimeMs / 3_600_000)} h; reconnect`)
        continue
      }
      if (s.ws !== undefined && now >= s.nextPingAt) {
        if (s.awaitingPong) {
          // No pong since the last ping: the peer or the path is gone.
          s.transport.destroy()
          release(s)
          continue
        }
        s.awaitingPong = true
        s.nextPingAt = now + options.pingIntervalMs
        s.ws.ping()
      }
      if (now >= s.nextKeyCheckAt) {
        s.nextKeyCheckAt = now + options.keyCheckMs
        if (!keyStillValid(s, now)) continue
      }
      if (s.protocol === "http" && now >= s.nextCommentAt) {
        s.nextCommentAt = now + options.sseCommentMs
        s.bytesOut += s.transport.send(": keep-alive\n\n", "", 0)
      }
      if (now - s.lastSentAt >= options.heartbeatMs) send(s, heartbeatMessage(now), "heartbeat", now)
    }
    if (sessions.size === 0 && sweepTimer !== undefined) {
      clearInterval(sweepTimer)
      sweepTimer = undefined
    }
  }

  /** A key revoked or expired since the connection opened ends it (checked every keyCheckMs). */
  const keyStillValid = (s: Session, now: number): boolean => {
    if (s.key === undefined) return true
    const auth = deps.apiKeys.authenticateHash(s.key.hash, now)
    if (auth._tag !== "Refused" || (auth.code !== "KEY_REVOKED" && auth.code !== "KEY_EXPIRED")) return true
    respondCode(s, auth.code, [])
    closeSession(s, CLOSE.policy, "key no longer valid")
    return false
  }

  // --- subscribe / unsubscribe ---------------------------------------------------------------

  /** Parses the assets of a message; the names that are not assets. */
  const parseAssets = (raw: ReadonlyArray<unknown>): { readonly assets: ReadonlyArray<StreamAsset>; readonly invalid: ReadonlyArray<string> } => {
    const seen = new Set<string>()
    const assets: Array<StreamAsset> = []
    const invalid: Array<string> = []
    for (const r of raw) {
      const a = parseStreamAsset(r)
      if (a === undefined) {
        invalid.push(String(typeof r === "string" ? r : JSON.stringify(r)).slice(0, 40))
        continue
      }
      const k = subKey(a.asset, a.quote)
      if (seen.has(k)) continue
      seen.add(k)
      assets.push(a)
    }
    return { assets, invalid }
  }

  /**
   * Subscribe all or nothing: a bad or unknown asset, or one past the tier's limit, refuses the
   * whole message. Answered with a response, then the current state of every asset named (a
   * re-subscribe included), so the client is whole at once.
   */
  const subscribe = (s: Session, key: ApiKeyRecord, raw: ReadonlyArray<unknown>): ResponseCode => {
    const names = raw.map((r) => String(r).slice(0, 40))
    const finish = (code: ResponseCode, assets: ReadonlyArray<string>, detail?: string) => {
      respondCode(s, code, assets, detail)
      record(s, `${s.endpoint}:subscribe`, key.id, code, { asset: names.join(",") })
      return code
    }
    const { assets, invalid } = parseAssets(raw)
    if (invalid.length > 0) return finish("BAD_REQUEST", invalid, "an asset is BTC or ETH/USDT")
    const added = assets.filter((a) => !s.subs.has(subKey(a.asset, a.quote)))
    const limit = key.tier.webhookAssets
    if (s.subs.size + added.length > limit) {
      return finish("BAD_REQUEST", assets.map(streamAssetName), `at most ${limit} subscriptions per connection on tier ${key.tier.tier}`)
    }
    const now = Date.now()
    const unknown = assets.filter((a) => deps.prices.lookup(a.asset, a.quote, undefined, now)._tag === "UnknownAsset")
    if (unknown.length > 0) return finish("UNKNOWN_ASSET", unknown.map(streamAssetName))
    const states = subscriptionOf(s).watch(assets)
    batched(s, () => {
      finish("OK", assets.map(streamAssetName))
      sendSnapshot(s, assets, states, now)
    })
    return "OK"
  }

  /** Records the subscriptions and sends each one's current state (the snapshot). */
  const sendSnapshot = (s: Session, assets: ReadonlyArray<StreamAsset>, states: ReadonlyArray<WatchResult>, now: number) => {
    states.forEach((state: WatchResult, i) => {
      const a = assets[i]!
      const k = subKey(a.asset, a.quote)
      let sub = s.subs.get(k)
      if (sub === undefined) {
        sub = { asset: a.asset, quote: a.quote, name: streamAssetName(a), lastSentAt: 0, held: undefined }
        s.subs.set(k, sub)
      }
      if (sub.held !== undefined) {
        sub.held = undefined
        s.heldCount--
      }
      // The snapshot: the current price, or stale (an asset the map lists without a fresh price).
      if (state._tag !== "UnknownAsset") sendEvent(s, sub, state, now)
    })
  }

  const unsubscribe = (s: Session, key: ApiKeyRecord, raw: ReadonlyArray<unknown>) => {
    const names = raw.map((r) => String(r).slice(0, 40))
    const { assets, invalid } = parseAssets(raw)
    const code: ResponseCode = invalid.length > 0 ? "BAD_REQUEST" : "OK"
    if (code === "OK") {
      const gone: Array<StreamAsset> = []
      for (const a of assets) {
        const k = subKey(a.asset, a.quote)
        const sub = s.subs.get(k)
        if (sub === undefined) continue
        if (sub.held !== undefined) s.heldCount--
        s.subs.delete(k)
        gone.push(a)
      }
      s.subscription?.unwatch(gone)
      respondCode(s, "OK", assets.map(streamAssetName))
    } else respondCode(s, code, invalid, "an asset is BTC or ETH/USDT")
    record(s, `${s.endpoint}:unsubscribe`, key.id, code, { asset: names.join(",") })
  }

  // --- authentication ------------------------------------------------------------------------

  type Problem = { readonly code: ErrorCode; readonly detail: string } | undefined

  /**
   * What refuses a key for the stream, after authentication: tier, maintenance, the per-key cap
   * (a slot is claimed when there is none; the caller releases it if the connection is gone).
   */
  const admit = (key: ApiKeyRecord, k: (problem: Problem) => void): void => {
    if (!key.tier.partnerWs) return k({ code: NOT_PARTNER_CODE, detail: NOT_PARTNER_DETAIL })
    if (deps.params.current().system_mode === "maintenance") return k({ code: "MAINTENANCE", detail: "the stream is closed for maintenance" })
    slots.claim(key.id, (granted) =>
      k(granted ? undefined : { code: "RATE_LIMITED", detail: `at most ${deps.params.int("stream_max_connections_per_key")} stream connections per key` }))
  }

  const refusalOf = (auth: AuthResult): { readonly code: ErrorCode; readonly keyId: string | undefined } =>
    auth._tag === "Refused" ? { code: auth.code, keyId: auth.keyId } : { code: "INVALID_API_KEY", keyId: undefined }

  /** The first message of a WebSocket without a header key. */
  const authenticateByMessage = (s: Session, plainKey: string) => {
    s.authDeadline = Number.POSITIVE_INFINITY // a lookup in progress is not a timeout
    // Messages behind the auth message wait until the key is looked up and admitted (both may be asynchronous).
    s.waiting = []
    const refuse = (code: ErrorCode, keyId: string | undefined, detail: string | undefined, reason: string) => {
      s.waiting = undefined
      refuseSession(s, code, keyId, detail, reason)
    }
    authenticateThen(deps, plainKey, Date.now(), (auth) => {
      if (s.closed) return
      if (auth._tag !== "Authorized") {
        const { code, keyId } = refusalOf(auth)
        deps.stats.values[code === "SYSTEM_BUSY" ? COUNTER.system_busy : COUNTER.auth_failures]!++
        return refuse(code, keyId, undefined, "authentication failed")
      }
      const key = auth.key
      admit(key, (problem) => {
        if (problem !== undefined) return refuse(problem.code, key.id, problem.detail, "not allowed")
        if (s.closed) return releaseKeySlot(key)
        s.key = key
        s.authDeadline = undefined
        record(s, s.endpoint, key.id, "OK", { status: 101 })
        respondCode(s, "OK", [])
        const waiting = s.waiting ?? []
        s.waiting = undefined
        for (const m of waiting) onClientMessage(s, m.data, m.isBinary)
      })
    })
  }

  /** Messages sent right behind the auth message (a subscribe, typically) wait for its answer. */
  const MAX_WAITING_MESSAGES = 16

  const onClientMessage = (s: Session, data: unknown, isBinary: boolean): void => {
    if (s.closed) return
    if (s.waiting !== undefined) {
      if (s.waiting.length >= MAX_WAITING_MESSAGES) return refuseSession(s, "BAD_REQUEST", undefined, "wait for the auth response", "too many messages before authentication")
      s.waiting.push({ data, isBinary })
      return
    }
    const now = Date.now()
    if (now - s.messagesSince >= 1000) {
      s.messagesSince = now
      s.messages = 0
    }
    if (++s.messages > options.maxClientMessagesPerSecond) {
      // Said once per window; the rest of the window's messages are dropped unanswered.
      if (s.messages === options.maxClientMessagesPerSecond + 1) respondCode(s, "RATE_LIMITED", [], `at most ${options.maxClientMessagesPerSecond} messages a second`)
      return
    }
    const text = isBinary ? "" : Buffer.isBuffer(data) ? data.toString("utf8") : String(data)
    const message = parseClientMessage(text)
    const key = s.key
    if (typeof message === "string") {
      if (key === undefined) return refuseSession(s, "MISSING_API_KEY", undefined, `the first message is {"type":"auth","key":"…"}`, "authentication required")
      return respondCode(s, "BAD_REQUEST", [], message)
    }
    if (message.type === "auth") {
      if (key !== undefined) return respondCode(s, "BAD_REQUEST", [], "already authenticated")
      return authenticateByMessage(s, message.key)
    }
    if (key === undefined) return refuseSession(s, "MISSING_API_KEY", undefined, `the first message is {"type":"auth","key":"…"}`, "authentication required")
    if (message.type === "subscribe") subscribe(s, key, message.assets)
    else unsubscribe(s, key, message.assets)
  }

  // --- WebSocket -----------------------------------------------------------------------------

  const wsTransport = (ws: WebSocket, socket: Duplex): Transport => ({
    send: (text, type) => {
      ws.send(text)
      // Price updates, stale events and heartbeats are ASCII; responses may carry localised text.
      return wsFrameBytes(type === "response" ? Buffer.byteLength(text) : text.length)
    },
    unsent: () => ws.bufferedAmount,
    // ws corks and uncorks around each frame; an outer cork keeps a batch's frames for one writev.
    hold: () => socket.cork(),
    flush: () => socket.uncork(),
    end: (code, reason) => ws.close(code, reason),
    destroy: () => ws.terminate()
  })

  const openWs = (req: IncomingMessage, socket: Duplex, head: Buffer, info: RequestInfo, key: ApiKeyRecord | undefined) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      const s = newSession("ws", wsTransport(ws, socket), ws, info, key)
      ws.on("message", (data, isBinary) => onClientMessage(s, data, isBinary))
      ws.on("pong", () => void (s.awaitingPong = false))
      ws.on("error", () => ws.terminate())
      ws.on("close", () => release(s))
      if (key !== undefined) record(s, "/ws", key.id, "OK", { requestId: info.requestId, status: 101, latencyUs: latencyUs(info) })
    })
  }

  /** An HTTP answer on a socket node:http gave up for the upgrade: the envelope, then close. */
  const refuseUpgrade = (socket: Duplex, info: RequestInfo, code: ErrorCode, keyId: string | undefined, detail?: string, extraHeaders?: ReadonlyArray<string | number>) => {
    const bytes = deps.sendEnvelope((status, headers, body) => {
      if (socket.writable) socket.end(formatResponse(status, headers, body, true))
      else socket.destroy()
    }, info, "LPO", code, detail === undefined ? "null" : JSON.stringify({ error: detail }), extraHeaders)
    record({ protocol: "ws", clientIp: info.clientIp }, "/ws", keyId, code, { requestId: info.requestId, bytesOut: bytes, latencyUs: latencyUs(info) })
  }

  const upgrade = (req: IncomingMessage, handed: Duplex, handedHead: Buffer, info: RequestInfo) => {
    // The raw connection when the fast server handed it over: frames go to it without a wrapper.
    const taken = takeUpgradedSocket(handed, handedHead)
    const socket: Duplex = taken?.socket ?? handed
    const head = taken?.head ?? handedHead
    socket.on("error", () => socket.destroy())
    const plainKey = apiKeyOf(info)
    // Browsers cannot set headers: without a key the first message authenticates.
    if (plainKey === undefined) return openWs(req, socket, head, info, undefined)
    authenticateThen(deps, plainKey, info.receivedAt, (auth) => {
      if (auth._tag !== "Authorized") {
        const { code, keyId } = refusalOf(auth)
        deps.stats.values[code === "SYSTEM_BUSY" ? COUNTER.system_busy : COUNTER.auth_failures]!++
        return refuseUpgrade(socket, info, code, keyId)
      }
      const key = auth.key
      admit(key, (problem) => {
        if (problem !== undefined) {
          return refuseUpgrade(socket, info, problem.code, key.id, problem.detail, problem.code === "RATE_LIMITED" ? ["retry-after", 5] : undefined)
        }
        if (socket.destroyed) return releaseKeySlot(key)
        openWs(req, socket, head, info, key)
      })
    }, info.keyMemo)
  }

  // --- Server-Sent Events --------------------------------------------------------------------

  const sseTransport = (res: ServerResponse): Transport => {
    let batch: string | undefined
    return {
      send: (text, type, seq) => {
        const frame = type === "" ? text : `event: ${type}\nid: ${seq}\ndata: ${text}\n\n`
        if (batch === undefined) res.write(frame)
        else batch += frame
        return type === "response" ? Buffer.byteLength(frame) : frame.length
      },
      unsent: () => res.writableLength + (res.socket?.writableLength ?? 0) + (batch?.length ?? 0),
      hold: () => void (batch ??= ""),
      flush: () => {
        const text = batch
        batch = undefined
        if (text !== undefined && text !== "" && !res.writableEnded && !res.destroyed) res.write(text)
      },
      end: () => void res.end(),
      destroy: () => void res.destroy()
    }
  }

  const sseHeaders = (info: RequestInfo) => ({
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
    "x-request-id": info.requestId
  })

  const sse = (req: IncomingMessage, res: ServerResponse, info: RequestInfo) => {
    const reply = (status: number, headers: ReadonlyArray<string | number>, body: string) => {
      res.writeHead(status, headers as unknown as Array<string>)
      res.end(info.method === "HEAD" ? undefined : body)
    }
    const refuse = (code: ErrorCode, keyId: string | undefined, detail?: string, extraHeaders?: ReadonlyArray<string | number>) => {
      const bytes = deps.sendEnvelope(reply, info, "LPO", code, detail === undefined ? "null" : JSON.stringify({ error: detail }), extraHeaders)
      record({ protocol: "http", clientIp: info.clientIp }, "/stream", keyId, code, { requestId: info.requestId, bytesOut: bytes, latencyUs: latencyUs(info) })
    }
    authenticateThen(deps, apiKeyOf(info), info.receivedAt, (auth) => {
      if (auth._tag !== "Authorized") {
        const { code, keyId } = refusalOf(auth)
        deps.stats.values[code === "SYSTEM_BUSY" ? COUNTER.system_busy : COUNTER.auth_failures]!++
        return refuse(code, keyId)
      }
      const key = auth.key
      if (!key.tier.partnerWs) return refuse(NOT_PARTNER_CODE, key.id, NOT_PARTNER_DETAIL)
      const raw = info.query.get("assets")
      if (raw === null || raw === "") return refuse("BAD_REQUEST", key.id, "assets is required, e.g. assets=BTC,ETH/USDT")
      const { assets, invalid } = parseAssets(raw.split(","))
      if (invalid.length > 0) return refuse("BAD_REQUEST", key.id, `invalid asset ${JSON.stringify(invalid[0])}; an asset is BTC or ETH/USDT`)
      if (assets.length > key.tier.webhookAssets) return refuse("BAD_REQUEST", key.id, `at most ${key.tier.webhookAssets} subscriptions per connection on tier ${key.tier.tier}`)
      const now = Date.now()
      const unknown = assets.filter((a) => deps.prices.lookup(a.asset, a.quote, undefined, now)._tag === "UnknownAsset")
      if (unknown.length > 0) return refuse("UNKNOWN_ASSET", key.id, `unknown asset ${unknown.map(streamAssetName).join(",")}`)
      if (info.method === "HEAD") {
        // What GET would answer, without opening a stream (so without taking a connection slot).
        if (deps.params.current().system_mode === "maintenance") return refuse("MAINTENANCE", key.id, "the stream is closed for maintenance")
        res.writeHead(200, sseHeaders(info))
        res.end()
        return record({ protocol: "http", clientIp: info.clientIp }, "/stream", key.id, "OK", { requestId: info.requestId, latencyUs: latencyUs(info) })
      }
      admit(key, (problem) => {
        if (problem !== undefined) return refuse(problem.code, key.id, problem.detail, problem.code === "RATE_LIMITED" ? ["retry-after", 5] : undefined)
        if (res.destroyed) return releaseKeySlot(key)
        openSse(req, res, info, key, raw, assets)
      })
    }, info.keyMemo)
  }

  const openSse = (req: IncomingMessage, res: ServerResponse, info: RequestInfo, key: ApiKeyRecord, raw: string, assets: ReadonlyArray<StreamAsset>) => {
    res.writeHead(200, sseHeaders(info))
    res.flushHeaders()
    const s = newSession("http", sseTransport(res), undefined, info, key)
    res.on("close", () => release(s))
    req.socket.on("error", () => res.destroy())
    record(s, "/stream", key.id, "OK", { requestId: info.requestId, latencyUs: latencyUs(info), asset: raw })
    // EventSource reconnects by itself, sending Last-Event-ID: the snapshot below makes it whole.
    subscribe(s, key, assets.map(streamAssetName))
  }

  const request = (req: IncomingMessage, res: ServerResponse, info: RequestInfo) => {
    if (info.path === "/stream") return sse(req, res, info)
    // GET /ws without an upgrade: say what is missing.
    const bytes = deps.sendEnvelope((status, headers, body) => {
      res.writeHead(status, [...headers, "upgrade", "websocket"] as unknown as Array<string>)
      res.end(info.method === "HEAD" ? undefined : body)
    }, info, "LPO", "BAD_REQUEST", JSON.stringify({ error: "GET /ws is a WebSocket: send Upgrade: websocket (or use GET /stream for Server-Sent Events)" }))
    record({ protocol: "ws", clientIp: info.clientIp }, "/ws", undefined, "BAD_REQUEST", { requestId: info.requestId, bytesOut: bytes, latencyUs: latencyUs(info) })
  }

  return {
    wantsUpgrade: (req) => {
      const url = req.url ?? ""
      const path = url.indexOf("?") === -1 ? url : url.slice(0, url.indexOf("?"))
      return req.method === "GET" && path === "/ws" && (req.headers.upgrade ?? "").toLowerCase() === "websocket"
    },
    upgrade,
    request,
    stats: () => ({ connections: sessions.size, ...counts }),
    shutdown: Effect.promise(async () => {
      // Deleting the current entry while iterating a Set is safe.
      for (const s of sessions) reconnect(s, "server shutting down; reconnect")
      if (sweepTimer !== undefined) clearInterval(sweepTimer)
      sweepTimer = undefined
      // A moment for close frames to go out; the listener destroys what is left.
      await new Promise((r) => setTimeout(r, 100))
    })
  }
}
