import { Effect, Schedule } from "effect"
import type { ParamName } from "../domain/params.ts"
import type { Params } from "../services/Params.ts"

/** Recur with the spacing (ms) `currentMs` gives at each step, so a loop can be retuned live. */
export const spacedBy = (currentMs: () => number) =>
  Schedule.spaced("1 second").pipe(Schedule.modifyDelay(() => Effect.sync(currentMs)))

/** Recur with the spacing a parameter holds now, so operators can retune a loop without a restart. */
export const spacedByParam = (params: Params["Service"], name: ParamName) => spacedBy(() => params.int(name))
