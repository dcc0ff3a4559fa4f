import { Effect, Layer } from "effect"
import { AppConfig } from "../../config/AppConfig.ts"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import { withModule } from "../../layers/Logging.ts"
import { cannotListen } from "../../services/StartupError.ts"
import { UsageSink } from "../../services/UsageSink.ts"
import { bindUdp } from "../lpo/LpoUdpServer.ts"
import type { LrsDeps } from "./lrsApi.ts"
import { makeUdpSummaryHandler } from "./udpSummaryHandler.ts"

/** The LRS's UDP listener on LRS_UDP_PORT (makeUdpSummaryHandler), bound as a scoped resource. */
export const makeLrsUdpServer = (deps: LrsDeps) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const config = yield* AppConfig
    const handler = makeUdpSummaryHandler(deps, yield* UsageSink)
    const socket = yield* bindUdp(config.lrsUdpPort, config.bindHost, handler.onMessage).pipe(
      Effect.mapError((e) => cannotListen("LRS_UDP_PORT", config.bindHost, config.lrsUdpPort, e))
    )
    socket.on("error", () => void deps.stats.values[COUNTER.udp_send_errors]!++)
    // Runs before the socket closes (finalizers run in reverse): answer what is in flight, briefly.
    yield* Effect.addFinalizer(() =>
      Effect.promise(async () => {
        const deadline = Date.now() + 2_000
        while (handler.pending() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
        handler.close()
      }))
    yield* Effect.logInfo("LRS UDP listening", { port: socket.address().port, host: config.bindHost }).pipe(withModule("lrs-udp"))
  }))
