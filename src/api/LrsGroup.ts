/**
 * The Listener Report Server's routes (served on LRS_HTTP_PORT, envelope service LRS): a key's own
 * usage rows, summaries of them, and the key's limits and consumption. Only LRS-enabled keys.
 * `format=csv|tsv|text` answers a table with a header row instead of the envelope.
 */
import { Schema } from "effect"
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "effect/http-api"
import { isRfc3339 } from "../domain/envelope.ts"
import { UsageRow } from "../domain/usage.ts"
import { Error400, Error401, Error403, Error404, Error429, Error503, OkEnvelope } from "./envelopes.ts"

/** The most rows one page holds (spec: `page_size` ≤ 1000). */
export const MAX_PAGE_SIZE = 1000
export const DEFAULT_PAGE_SIZE = 100
export const REPORT_FORMATS = ["json", "csv", "tsv", "text"] as const
export type ReportFormat = (typeof REPORT_FORMATS)[number]
export const GROUP_BY = ["day", "asset", "source", "service", "endpoint", "status"] as const
export type GroupBy = (typeof GROUP_BY)[number]

/** YYYY-MM-DD or an RFC 3339 date-time. */
export const isReportTime = (s: string): boolean => isRfc3339(/^\d{4}-\d{2}-\d{2}$/.test(s) ? `${s}T00:00:00Z` : s)

const ReportTime = Schema.String.check(Schema.makeFilter((s: string) => isReportTime(s) || "Expected YYYY-MM-DD or an RFC 3339 timestamp"))
const from = Schema.optional(ReportTime).annotate({
  description: "Start, RFC 3339 or YYYY-MM-DD (that UTC day's start). Default: 24 h before `to`. At most 93 days back."
})
const to = Schema.optional(ReportTime).annotate({ description: "End, RFC 3339 (exclusive) or YYYY-MM-DD (that whole UTC day included). Default: now." })
const format = Schema.optional(Schema.Literals(REPORT_FORMATS)).annotate({
  description: "json (default: the envelope), csv (text/csv), tsv (text/tab-separated-values) or text (text/plain): a header row, no envelope."
})
const lang = Schema.optional(Schema.String).annotate({ description: "Language of `message`: en es pt fr de ru hi ur it ar ja zh (else Accept-Language, else en)." })
/** A positive integer in a query string. */
const PositiveInt = (max: number) =>
  Schema.String.check(Schema.makeFilter((s: string) => (/^[0-9]{1,7}$/.test(s) && Number(s) >= 1 && Number(s) <= max) || `Expected an integer from 1 to ${max}`))

const dataThrough = Schema.String.annotate({
  description: "RFC 3339: the newest moment this answer covers (rows created up to then are in it)."
})

/** A usage row as a report shows it: the stored row without the key id (always the caller's), its time as RFC 3339. */
export const UsageRowData = UsageRow.mapFields(({ api_key_id: _keyId, created_at: _createdAt, ...fields }) => ({
  ...fields,
  created_at: Schema.String.annotate({ description: "RFC 3339 with milliseconds (UTC)." })
})).annotate({ identifier: "ReportRow" })

const UsageData = Schema.Struct({
  rows: Schema.Array(UsageRowData),
  page: Schema.Int,
  page_size: Schema.Int,
  next_cursor: Schema.NullOr(Schema.String).annotate({ description: "Pass as `cursor` for the next (older) page; null on the last page." }),
  from: Schema.String,
  to: Schema.String,
  data_through: dataThrough
})

export const SummaryGroupData = Schema.Struct({
  group: Schema.String.annotate({ description: "The group's value (a YYYY-MM-DD day, an asset, …; \"\" for rows without one)." }),
  requests: Schema.Int,
  errors: Schema.Int.annotate({ description: "Rows with status_code ≥ 400." }),
  bytes_out: Schema.Int,
  p50_us: Schema.NullOr(Schema.Number),
  p95_us: Schema.NullOr(Schema.Number),
  p99_us: Schema.NullOr(Schema.Number)
}).annotate({ identifier: "SummaryGroup" })

const SummaryData = Schema.Struct({
  group_by: Schema.Literals(GROUP_BY),
  groups: Schema.Array(SummaryGroupData),
  from: Schema.String,
  to: Schema.String,
  data_through: dataThrough
})

const Remaining = Schema.Struct({
  limit: Schema.NullOr(Schema.Int).annotate({ description: "null: unlimited." }),
  used: Schema.Int,
  left: Schema.NullOr(Schema.Int).annotate({ description: "null: unlimited." })
})

const KeyData = Schema.Struct({
  key_id: Schema.String,
  prefix: Schema.String,
  tier: Schema.String,
  lrs_enabled: Schema.Boolean,
  limits: Schema.Struct({
    requests_per_second: Schema.NullOr(Schema.Int),
    burst: Schema.NullOr(Schema.Int),
    queries_per_month: Schema.NullOr(Schema.Int),
    reports_per_month: Schema.NullOr(Schema.Int),
    webhook_assets: Schema.Int,
    partner_ws: Schema.Boolean
  }),
  month: Schema.String.annotate({ description: "The quota month, YYYY-MM (UTC)." }),
  queries: Remaining,
  reports: Remaining,
  month_resets_at: Schema.String.annotate({ description: "RFC 3339: when the monthly counts start again (the next UTC month)." }),
  rate_limit: Schema.Struct({
    limit: Schema.NullOr(Schema.Int),
    remaining: Schema.NullOr(Schema.Int),
    reset_seconds: Schema.NullOr(Schema.Int)
  }),
  data_through: dataThrough
})

const table = (contentType: string) => Schema.String.pipe(HttpApiSchema.asText({ contentType }))
const tables = [table("text/csv"), table("text/tab-separated-values"), table("text/plain")] as const
/** 404: on a listener other than the report server's (the LPO's), naming LRS_HTTP_PORT. */
const reportErrors = [Error400, Error401, Error403, Error404, Error429, Error503] as const

export class LrsGroup extends HttpApiGroup.make("lrs").add(
  HttpApiEndpoint.get("usage", "/reports/usage", {
    query: {
      from, to, format, lang,
      asset: Schema.optional(Schema.String).annotate({ description: "Only rows of this asset." }),
      service: Schema.optional(Schema.String).annotate({ description: "Only rows of this service (LPO, LRS, …)." }),
      page: Schema.optional(PositiveInt(1_000_000)).annotate({ description: "1-based page (offset paging); prefer `cursor` while rows arrive." }),
      page_size: Schema.optional(PositiveInt(MAX_PAGE_SIZE)).annotate({ description: `Rows per page, 1–${MAX_PAGE_SIZE} (default ${DEFAULT_PAGE_SIZE}).` }),
      cursor: Schema.optional(Schema.String.check(Schema.isMaxLength(200))).annotate({ description: "`data.next_cursor` of the previous page: stable paging while rows arrive." })
    },
    success: [OkEnvelope(UsageData), ...tables],
    error: reportErrors
  }).annotate(OpenApi.Description, "The caller's own usage rows, newest first. Counts as one report against the monthly report limit."),
  HttpApiEndpoint.get("summary", "/reports/summary", {
    query: {
      from, to, format, lang,
      group_by: Schema.optional(Schema.Literals(GROUP_BY)).annotate({ description: "day (default; every day of the window present), asset, source, service, endpoint or status." })
    },
    success: [OkEnvelope(SummaryData), ...tables],
    error: reportErrors
  }).annotate(OpenApi.Description, "Per group: requests, errors, bytes out, latency p50/p95/p99 (µs, within 1 %). Counts as one report."),
  HttpApiEndpoint.get("key", "/reports/key", {
    query: { lang },
    success: OkEnvelope(KeyData),
    error: reportErrors
  }).annotate(OpenApi.Description, "The caller's key: tier, limits, this month's queries and reports used and left, when the month resets, the rate-limit state.")
).annotate(OpenApi.Title, "Reports (LRS)")
  .annotate(OpenApi.Description, "Served on LRS_HTTP_PORT (default 9090) to keys with LRS enabled. Key in X-API-Key or Authorization: Bearer.") {}
