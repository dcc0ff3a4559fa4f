import { Effect, Layer } from "effect"
import type { ServerType } from "../config/AppConfig.ts"
import { FeedsLive } from "../layers/feeds/FeedsLive.ts"
import { withModule } from "../layers/Logging.ts"
import { PartitionMaintenance } from "../layers/MigrationsLive.ts"
import { PriceCacheMemory } from "../layers/PriceCacheMemory.ts"
import { RateLimiterLive } from "../layers/RateLimiterLive.ts"
import { UsageSinkThreaded } from "../layers/usage/UsageSinkThreaded.ts"
import { SqsQueueUrlCheck } from "../layers/usage/UsageWriterSqs.ts"
import { AdminTokenLive } from "../layers/AdminTokenLive.ts"
import { ProbesLive } from "../layers/ProbesLive.ts"
import { RuntimeStatsLive } from "../layers/RuntimeStatsLive.ts"
import { KeysLive, ServerInfoLive } from "./layers.ts"
import { LpoHttpServer } from "./lpo/LpoHttpServer.ts"
import { LpoUdpServer } from "./lpo/LpoUdpServer.ts"
import { publishStats } from "./lpo/statsPublisher.ts"
import { AppConfig } from "../config/AppConfig.ts"

/**
 * The LPO: listeners on top, then feeds and the usage sink, then limits, keys and parameters,
 * then storage. Layers are released in reverse order of construction, which gives the spec's
 * shutdown: stop accepting and drain, flush usage rows, close feeds, close database and cache.
 */
export const LpoLive = Layer.mergeAll(
  LpoHttpServer,
  LpoUdpServer,
  Layer.effectDiscard(Effect.gen(function*() {
    const config = yield* AppConfig
    yield* publishStats(config.nodeId)
  })),
  PartitionMaintenance
).pipe(
  Layer.provideMerge(Layer.mergeAll(UsageSinkThreaded, FeedsLive, AdminTokenLive, SqsQueueUrlCheck)),
  Layer.provideMerge(Layer.mergeAll(RateLimiterLive, PriceCacheMemory, RuntimeStatsLive, ProbesLive, ServerInfoLive)),
  Layer.provideMerge(KeysLive)
)

/** The parts of a server type this build does not have yet. */
const NOT_BUILT: Readonly<Record<ServerType, ReadonlyArray<string>>> = {
  APP_SERVER: [],
  APP_REPORT_SERVER: ["the report server (LRS)"],
  ALL: ["the report server (LRS)", "webhook delivery"],
  REPORT_SERVER: ["the report server (LRS)"],
  WEBHOOK_SERVER: ["webhook delivery"]
}

/** The one line `tb serve` ends with (exit 2) for a server type with nothing built yet. */
export const notBuiltLine = (mode: ServerType): string =>
  `server type ${mode} is not built yet (${NOT_BUILT[mode].join(", ")}); APP_SERVER, APP_REPORT_SERVER and ALL serve the LPO`

/**
 * `tb serve`: the listeners the server type asks for, or undefined for a type of which nothing is
 * built yet. A type only partly built serves its LPO and says once what it leaves out.
 */
export const serveLayer = (mode: ServerType) => {
  switch (mode) {
    case "APP_SERVER":
      return LpoLive
    case "APP_REPORT_SERVER":
    case "ALL":
      return Layer.mergeAll(
        LpoLive,
        Layer.effectDiscard(
          Effect.logWarning(`server type ${mode} serves the LPO only; not built yet: ${NOT_BUILT[mode].join(", ")}`).pipe(withModule("serve"))
        )
      )
    case "REPORT_SERVER":
    case "WEBHOOK_SERVER":
      return undefined
  }
}
