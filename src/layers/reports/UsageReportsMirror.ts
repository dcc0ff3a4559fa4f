/**
 * A key's usage rows from the sync's Valkey mirror (docs: "SYNC" layout, src/domain/usageMirrorKeys.ts)
 * plus the database reader for what the mirror does not hold yet, so an answer is complete up to
 * the moment while the reader (Aurora) only serves the newest rows:
 *
 * - rows with created_at < `complete_through` (usage:sync) come from Valkey: the key's per-day
 *   index `usage:idx:key:<key>:<day>` read newest first (ZREVRANGEBYSCORE, same-score members in
 *   reverse id order, which is the database's (created_at DESC, id DESC)), then the rows' hashes;
 * - rows at or after it come from the database reader, as UsageReportsDatabase reads them.
 *
 * When the mirror cannot answer the whole window (nothing synced yet, a window starting before
 * what the sync keeps, Valkey unreachable or failing) the whole page is read from the database,
 * which holds every row: slower, never wrong.
 */
import { Effect, Layer, Redacted } from "effect"
import type { SqlClient } from "effect/sql"
import { Redis } from "ioredis"
import { DAY_MS, keyIndexKey, SYNC_STATE_KEY, usageHashKey, usageRowFromHash, utcDay, windowStart } from "../../domain/usageMirrorKeys.ts"
import { ReaderSql } from "../../services/Database.ts"
import { type ReportRow, type RowPosition, UsageReports, UsageReportsError, type UsageRowsPage, type UsageRowsQuery } from "../../services/UsageReports.ts"
import { withModule } from "../Logging.ts"
import { readRowsPage, rowClauses } from "./UsageReportsDatabase.ts"

/** Ids read from an index per round trip. */
const SCAN_BATCH = 500
/**
 * Rows looked at for one page at most: a rare filter (an asset the key seldom asks) over a busy
 * key's 93 days would read the mirror for long; past this the database (indexed) answers instead.
 */
export const MAX_SCANNED_ROWS = 50_000
const COMMAND_TIMEOUT_MS = 2_000

interface MirrorRow {
  readonly row: ReportRow
  readonly ms: number
}

/** The part of ioredis the reader uses (a test can hand in its own client). */
export type MirrorClient = Pick<Redis, "hgetall" | "zrevrangebyscore" | "pipeline" | "status">

const positionOf = (r: MirrorRow): RowPosition => ({ createdAtUs: BigInt(r.ms) * 1000n, id: r.row.id })
/** Strictly older than the position, in (created_at, id) order. */
const isBefore = (r: MirrorRow, p: RowPosition): boolean => {
  const us = BigInt(r.ms) * 1000n
  return us < p.createdAtUs || (us === p.createdAtUs && r.row.id < p.id)
}

/**
 * Mirror rows of one key in [from, to), newest first, after `after` when given, skipping `skip`
 * matching rows and returning at most `take`.
 */
export const scanMirror = (redis: MirrorClient, q: {
  readonly apiKeyId: string; readonly from: number; readonly to: number; readonly asset: string | undefined; readonly service: string | undefined
  readonly after: RowPosition | undefined; readonly skip: number; readonly take: number
}) =>
  Effect.tryPromise({
    try: async () => {
      const out: Array<MirrorRow> = []
      let skip = q.skip
      let scanned = 0
      // Scores are whole ms: [from, to) is [ceil(from), ceil(to) - 1].
      let max = Math.ceil(q.to) - 1
      if (q.after !== undefined) max = Math.min(max, Number(q.after.createdAtUs / 1000n))
      const min = Math.ceil(q.from)
      for (let day = Math.floor(max / DAY_MS) * DAY_MS; day + DAY_MS > min && out.length < q.take; day -= DAY_MS) {
        const index = keyIndexKey(q.apiKeyId, utcDay(day))
        for (let offset = 0; out.length < q.take; offset += SCAN_BATCH) {
          const ids = await redis.zrevrangebyscore(index, Math.min(max, day + DAY_MS - 1), Math.max(min, day), "LIMIT", offset, SCAN_BATCH)
          if (ids.length === 0) break
          scanned += ids.length
          if (scanned > MAX_SCANNED_ROWS + q.skip) throw new Error(`more than ${MAX_SCANNED_ROWS} mirror rows for one page`)
          const pipeline = redis.pipeline()
          for (const id of ids) pipeline.hgetall(usageHashKey(id))
          const hashes = (await pipeline.exec()) ?? []
          for (const [error, hash] of hashes) {
            if (error !== null) throw error
            const row = usageRowFromHash(hash as Record<string, string>)
            // Expired (or not a whole row), or not this key's: not part of the answer.
            if (row === undefined || row.api_key_id !== q.apiKeyId) continue
            if (q.asset !== undefined && row.asset !== q.asset) continue
            if (q.service !== undefined && row.service !== q.service) continue
            const r: MirrorRow = {
              ms: row.created_at,
              row: {
                id: row.id, request_id: row.request_id, service: row.service, protocol: row.protocol, endpoint: row.endpoint, asset: row.asset,
                quote: row.quote, source: row.source, price: row.price, status_code: row.status_code, error_code: row.error_code,
                latency_us: row.latency_us, client_ip: row.client_ip, node: row.node, region: row.region, bytes_out: row.bytes_out,
                created_at: new Date(row.created_at).toISOString()
              }
            }
            if (q.after !== undefined && !isBefore(r, q.after)) continue
            if (skip > 0) {
              skip--
              continue
            }
            out.push(r)
            if (out.length >= q.take) break
          }
          if (ids.length < SCAN_BATCH) break
        }
      }
      return out
    },
    catch: (cause) => new UsageReportsError({ reason: "Storage", message: `valkey: ${String(cause)}` })
  })

/** The split: rows before `completeThrough` are in the mirror, if it covers the window at all. */
const mirrorSplit = (redis: MirrorClient, q: UsageRowsQuery, now: number) =>
  Effect.tryPromise({
    try: async () => {
      if (redis.status !== "ready") return undefined
      const state = await redis.hgetall(SYNC_STATE_KEY)
      const completeThrough = Number(state["complete_through"])
      const rowDays = Number(state["row_days"])
      if (!Number.isFinite(completeThrough) || !Number.isFinite(rowDays)) return undefined
      // The mirror keeps row_days back from now; a window starting earlier is the database's.
      if (q.from < windowStart(now, rowDays) + DAY_MS) return undefined
      return completeThrough
    },
    catch: (cause) => new UsageReportsError({ reason: "Storage", message: `valkey: ${String(cause)}` })
  })

export const makeMirrorRows = (redis: MirrorClient, sql: SqlClient.SqlClient) => {
  const fromDatabase = (q: UsageRowsQuery) => readRowsPage(sql, q)

  const page = (q: UsageRowsQuery, split: number) =>
    Effect.gen(function*() {
      const recent: UsageRowsQuery = { ...q, from: Math.max(q.from, split) }
      const olderTo = Math.min(q.to, split)
      const hasRecent = recent.from < q.to
      const hasOlder = q.from < olderTo
      const afterInRecent = q.after !== undefined && q.after.createdAtUs >= BigInt(Math.ceil(split)) * 1000n
      // Offset paging: the database part's size says where the mirror part starts (all of the
      // offset is the mirror's when the window has no database part).
      let skipMirror = q.after === undefined ? q.offset : 0
      let head: ReadonlyArray<ReportRow> = []
      let headLast: RowPosition | undefined
      if (hasRecent && (q.after === undefined || afterInRecent)) {
        let offset = q.offset
        if (q.after === undefined && q.offset > 0) {
          const counted = yield* sql<{ n: number }>`SELECT count(*)::float8 AS n FROM usage_logs WHERE ${sql.and(rowClauses(sql, q, recent.from, q.to))}`
          const n = Number(counted[0]?.n ?? 0)
          if (q.offset >= n) offset = -1
          skipMirror = Math.max(0, q.offset - n)
        } else {
          skipMirror = 0
        }
        if (offset >= 0) {
          const fromDb = yield* readRowsPage(sql, { ...recent, offset })
          if (fromDb.next !== undefined || !hasOlder) return { rows: fromDb.rows, next: fromDb.next }
          head = fromDb.rows
          headLast = fromDb.last
        }
      }
      if (!hasOlder) return { rows: head, next: undefined }
      const want = q.pageSize - head.length
      const older = yield* scanMirror(redis, {
        apiKeyId: q.apiKeyId, from: q.from, to: olderTo, asset: q.asset, service: q.service,
        after: afterInRecent ? undefined : q.after, skip: skipMirror, take: want + 1
      })
      const taken = older.slice(0, want)
      const last = taken[taken.length - 1]
      const lastPosition = last === undefined ? headLast : positionOf(last)
      return { rows: [...head, ...taken.map((r) => r.row)], next: older.length > want ? lastPosition : undefined }
    })

  return (q: UsageRowsQuery): Effect.Effect<UsageRowsPage & { readonly source: "mirror" | "database" }, UsageReportsError> =>
    Effect.gen(function*() {
      const now = Date.now()
      const dataThrough = Math.min(q.to, now)
      const split = yield* mirrorSplit(redis, q, now).pipe(Effect.catch(() => Effect.succeed(undefined)))
      if (split !== undefined) {
        const mirrored = yield* page(q, split).pipe(Effect.result)
        if (mirrored._tag === "Success") return { ...mirrored.success, dataThrough, source: "mirror" as const }
        yield* Effect.logWarning("report rows from the mirror failed; reading the database", String(mirrored.failure))
      }
      const whole = yield* fromDatabase(q).pipe(Effect.mapError((e) => new UsageReportsError({ reason: "Storage", message: e.message })))
      return { ...whole, dataThrough, source: "database" as const }
    }).pipe(Effect.withSpan("UsageReports.rows", { attributes: { source: "mirror" } }), withModule("usage-reports"))
}

/** The mirror reader's own Valkey connection: fails fast while Valkey is away (then the database answers). */
export const openMirrorClient = (url: Redacted.Redacted<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const client = new Redis(Redacted.value(url), { enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: COMMAND_TIMEOUT_MS, lazyConnect: false })
      client.on("error", () => {})
      return client
    }),
    (client) => Effect.promise(() => client.quit().then(() => undefined, () => client.disconnect())).pipe(
      Effect.timeout("2 seconds"),
      Effect.catch(() => Effect.sync(() => client.disconnect()))
    )
  )

/** The mirror and the reader, on a Valkey at `url`. */
export const usageReportsMirrorLayer = (url: Redacted.Redacted<string>) =>
  Layer.effect(UsageReports, Effect.gen(function*() {
    const sql = yield* ReaderSql
    const redis = yield* openMirrorClient(url)
    return UsageReports.of({ kind: "mirror", rows: makeMirrorRows(redis, sql) })
  }))
