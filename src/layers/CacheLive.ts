import { Effect, Layer, Option } from "effect"
import { AppConfig } from "../config/AppConfig.ts"
import { CacheMemory } from "./CacheMemory.ts"
import { cacheValkeyLayer } from "./CacheValkey.ts"

/** Valkey when VALKEY_URL (or CACHE_URL) is set, the in-process cache otherwise. */
export const CacheLive = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  return Option.match(config.valkeyUrl, { onNone: () => CacheMemory, onSome: cacheValkeyLayer })
}))
