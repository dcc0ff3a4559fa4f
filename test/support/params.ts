import { Effect, Layer } from "effect"
import { DEFAULT_PARAMS, type ParamName, type ParamValues } from "../../src/domain/params.ts"
import { Params } from "../../src/services/Params.ts"

/** Params for in-process tests: the defaults with overrides; `onInt` sees every numeric read. */
export const testParams = (overrides: Partial<Record<ParamName, string>>, onInt: (name: ParamName) => void = () => {}) => {
  const values: ParamValues = { ...DEFAULT_PARAMS, ...overrides }
  return Layer.succeed(Params, Params.of({
    current: () => values,
    int: (name) => {
      onInt(name)
      return Number(values[name])
    },
    bool: (name) => values[name] === "true",
    list: Effect.succeed([]),
    profiles: Effect.succeed({}),
    set: () => Effect.succeed(values),
    applyProfile: () => Effect.succeed(values),
    refresh: Effect.void
  }))
}

/**
 * Params a test changes while the code under test runs (`set`, or the service's own `set`, which
 * is what POST /admin/params ends in); `onInt` sees every numeric read and may throw, as a bug in
 * the code reading it would.
 */
export const changeableParams = (initial: Partial<Record<ParamName, string>>, onInt: (name: ParamName, value: string) => void = () => {}) => {
  let values: ParamValues = { ...DEFAULT_PARAMS, ...initial }
  const set = (changes: Partial<Record<ParamName, string>>) => {
    values = { ...values, ...changes }
    return values
  }
  const service = Params.of({
    current: () => values,
    int: (name) => {
      onInt(name, values[name])
      return Number(values[name])
    },
    bool: (name) => values[name] === "true",
    list: Effect.succeed([]),
    profiles: Effect.succeed({}),
    set: (changes) => Effect.sync(() => set(changes)),
    applyProfile: () => Effect.succeed(values),
    refresh: Effect.void
  })
  return { service, layer: Layer.succeed(Params, service), set }
}
