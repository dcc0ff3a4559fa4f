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
