import { Effect, Layer } from "effect"
import { createSocket, type RemoteInfo, type Socket } from "node:dgram"
import { lookup as dnsLookup, type LookupOneOptions } from "node:dns"
import { isIP } from "node:net"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import { cannotListen } from "../../services/StartupError.ts"
import { AppConfig } from "../../config/AppConfig.ts"
import { withModule } from "../../layers/Logging.ts"
import { makeRequestSpans, RequestTracing } from "../../layers/tracing/requestTracing.ts"
import { ApiKeys } from "../../services/ApiKeys.ts"
import { Params } from "../../services/Params.ts"
import { PriceCache } from "../../services/PriceCache.ts"
import { RateLimiter } from "../../services/RateLimiter.ts"
import { RuntimeStats } from "../../services/RuntimeStats.ts"
import { UsageSink } from "../../services/UsageSink.ts"
import { makeUdpPriceHandler } from "./udpPriceHandler.ts"

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

/** The LPO's UDP listener (makeUdpPriceHandler), bound as a scoped resource. */
export const LpoUdpServer = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* AppConfig
  const stats = yield* RuntimeStats
  const handler = makeUdpPriceHandler({
    apiKeys: yield* ApiKeys, limiter: yield* RateLimiter, prices: yield* PriceCache, params: yield* Params, stats,
    usage: yield* UsageSink, requestSpans: makeRequestSpans(yield* RequestTracing)
  })
  const socket = yield* bindUdp(config.lpoUdpPort, config.bindHost, handler.onMessage).pipe(
    Effect.mapError((e) => cannotListen("LPO_UDP_PORT", config.bindHost, config.lpoUdpPort, e))
  )
  socket.on("error", () => void stats.values[COUNTER.udp_send_errors]!++)
  // Runs before the socket closes (finalizers run in reverse): answer what is waiting, briefly.
  yield* Effect.addFinalizer(() =>
    Effect.promise(async () => {
      const deadline = Date.now() + 2_000
      while (handler.pending() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
      handler.close()
    }))
  yield* Effect.logInfo("LPO UDP listening", { port: config.lpoUdpPort, host: config.bindHost }).pipe(withModule("lpo-udp"))
}))
