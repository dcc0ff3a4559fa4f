/**
 * The report routes' handlers. Each request: the key (X-API-Key or Bearer, as the LPO reads it),
 * LRS enabled on it, the tier's rate limit, then for a report (usage, summary) its window and the
 * monthly report limit, then the answer: the envelope (service LRS, `data.data_through`) or, with
 * `format=csv|tsv|text`, a table with a header row. Refusals are envelopes whatever the format.
 */
import { Effect } from "effect"
import { type HttpServerRequest, HttpServerResponse } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import { DEFAULT_PAGE_SIZE, type ReportFormat } from "../../api/LrsGroup.ts"
import { LrsListenerApi } from "../../api/TrinityApi.ts"
import { monthKey, secondsToNextMonth } from "../../domain/clusterLimits.ts"
import { rfc3339 } from "../../domain/envelope.ts"
import { type ErrorCode, statusOf } from "../../domain/errorCodes.ts"
import { COUNTER } from "../../domain/runtimeCounters.ts"
import { apiKeyOf } from "../../layers/http/httpKit.ts"
import type { KeyHashMemo } from "../../domain/apiKey.ts"
import type { ApiKeyRecord, ApiKeys, AuthResult } from "../../services/ApiKeys.ts"
import type { Cache } from "../../services/Cache.ts"
import type { Admission, RateLimiter } from "../../services/RateLimiter.ts"
import type { RuntimeStats } from "../../services/RuntimeStats.ts"
import type { ReportQuota, ReportRow, UsageReports } from "../../services/UsageReports.ts"
import type { SummaryGroup, UsageSummaries } from "../../services/UsageSummaries.ts"
import type { Edge } from "../http/edge.ts"
import { decodeCursor, encodeCursor } from "./cursor.ts"
import { CONTENT_TYPES, type Cell, renderTable, type TableFormat } from "./reportTable.ts"
import { reportWindow, type ReportWindow } from "./reportWindow.ts"

export interface LrsDeps {
  readonly apiKeys: ApiKeys["Service"]
  readonly limiter: RateLimiter["Service"]
  readonly quota: ReportQuota["Service"]
  readonly reports: UsageReports["Service"]
  readonly summaries: UsageSummaries["Service"]
  readonly cache: Cache["Service"]
  readonly stats: RuntimeStats["Service"]
}

/** A refusal or an answer: the handler's one result type. */
type Answer = HttpServerResponse.HttpServerResponse

export const USAGE_COLUMNS = [
  "id", "request_id", "service", "protocol", "endpoint", "asset", "quote", "source", "price", "status_code", "error_code",
  "latency_us", "client_ip", "node", "region", "bytes_out", "created_at"
] as const satisfies ReadonlyArray<keyof ReportRow>
const SUMMARY_COLUMNS = ["requests", "errors", "bytes_out", "p50_us", "p95_us", "p99_us"] as const satisfies ReadonlyArray<keyof SummaryGroup>

/** RateLimit-* (and Retry-After) of a rate-limit refusal, or of the report quota on an answer. */
const rateLimitHeaders = (limit: number, remaining: number, resetSec: number, retry: boolean): Array<readonly [string, string]> => [
  ["ratelimit-limit", String(limit)], ["ratelimit-remaining", String(Math.max(0, remaining))], ["ratelimit-reset", String(resetSec)],
  ...(retry ? [["retry-after", String(resetSec)] as const] : [])
]

/** `quota:<key id>:<YYYYMM>`: the cluster's monthly query counter as the rate limiter keeps it in the shared cache. */
const queryCounterKey = (apiKeyId: string, month: string) => `quota:${apiKeyId}:${month}`

export const lrsHandlers = (edge: Edge, deps: LrsDeps) =>
  HttpApiBuilder.group(LrsListenerApi, "lrs", (handlers) => {
    const { stats } = deps
    const headersOf = (request: HttpServerRequest.HttpServerRequest) => edge.of(request.source)?.headers

    const refuse = (request: HttpServerRequest.HttpServerRequest, code: ErrorCode, detail?: string): Answer => {
      stats.values[code === "INTERNAL" || code === "SYSTEM_BUSY" ? COUNTER.server_errors : COUNTER.client_errors]!++
      return HttpServerResponse.jsonUnsafe(edge.fail(request.source, "LRS", code, detail), { status: statusOf(code) })
    }
    const ok = <D extends object>(request: HttpServerRequest.HttpServerRequest, data: D): Answer =>
      HttpServerResponse.jsonUnsafe(edge.ok(request.source, "LRS", data))
    const tableAnswer = (request: HttpServerRequest.HttpServerRequest, format: TableFormat, header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<Cell>>): Answer => {
      const state = edge.of(request.source)
      if (state !== undefined) state.code = "OK"
      return HttpServerResponse.text(renderTable(format, header, rows), { contentType: CONTENT_TYPES[format] })
    }

    /** The key of the request, LRS enabled, within its rate limit: the key and its admission, or the refusal. */
    const admitKey = (request: HttpServerRequest.HttpServerRequest) =>
      Effect.gen(function*() {
        const state = edge.of(request.source)
        if (state === undefined) return yield* Effect.die(new Error("report request without the listener's state"))
        const now = Date.now()
        const auth = yield* authenticateKey(deps, apiKeyOf(state.info), now, state.info.keyMemo)
        if (auth._tag !== "Authorized") {
          stats.values[auth._tag === "Refused" && auth.code === "SYSTEM_BUSY" ? COUNTER.system_busy : COUNTER.auth_failures]!++
          if (auth._tag === "Refused" && auth.keyId !== undefined) state.apiKeyId = auth.keyId
          return refuse(request, auth._tag === "Refused" ? auth.code : "INVALID_API_KEY")
        }
        const key = auth.key
        state.apiKeyId = key.id
        state.asset = state.info.query.get("asset")?.slice(0, 200) ?? undefined
        if (!key.lrsEnabled || key.tier.lrsReportsPerMonth === 0) {
          return refuse(request, "LRS_NOT_ENABLED", `reports are not enabled on this key (tier ${key.tier.tier})`)
        }
        const admission = deps.limiter.admit(key, 1, 0, now)
        if (admission._tag === "RateLimited") {
          stats.values[COUNTER.rate_limited]!++
          headersOf(request)?.push(...rateLimitHeaders(admission.limit, 0, admission.retryAfterSec, true))
          return refuse(request, "RATE_LIMITED")
        }
        if (admission._tag === "Busy") {
          stats.values[COUNTER.system_busy]!++
          return refuse(request, "SYSTEM_BUSY")
        }
        return { key, admission, now }
      })

    /** A report's window and the monthly report limit: the window, or the refusal. */
    const admitReport = (request: HttpServerRequest.HttpServerRequest, key: ApiKeyRecord, now: number, from: string | undefined, to: string | undefined) =>
      Effect.gen(function*() {
        const window = reportWindow(from, to, now)
        if (typeof window === "string") return refuse(request, "BAD_REQUEST", window)
        const counted = yield* deps.quota.admit(key.id, key.tier.lrsReportsPerMonth, now)
        if (counted._tag === "QuotaExceeded") {
          stats.values[COUNTER.quota_exceeded]!++
          headersOf(request)?.push(...rateLimitHeaders(counted.limit, 0, counted.retryAfterSec, true))
          return refuse(request, "QUOTA_EXCEEDED", `monthly report limit of ${counted.limit} reached`)
        }
        if (counted.limit !== null) headersOf(request)?.push(...rateLimitHeaders(counted.limit, counted.limit - counted.used, secondsToNextMonth(now), false))
        return window
      })

    const isAnswer = (x: unknown): x is Answer => HttpServerResponse.isHttpServerResponse(x)
    const dataThrough = (window: ReportWindow, queriedAt: number) => rfc3339(Math.min(window.to, queriedAt))
    /** The store did not answer: SYSTEM_BUSY, and the report does not count. */
    const storageFailed = (request: HttpServerRequest.HttpServerRequest, key: ApiKeyRecord, now: number) => (e: { readonly message: string }) =>
      Effect.logError("report query failed", e.message).pipe(
        Effect.andThen(deps.quota.release(key.id, now)),
        Effect.as(refuse(request, "SYSTEM_BUSY", "the report store did not answer; try again"))
      )

    return handlers
      .handleRaw("usage", ({ request, query }) =>
        Effect.gen(function*() {
          const admitted = yield* admitKey(request)
          if (isAnswer(admitted)) return admitted
          const after = query.cursor === undefined ? undefined : decodeCursor(query.cursor)
          if (query.cursor !== undefined && after === undefined) return refuse(request, "BAD_REQUEST", "cursor: not a cursor this server gave (use data.next_cursor)")
          const window = yield* admitReport(request, admitted.key, admitted.now, query.from, query.to)
          if (isAnswer(window)) return window
          const pageSize = query.page_size === undefined ? DEFAULT_PAGE_SIZE : Number(query.page_size)
          const page = query.page === undefined ? 1 : Number(query.page)
          const result = yield* deps.reports.rows({
            apiKeyId: admitted.key.id, from: window.from, to: window.to, asset: query.asset?.toUpperCase(), service: query.service?.toUpperCase(),
            pageSize, offset: (page - 1) * pageSize, after
          }).pipe(Effect.result)
          if (result._tag === "Failure") return yield* storageFailed(request, admitted.key, admitted.now)(result.failure)
          const { rows, next, dataThrough: through } = result.success
          const format: ReportFormat = query.format ?? "json"
          if (format !== "json") return tableAnswer(request, format, USAGE_COLUMNS, rows.map((r) => USAGE_COLUMNS.map((c) => r[c])))
          return ok(request, {
            rows, page, page_size: pageSize, next_cursor: next === undefined ? null : encodeCursor(next),
            from: rfc3339(window.from), to: rfc3339(window.to), data_through: rfc3339(Math.min(window.to, through))
          })
        }).pipe(Effect.withSpan("Lrs.usage")))
      .handleRaw("summary", ({ request, query }) =>
        Effect.gen(function*() {
          const admitted = yield* admitKey(request)
          if (isAnswer(admitted)) return admitted
          const window = yield* admitReport(request, admitted.key, admitted.now, query.from, query.to)
          if (isAnswer(window)) return window
          const groupBy = query.group_by ?? "day"
          const queriedAt = Date.now()
          const result = yield* deps.summaries.summary({ apiKeyId: admitted.key.id, from: window.from, to: window.to, groupBy }).pipe(Effect.result)
          if (result._tag === "Failure") return yield* storageFailed(request, admitted.key, admitted.now)(result.failure)
          const groups = result.success.groups.map((g) => ({ ...g, group: g.group ?? "" }))
          const format: ReportFormat = query.format ?? "json"
          if (format !== "json") return tableAnswer(request, format, [groupBy, ...SUMMARY_COLUMNS], groups.map((g) => [g.group, ...SUMMARY_COLUMNS.map((c) => g[c])]))
          return ok(request, { group_by: groupBy, groups, from: rfc3339(window.from), to: rfc3339(window.to), data_through: dataThrough(window, queriedAt) })
        }).pipe(Effect.withSpan("Lrs.summary")))
      .handleRaw("key", ({ request }) =>
        Effect.gen(function*() {
          const admitted = yield* admitKey(request)
          if (isAnswer(admitted)) return admitted
          const { key, admission, now } = admitted
          const month = monthKey(now)
          const queriesUsed = yield* deps.cache.get(queryCounterKey(key.id, month)).pipe(
            Effect.map((v) => (v === undefined ? 0 : Math.max(0, Math.round(Number(v)) || 0))),
            Effect.catch(() => Effect.succeed(0))
          )
          const reportsUsed = yield* deps.quota.used(key.id, now)
          const remaining = (limit: number | null, used: number) => ({ limit, used, left: limit === null ? null : Math.max(0, limit - used) })
          const d = new Date(now)
          const rate = rateOf(admission)
          return ok(request, {
            key_id: key.id, prefix: key.prefix, tier: key.tier.tier, lrs_enabled: key.lrsEnabled,
            limits: {
              requests_per_second: key.tier.ratePerSec, burst: key.tier.burst, queries_per_month: key.tier.monthlyQueries,
              reports_per_month: key.tier.lrsReportsPerMonth, webhook_assets: key.tier.webhookAssets, partner_ws: key.tier.partnerWs
            },
            month: `${month.slice(0, 4)}-${month.slice(4)}`,
            queries: remaining(key.tier.monthlyQueries, queriesUsed),
            reports: remaining(key.tier.lrsReportsPerMonth, reportsUsed),
            month_resets_at: rfc3339(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1)),
            rate_limit: rate,
            data_through: rfc3339(now)
          })
        }).pipe(Effect.withSpan("Lrs.key")))
  })

/**
 * Database lookups of keys this node has not seen, at most this many at once (as the LPO bounds
 * them): a flood of well-formed random keys must not take the connections reports need.
 */
export const MAX_KEY_LOOKUPS_IN_FLIGHT = 32

/** A key from the in-process cache, or one bounded database lookup (SYSTEM_BUSY past the bound or on failure). */
export const authenticateKey = (deps: Pick<LrsDeps, "apiKeys" | "stats">, plainKey: string | undefined, now: number, memo?: KeyHashMemo) =>
  Effect.suspend((): Effect.Effect<AuthResult> => {
    const auth = deps.apiKeys.authenticate(plainKey, now, memo)
    if (auth._tag !== "Unknown") return Effect.succeed(auth)
    const v = deps.stats.values
    v[COUNTER.key_cache_misses]!++
    if (v[COUNTER.db_lookups_in_flight]! >= MAX_KEY_LOOKUPS_IN_FLIGHT) return Effect.succeed(BUSY)
    v[COUNTER.db_lookups_in_flight]!++
    return deps.apiKeys.authenticateSlow(auth.hash, now).pipe(Effect.ensuring(Effect.sync(() => void v[COUNTER.db_lookups_in_flight]!--)))
  })

const BUSY: AuthResult = { _tag: "Refused", code: "SYSTEM_BUSY", keyId: undefined }

/** The rate-limit state after this request was admitted. */
const rateOf = (a: Admission) =>
  a._tag === "Admitted" && a.limit !== undefined
    ? { limit: a.limit, remaining: a.remaining, reset_seconds: a.resetSec }
    : { limit: null, remaining: null, reset_seconds: null }
