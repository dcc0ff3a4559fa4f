import { Effect } from "effect"
import { SqlClient } from "effect/sql"

const DAY_MS = 86_400_000

const dayName = (ms: number) => new Date(ms).toISOString().slice(0, 10)
const partitionName = (ms: number) => `usage_logs_${dayName(ms).replaceAll("-", "")}`

/**
 * Day partitions of usage_logs: create from yesterday to `daysAhead` ahead, and drop whole
 * partitions older than the retention (no row-by-row DELETE). Names come from dates we format,
 * never from input, so interpolating them as identifiers is safe.
 */
export const maintainUsagePartitions = (options: { readonly now: number; readonly daysAhead: number; readonly retentionDays: number }) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const today = Math.floor(options.now / DAY_MS) * DAY_MS
    const created: Array<string> = []
    for (let d = -1; d <= options.daysAhead; d++) {
      const start = today + d * DAY_MS
      const name = partitionName(start)
      const exists = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_class WHERE relname = ${name}`
      if ((exists[0]?.n ?? 0) > 0) continue
      // A default partition holding rows of this day would block the new partition: move them.
      yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql.unsafe(`CREATE TABLE ${name} (LIKE usage_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`)
        yield* sql.unsafe(`WITH moved AS (DELETE FROM usage_logs_default WHERE created_at >= '${dayName(start)}' AND created_at < '${dayName(start + DAY_MS)}' RETURNING *) INSERT INTO ${name} SELECT * FROM moved`)
        yield* sql.unsafe(`ALTER TABLE usage_logs ATTACH PARTITION ${name} FOR VALUES FROM ('${dayName(start)}') TO ('${dayName(start + DAY_MS)}')`)
      }))
      created.push(name)
    }
    const cutoff = partitionName(today - options.retentionDays * DAY_MS)
    const old = yield* sql<{ name: string }>`
      SELECT c.relname AS name FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
      WHERE p.relname = 'usage_logs' AND c.relname ~ '^usage_logs_[0-9]{8}$' AND c.relname < ${cutoff}`
    for (const { name } of old) yield* sql.unsafe(`DROP TABLE ${name}`)
    return { created, dropped: old.map((o) => o.name) }
  })
