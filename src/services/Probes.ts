import { Context } from "effect"

/** Storage reachability, probed in the background so /health and /ready answer from memory. */
export class Probes extends Context.Service<Probes, {
  readonly database: () => boolean
  readonly cache: () => boolean
}>()("tb/Probes") {}
