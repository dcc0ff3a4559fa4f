import { Config, Effect, Layer, Logger, References } from "effect"

const LOG_LEVELS = ["Trace", "Debug", "Info", "Warn", "Error", "Fatal", "None"] as const
type LogLevelName = (typeof LOG_LEVELS)[number]

/** LOG_LEVEL accepts the level names in any of the usual cases: "debug", "Debug", "DEBUG". */
const ACCEPTED = LOG_LEVELS.flatMap((l) => [l, l.toLowerCase(), l.toUpperCase()])
const logLevel = Config.Literals(ACCEPTED, "LOG_LEVEL").pipe(
  Config.withDefault("Info"),
  Config.map((raw): LogLevelName => LOG_LEVELS.find((l) => l.toLowerCase() === raw.toLowerCase()) ?? "Info")
)

/**
 * JSON lines on stderr. Every program keeps stdout for its result (`tb keys create --json | jq`),
 * so logs never go there (Logger.consoleJson writes with console.log, to stdout).
 */
const jsonToStderr = Logger.withConsoleError(Logger.formatJson)

/** Structured JSON lines on stderr; every line carries a `module` annotation (see `withModule`). */
export const LoggingLive = Layer.mergeAll(
  Logger.layer([jsonToStderr]),
  Layer.effect(References.MinimumLogLevel, logLevel),
  // Effect's default logger (if a fiber runs without the loggers above) writes to stderr too.
  Layer.succeed(Logger.LogToStderr, true)
)

/** Tag every log line of an effect with the module that wrote it. */
export const withModule = (module: string) => Effect.annotateLogs({ module })

let detachedLevel: LogLevelName | undefined

/**
 * Run a log effect from outside the program's fibers (a Node event handler, a worker callback):
 * `Effect.runFork` alone would use Effect's default logger, which writes to stdout in another
 * format. This writes the same JSON lines as LoggingLive, on stderr, at LOG_LEVEL.
 */
export const runDetachedLog = (log: Effect.Effect<void>): void => {
  detachedLevel ??= Effect.runSync(Effect.orElseSucceed(Effect.gen(function*() {
    return yield* logLevel
  }), (): LogLevelName => "Info"))
  Effect.runFork(log.pipe(
    Effect.provideService(Logger.CurrentLoggers, new Set([jsonToStderr])),
    Effect.provideService(References.MinimumLogLevel, detachedLevel)
  ))
}
