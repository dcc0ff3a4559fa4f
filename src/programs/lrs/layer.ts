/**
 * The report server's listeners (HTTP on LRS_HTTP_PORT, UDP on LRS_UDP_PORT) over the services
 * they read. The storage, keys, limiter and usage sink below them are the serving process's
 * (src/programs/serve.ts composes them once for the LPO and the LRS together).
 */
import { Effect, Layer } from "effect"
import { ReportQuotaLive } from "../../layers/reports/ReportQuotaLive.ts"
import { UsageRollupSchedule } from "../../layers/rollup/UsageRollupLive.ts"
import { UsageSummariesLive } from "../../layers/rollup/UsageSummariesLive.ts"
import { UsageReportsLive } from "../../layers/reports/UsageReportsLive.ts"
import { ApiKeys } from "../../services/ApiKeys.ts"
import { Cache } from "../../services/Cache.ts"
import { RateLimiter } from "../../services/RateLimiter.ts"
import { RuntimeStats } from "../../services/RuntimeStats.ts"
import { ReportQuota, UsageReports } from "../../services/UsageReports.ts"
import { UsageSummaries } from "../../services/UsageSummaries.ts"
import type { LrsDeps } from "./lrsApi.ts"
import { makeLrsHttpServer } from "./LrsHttpServer.ts"
import { makeLrsUdpServer } from "./LrsUdpServer.ts"

/** The services the report handlers use, resolved once. */
const lrsDeps = Effect.gen(function*() {
  const deps: LrsDeps = {
    apiKeys: yield* ApiKeys, limiter: yield* RateLimiter, quota: yield* ReportQuota, reports: yield* UsageReports,
    summaries: yield* UsageSummaries, cache: yield* Cache, stats: yield* RuntimeStats
  }
  return deps
})

/** HTTP and UDP listeners of the LRS. */
export const LrsListeners = Layer.unwrap(Effect.map(lrsDeps, (deps) => Layer.mergeAll(makeLrsHttpServer(deps), makeLrsUdpServer(deps))))

/**
 * The LRS's own services: where report rows come from (with VALKEY_URL the sync's mirror plus the
 * reader for rows newer than its high-water mark, else the database), the summaries (the daily rollup, refreshed
 * on its Schedule by every report server; the refresh is idempotent) and the monthly report counter.
 */
export const LrsServicesLive = Layer.mergeAll(UsageReportsLive, ReportQuotaLive, UsageSummariesLive, UsageRollupSchedule())
