import { Context, type Effect } from "effect"
import type { ApiKeyRecord } from "./ApiKeys.ts"

export type Admission =
  | { readonly _tag: "Admitted"; readonly limit: number | undefined; readonly remaining: number; readonly resetSec: number }
  | { readonly _tag: "RateLimited"; readonly limit: number; readonly remaining: 0; readonly retryAfterSec: number }
  /** `limit`: the monthly quota; `retryAfterSec`: until the month resets (UTC). */
  | { readonly _tag: "QuotaExceeded"; readonly limit: number; readonly retryAfterSec: number }
  | { readonly _tag: "Busy" }

export interface LimiterSnapshot {
  readonly trackedKeys: number
  readonly clusterReachable: boolean
  readonly reconciles: number
  readonly reconcileFailures: number
  readonly clusterRps: number
  readonly shedFraction: number
}

/**
 * Tier rate limits, monthly quotas and the load-shedding governor. `admit` is synchronous: it
 * decides from this node's state; consumption is reconciled with the cluster in the background.
 */
export class RateLimiter extends Context.Service<RateLimiter, {
  /**
   * Takes `requests` tokens from the rate bucket and checks that `queries` more fit in the
   * monthly quota (without charging them: only answered queries are charged, see `chargeQueries`).
   */
  readonly admit: (key: ApiKeyRecord, requests: number, queries: number, now: number) => Admission
  readonly chargeQueries: (key: ApiKeyRecord, queries: number, now: number) => void
  readonly snapshot: () => LimiterSnapshot
  /** Push pending consumption now (also runs on its Schedule and at shutdown). */
  readonly reconcile: Effect.Effect<void>
}>()("tb/RateLimiter") {}
