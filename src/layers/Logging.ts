import { Config, Effect, Layer, Logger, References } from "effect"

const LOG_LEVELS = ["Trace", "Debug", "Info", "Warn", "Error", "Fatal", "None"] as const
type LogLevelName = (typeof LOG_LEVELS)[number]

/** LOG_LEVEL accepts the level names in any of the usual cases: "debug", "Debug", "DEBUG". */
const ACCEPTED = LOG_LEVELS.flatMap((l) => [l, l.toLowerCase(), l.toUpperCase()])
const logLevel = Config.Literals(ACCEPTED, "LOG_LEVEL").pipe(
  Config.withDefault("Info"),
  Config.map((raw): LogLevelName => LOG_LEVELS.find((l) => l.toLowerCase() === raw.toLowerCase()) ?? "Info")
)

/** Structured JSON lines on stdout; every line carries a `module` annotation (see `withModule`). */
export const LoggingLive = Layer.mergeAll(
  Logger.layer([Logger.consoleJson]),
  Layer.effect(References.MinimumLogLevel, logLevel)
)

/** Tag every log line of an effect with the module that wrote it. */
export const withModule = (module: string) => Effect.annotateLogs({ module })
