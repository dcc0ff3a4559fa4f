import { Context, Data, type Effect } from "effect"
import type { ParamName, ParamValues } from "../domain/params.ts"

export class ParamsError extends Data.TaggedError("ParamsError")<{
  readonly reason: "Invalid" | "UnknownProfile" | "Storage"
  readonly message: string
}> {}

export interface ParamRow {
  readonly name: ParamName
  readonly value: string
  readonly type: string
  readonly description: string
}

/** Run-time parameters. Reads are synchronous snapshots (safe on the hot path). */
export class Params extends Context.Service<Params, {
  readonly current: () => ParamValues
  readonly int: (name: ParamName) => number
  readonly bool: (name: ParamName) => boolean
  readonly list: Effect.Effect<ReadonlyArray<ParamRow>>
  readonly profiles: Effect.Effect<Readonly<Record<string, Readonly<Record<string, string>>>>, ParamsError>
  /** Validate all, persist, publish to the cluster, apply locally. All-or-nothing. */
  readonly set: (changes: Readonly<Record<string, string>>) => Effect.Effect<ParamValues, ParamsError>
  readonly applyProfile: (profile: string) => Effect.Effect<ParamValues, ParamsError>
  /** Reload now (Aurora first, app:config when the database is unreachable). */
  readonly refresh: Effect.Effect<void>
}>()("tb/Params") {}
