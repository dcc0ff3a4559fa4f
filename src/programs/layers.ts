import { Effect, Layer } from "effect"
import { AppConfig, packageVersion } from "../config/AppConfig.ts"
import { ApiKeysLive } from "../layers/ApiKeysLive.ts"
import { CacheLive } from "../layers/CacheLive.ts"
import { DatabaseLive } from "../layers/DatabaseLive.ts"
import { LoggingLive } from "../layers/Logging.ts"
import { MigrationsLive } from "../layers/MigrationsLive.ts"
import { ParamsLive } from "../layers/ParamsLive.ts"
import { SecretsLive } from "../layers/SecretsLive.ts"
import { ServerInfo } from "../services/ServerInfo.ts"

/** Configuration, logging and secrets: what every program needs first. */
export const BaseLive = SecretsLive.pipe(Layer.provideMerge(Layer.mergeAll(AppConfig.layer, LoggingLive)))

/** Database and cache as they are (for `tb migrate`, which reports what it applies). */
export const StorageUnmigratedLive = Layer.mergeAll(DatabaseLive, CacheLive).pipe(Layer.provideMerge(BaseLive))

/** Database (migrated) and cache, on top of the base. Closed last at shutdown. */
export const StorageLive = MigrationsLive.pipe(Layer.provideMerge(StorageUnmigratedLive))

/** Parameters and API keys: what the key-management CLI needs. */
export const KeysLive = ApiKeysLive.pipe(Layer.provideMerge(ParamsLive), Layer.provideMerge(StorageLive))

export const ServerInfoLive = Layer.effect(ServerInfo, Effect.gen(function*() {
  const config = yield* AppConfig
  return ServerInfo.of({ node: config.nodeId, region: config.region, version: yield* packageVersion })
}))
