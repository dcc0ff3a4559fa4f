import { Effect, Schedule } from "effect"
import type { ParamName } from "../domain/params.ts"
import type { Params } from "../services/Params.ts"

/** Recur with the spacing a parameter holds now, so operators can retune a loop without a restart. */
export const spacedByParam = (params: Params["Service"], name: ParamName) =>
  Schedule.spaced("1 second").pipe(Schedule.modifyDelay(() => Effect.sync(() => params.int(name))))
