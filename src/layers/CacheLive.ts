import { Config, Effect, Layer, Option } from "effect"
import { AppConfig } from "../config/AppConfig.ts"
import { CacheMemory } from "./CacheMemory.ts"
import { checkValkeyUrl, requiredValkeyLayer } from "./CacheValkey.ts"

/**
 * Valkey when VALKEY_URL (or CACHE_URL) is set, the in-process cache otherwise. A malformed URL,
 * or a server that does not answer at start, fails start-up with a StartupError naming the
 * variable that was used (once running, a Valkey that goes away only degrades the service).
 */
export const CacheLive = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  if (Option.isNone(config.valkeyUrl)) return CacheMemory
  // AppConfig reads VALKEY_URL first, then its alias: name the one that was set.
  const variable = Option.isSome(yield* Config.option(Config.String("VALKEY_URL"))) ? "VALKEY_URL" : "CACHE_URL"
  yield* checkValkeyUrl(variable, config.valkeyUrl.value)
  return requiredValkeyLayer(config.valkeyUrl.value, variable)
}))
