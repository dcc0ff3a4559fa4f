/**
 * The one WebSocket feed engine, for every exchange: connect, subscribe, read frames through the
 * exchange's protocol, answer what it asks, ping on its schedule, reconnect with backoff. All
 * exchange facts come from the `ExchangeProtocol`; nothing here knows any exchange.
 *
 * The per-frame path is plain callbacks (parseFrame → onTick), not an Effect per message; Effect
 * owns the lifecycle: one scope per connection, fibers for ping and watchdog, Schedule for backoff.
 */
import { Data, Duration, Effect, Schedule } from "effect"
import { WebSocket } from "ws"
import type { ExchangeProtocol, MarketSymbol, ParsedFrame } from "../../domain/exchanges/protocol.ts"
import type { Exchange, Tick } from "../../domain/price.ts"
import { messageOf } from "../../domain/errorMessage.ts"
import { wsText } from "../../domain/wsText.ts"

/** A read-only picture of one exchange's feed. */
export interface FeedHealth {
  readonly exchange: Exchange
  readonly connected: boolean
  /** Connection attempts, successful or not. */
  readonly connectAttempts: number
  /** Successful connections (WebSocket open). */
  readonly connects: number
  /** Successful connections after the first. */
  readonly reconnects: number
  readonly disconnects: number
  /** Connections closed because no frame arrived within the silence timeout. */
  readonly watchdogTimeouts: number
  readonly lastConnectedAt: number | undefined
  readonly lastMessageAt: number | undefined
  readonly messages: number
  readonly ticks: number
  readonly errors: number
  readonly lastError?: string
  /** "ASSET/QUOTE" → receive time of that market's newest tick. */
  readonly lastTickAt: Readonly<Record<string, number>>
}

/**
 * Mutable health counters the engine updates synchronously on every frame; anyone may
 * `snapshot()` them. One per exchange.
 */
export class FeedHealthRecorder {
  connected = false
  connectAttempts = 0
  connects = 0
  disconnects = 0
  watchdogTimeouts = 0
  lastConnectedAt: number | undefined = undefined
  lastMessageAt: number | undefined = undefined
  messages = 0
  ticks = 0
  errors = 0
  lastError: string | undefined = undefined
  readonly lastTickAt = new Map<string, number>()

  constructor(readonly exchange: Exchange) {}

  /** Successful connections after the first. */
  get reconnects(): number {
    return Math.max(0, this.connects - 1)
  }

  recordAttempt(): void {
    this.connectAttempts++
  }
  recordConnected(now: number): void {
    this.connected = true
    this.connects++
    this.lastConnectedAt = now
  }
  recordDisconnected(): void {
    if (this.connected) this.disconnects++
    this.connected = false
  }
  recordFrame(now: number): void {
    this.messages++
    this.lastMessageAt = now
  }
  recordTick(tick: Tick): void {
    this.ticks++
    this.lastTickAt.set(`${tick.asset}/${tick.quote}`, tick.receivedAt)
  }
  recordError(message: string): void {
    this.errors++
    this.lastError = message
  }
  recordWatchdogTimeout(): void {
    this.watchdogTimeouts++
  }

  snapshot(): FeedHealth {
    return {
      exchange: this.exchange,
      connected: this.connected,
      connectAttempts: this.connectAttempts,
      connects: this.connects,
      reconnects: this.reconnects,
      disconnects: this.disconnects,
      watchdogTimeouts: this.watchdogTimeouts,
      lastConnectedAt: this.lastConnectedAt,
      lastMessageAt: this.lastMessageAt,
      messages: this.messages,
      ticks: this.ticks,
      errors: this.errors,
      ...(this.lastError === undefined ? {} : { lastError: this.lastError }),
      lastTickAt: Object.fromEntries(this.lastTickAt)
    }
  }
}

export const makeFeedHealth = (exchange: Exchange): FeedHealthRecorder => new FeedHealthRecorder(exchange)

export interface FeedEngineOptions {
  readonly protocol: ExchangeProtocol
  readonly wsUrl: string
  readonly markets: ReadonlyArray<MarketSymbol>
  readonly onTick: (tick: Tick) => void
  /** Reconnect delays: exponential from initialMs, capped at maxMs, jittered ±20 %. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number }
  /** Overrides the protocol's silence timeout. */
  readonly silenceTimeoutMs?: number
  /** WebSocket handshake timeout (default 10 s). */
  readonly connectTimeoutMs?: number
  /**
   * Pause between the socket opening and the first subscribe frame (default 0). Crypto.com asks
   * for 1 s (reference §5.1); the caller passes it until the protocol interface carries it.
   */
  readonly subscribeDelayMs?: number
}

const DEFAULT_BACKOFF = { initialMs: 1_000, maxMs: 60_000 }
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000

class FeedConnectionError extends Data.TaggedError("FeedConnectionError")<{ readonly message: string }> {}

/** How one connection ended. A connection that delivered ticks was healthy: backoff restarts. */
interface ConnectionOutcome {
  readonly healthy: boolean
  readonly reason: string
}



/** ±20 % around `ms`, like `Schedule.jittered`. */
const jitter = (ms: number): number => ms * (0.8 + 0.4 * Math.random())

/**
 * Runs forever: connect → send subscribe frames → read frames → parseFrame → onTick and replies;
 * client pings on the protocol's schedule; a silence watchdog (no frame within the timeout →
 * close and reconnect); reconnect with exponential backoff and jitter, reset after a healthy
 * connection, resubscribing each time. Never fails: every problem lands in `health`.
 */
export const runFeed = (options: FeedEngineOptions, health: FeedHealthRecorder): Effect.Effect<never> => {
  const { protocol } = options
  const silenceTimeoutMs = options.silenceTimeoutMs ?? protocol.silenceTimeoutMs
  const backoff = options.backoff ?? DEFAULT_BACKOFF
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS
  const subscribeDelayMs = options.subscribeDelayMs ?? 0
  const marketsBySymbol: ReadonlyMap<string, MarketSymbol> = new Map(options.markets.map((m) => [m.symbol, m]))

  const reconnectDelays = Schedule.exponential(Duration.millis(backoff.initialMs)).pipe(
    Schedule.jittered,
    Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.millis(backoff.maxMs))))
  )

  const connectOnce: Effect.Effect<ConnectionOutcome, FeedConnectionError> = Effect.scoped(
    Effect.gen(function* () {
      health.recordAttempt()
      /** Per-connection state read by the watchdog; written by the frame callback. */
      const connection = { lastFrameAt: Date.now(), ticks: 0 }
      const url = protocol.connectUrl(options.wsUrl, options.markets)

      const socket = yield* Effect.acquireRelease(
        Effect.try({
          try: () => new WebSocket(url, { handshakeTimeout: connectTimeoutMs, perMessageDeflate: false }),
          catch: (error) => new FeedConnectionError({ message: `bad url ${url}: ${messageOf(error)}` })
        }),
        (ws) =>
          Effect.sync(() => {
            ws.removeAllListeners("message")
            ws.terminate()
            health.recordDisconnected()
          })
      )
      let opened = false
      // Handshake errors are reported by the open wait below; later ones also end in a close.
      // This listener records them once and keeps an unhandled 'error' event from crashing us.
      socket.on("error", (error) => {
        if (opened) health.recordError(messageOf(error))
      })
      const closed = new Promise<string>((resolve) =>
        socket.once("close", (code, reason) => resolve(`closed by peer (${code}${reason.length > 0 ? ` ${reason.toString()}` : ""})`))
      )

      const send = (frame: string): void => {
        if (socket.readyState !== WebSocket.OPEN) return
        socket.send(frame, (error) => {
          if (error !== undefined && error !== null) health.recordError(`send failed: ${error.message}`)
        })
      }

      // The hot path: synchronous, no Effect per frame.
      socket.on("message", (data) => {
        const now = Date.now()
        connection.lastFrameAt = now
        health.recordFrame(now)
        let parsed: ParsedFrame
        try {
          parsed = protocol.parseFrame(wsText(data), marketsBySymbol, now)
        } catch (error) {
          health.recordError(`parse failed: ${messageOf(error)}`)
          return
        }
        for (const reply of parsed.replies) send(reply)
        if (parsed.kind === "error") health.recordError(parsed.error ?? "exchange error")
        for (const tick of parsed.ticks) {
          connection.ticks++
          health.recordTick(tick)
          try {
            options.onTick(tick)
          } catch (error) {
            health.recordError(`onTick failed: ${messageOf(error)}`)
          }
        }
      })

      yield* Effect.callback<void, FeedConnectionError>((resume) => {
        const cleanup = () => {
          socket.off("open", onOpen)
          socket.off("error", onError)
          socket.off("close", onClose)
        }
        const onOpen = () => {
          cleanup()
          resume(Effect.void)
        }
        const onError = (error: Error) => {
          cleanup()
          resume(Effect.fail(new FeedConnectionError({ message: `connect failed: ${error.message}` })))
        }
        const onClose = (code: number) => {
          cleanup()
          resume(Effect.fail(new FeedConnectionError({ message: `closed during handshake (${code})` })))
        }
        socket.on("open", onOpen)
        socket.on("error", onError)
        socket.on("close", onClose)
        return Effect.sync(cleanup)
      })

      opened = true
      const openedAt = Date.now()
      connection.lastFrameAt = openedAt
      health.recordConnected(openedAt)
      yield* Effect.logInfo("feed connected")
      if (subscribeDelayMs > 0) yield* Effect.sleep(Duration.millis(subscribeDelayMs))
      for (const frame of protocol.subscribeFrames(options.markets)) send(frame)
      // Silence is measured from the subscription, not from the open, after a subscribe delay.
      connection.lastFrameAt = Math.max(connection.lastFrameAt, Date.now())

      const ping = protocol.clientPing
      if (ping !== undefined) {
        // Read the protocol's ping each time: its frame may carry the current time (Gate).
        yield* Effect.sleep(Duration.millis(ping.everyMs)).pipe(
          Effect.andThen(Effect.sync(() => send(protocol.clientPing?.frame ?? ping.frame))),
          Effect.forever,
          Effect.forkScoped
        )
      }

      const watchdog = Effect.gen(function* () {
        while (true) {
          const idle = Date.now() - connection.lastFrameAt
          if (idle >= silenceTimeoutMs) {
            health.recordWatchdogTimeout()
            return `no frame for ${idle} ms`
          }
          yield* Effect.sleep(Duration.millis(silenceTimeoutMs - idle))
        }
      })

      const reason = yield* Effect.raceFirst(Effect.promise(() => closed), watchdog)
      health.recordError(reason)
      yield* Effect.logWarning(`feed disconnected: ${reason}`)
      return { healthy: connection.ticks > 0, reason }
    })
  )

  // Failed connects are logged at the start of a streak and then every tenth, so an outage is
  // visible to the operator without a line per retry.
  let failuresInARow = 0
  const attempt = connectOnce.pipe(
    Effect.catchDefect((defect) => Effect.fail(new FeedConnectionError({ message: `defect: ${messageOf(defect)}` }))),
    Effect.tap(() => Effect.sync(() => void (failuresInARow = 0))),
    Effect.tapError((error) =>
      Effect.andThen(
        Effect.sync(() => health.recordError(error.message)),
        Effect.suspend(() =>
          failuresInARow++ % 10 === 0
            ? Effect.logWarning(`feed cannot connect (${failuresInARow} in a row): ${error.message}`)
            : Effect.void
        )
      )),
    Effect.flatMap((outcome) =>
      outcome.healthy ? Effect.void : Effect.fail(new FeedConnectionError({ message: outcome.reason }))
    )
  )

  return attempt.pipe(
    // Unhealthy attempts back off exponentially; a healthy connection resets the schedule.
    Effect.retry(reconnectDelays),
    Effect.andThen(Effect.suspend(() => Effect.sleep(Duration.millis(jitter(backoff.initialMs))))),
    // The schedule never ends, so this is unreachable; it keeps the error channel empty.
    Effect.catch(() => Effect.void),
    Effect.forever,
    Effect.annotateLogs({ exchange: protocol.exchange })
  )
}
