import { Data, Effect } from "effect"

/**
 * Start-up cannot go on. `message` is the one line to print, naming the setting; `reason` picks
 * the exit code (spec, "Configuration"): a malformed setting exits 2, a dependency that cannot be
 * reached at start (database, Valkey, the data directory) exits 1.
 */
export class StartupError extends Data.TaggedError("StartupError")<{
  readonly reason: "Malformed" | "Unreachable"
  /** The environment variable the line names, e.g. "DATABASE_URL". */
  readonly variable: string
  readonly message: string
}> {}

/** `configuration error: VALKEY_URL: not a redis:// or rediss:// URL` (the same form as a bad Config value). */
export const malformedSetting = (variable: string, problem: string) =>
  new StartupError({ reason: "Malformed", variable, message: `configuration error: ${variable}: ${problem}` })

/** `DATABASE_URL: cannot connect to 127.0.0.1:1 (ECONNREFUSED)` */
export const unreachableDependency = (variable: string, problem: string) =>
  new StartupError({ reason: "Unreachable", variable, message: `${variable}: ${problem}` })

/**
 * A URL setting parsed, with one of `protocols` ("redis:", …), or the one line saying what is
 * wrong. `example` shows the expected form; the value itself is never printed (it may hold a password).
 */
export const settingUrl = (variable: string, value: string, protocols: ReadonlyArray<string>, example: string): Effect.Effect<URL, StartupError> =>
  Effect.suspend(() => {
    let parsed: URL
    try {
      parsed = new URL(value)
    } catch {
      return Effect.fail(malformedSetting(variable, `not a URL (expected ${example})`))
    }
    if (!protocols.includes(parsed.protocol)) {
      return Effect.fail(malformedSetting(variable, `expected a ${protocols.map((p) => `${p}//`).join(" or ")} URL, not ${parsed.protocol}//`))
    }
    return Effect.succeed(parsed)
  })

/** `LPO_HTTP_PORT: cannot listen on 0.0.0.0:8080 (EADDRINUSE)`: a port taken is a dependency out of reach (exit 1). */
export const cannotListen = (variable: string, host: string, port: number, cause: Error): StartupError =>
  unreachableDependency(variable, `cannot listen on ${host}:${port} (${(cause as NodeJS.ErrnoException).code ?? cause.message})`)
