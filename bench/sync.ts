/**
 * `tb sync` against this machine's own ceiling, on the machine's PostgreSQL (127.0.0.1:5432, a
 * fresh migrated database made and dropped here, with day partitions as production has) and Redis
 * (127.0.0.1:6379, logical database 14, flushed before each measurement):
 * - ceiling: the same rows (read from PostgreSQL beforehand, not timed) written straight with
 *   ioredis, one HSET of the row's fields and one ZADD to its day's time index per row, in
 *   pipelines of the sync's batch size;
 * - tb sync: `runSync`, a full run (what the first night does), timed end to end: rows read from
 *   PostgreSQL, HSET + PEXPIREAT per row, ZADDs to the time, key and asset indexes, prune, keys.
 * Rounds alternate the two; figures are medians. Then Valkey's memory per synced row: INFO memory
 * used_memory after a sync minus before (flushed), over the rows, and MEMORY USAGE of sample keys.
 * Columns: `cpu µs/req` this process's CPU per row (ioredis, and for the sync also the driver and
 * Effect), `helpers µs/req` Redis's own CPU per row (INFO cpu). Target: tb sync ≥ 0.5× the ceiling.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, ManagedRuntime, Redacted, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { Redis } from "ioredis"
import { execFileSync } from "node:child_process"
import { median } from "../src/domain/consensus.ts"
import { messageOf } from "../src/domain/errorMessage.ts"
import { DAY_MS, timeIndexKey, usageHashArgs, usageHashKey, type UsageRowText, utcDay } from "../src/domain/usageMirrorKeys.ts"
import { migrateLocked } from "../src/layers/MigrationsLive.ts"
import { streamUsageRows } from "../src/layers/sync/usageSource.ts"
import { DEFAULT_BATCH_SIZE } from "../src/programs/sync/program.ts"
import { runSync } from "../src/programs/sync/syncJob.ts"
import { ReaderSql } from "../src/services/Database.ts"
import type { BenchReport, BenchRow, Benchmark, TargetCheck } from "./run.ts"

const ROWS = Number(process.env["BENCH_SYNC_ROWS"] ?? 300_000)
const DAYS = 92
const ROUNDS = 3
const RATIO_TARGET = 0.5
const REDIS_DB = 14
const DATABASE = "tb_bench_sync"
const DATABASE_URL = `postgres://postgres@127.0.0.1:5432/${DATABASE}`
const GROUP = "usage_logs → Valkey (tb sync)"

const psql = (database: string, sql: string) =>
  execFileSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], { encoding: "utf8" })

/** Day partitions for the history, then ROWS rows over DAYS days: 2,000 keys (a tenth make half), 5 assets, 3% errors. */
const fillDatabase = () => {
  for (let d = 2; d <= DAYS + 2; d++) {
    const day = utcDay(Date.now() - d * DAY_MS)
    const next = utcDay(Date.now() - (d - 1) * DAY_MS)
    psql(DATABASE, `CREATE TABLE IF NOT EXISTS usage_logs_${day.replaceAll("-", "")} PARTITION OF usage_logs FOR VALUES FROM ('${day}') TO ('${next}')`)
  }
  psql(DATABASE, `INSERT INTO usage_logs
    SELECT gen_random_uuid(), substr(md5(i::text), 1, 8) || '-' || to_hex(i),
      ('00000000-0000-4000-8000-' || lpad(to_hex(CASE WHEN i % 2 = 0 THEN i % 200 ELSE i % 2000 END), 12, '0'))::uuid,
      'LPO', CASE WHEN i % 3 = 0 THEN 'udp' ELSE 'http' END, CASE WHEN i % 3 = 0 THEN 'price' ELSE '/price' END,
      (ARRAY['BTC','ETH','SOL','XRP','DOGE'])[1 + i % 5], 'USD', 'consensus',
      CASE WHEN i % 33 = 0 THEN NULL ELSE round((97000 + (i % 1000) / 3.0)::numeric, 2)::float8 END,
      CASE WHEN i % 33 = 0 THEN 429 ELSE 200 END, CASE WHEN i % 33 = 0 THEN 'RATE_LIMITED' END,
      50 + i % 900, '10.' || (i % 250) || '.' || (i % 200) || '.7', 'ip-10-0-1-23', 'us-east-1', 160 + i % 400,
      now() - 60 * interval '1 second' - (${DAYS} * interval '1 day') * (i::float8 / ${ROWS})
    FROM generate_series(1, ${ROWS}) i`)
  psql(DATABASE, "ANALYZE usage_logs")
}

/** Redis's own CPU seconds so far (INFO cpu). */
const redisCpuSeconds = async (redis: Redis) => {
  const info = await redis.info("cpu")
  return Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1] ?? Number.NaN) + Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1] ?? Number.NaN)
}

/** `measure` with this process's CPU and Redis's CPU per row, in µs. */
const withCpu = async (redis: Redis, rows: number, measure: () => Promise<number>) => {
  const redisBefore = await redisCpuSeconds(redis)
  const before = process.cpuUsage()
  const rate = await measure()
  const used = process.cpuUsage(before)
  const redisUsed = (await redisCpuSeconds(redis)) - redisBefore
  return { rate, clientUs: (used.user + used.system) / rows, redisUs: (redisUsed * 1e6) / rows }
}

const usedMemory = async (redis: Redis) => Number(/used_memory:(\d+)/.exec(await redis.info("memory"))?.[1] ?? Number.NaN)

/** The ceiling: HSET + ZADD per row, pipelines of `batch`, nothing else. Returns rows/s. */
const ceiling = async (redis: Redis, rows: ReadonlyArray<UsageRowText>, batch: number) => {
  await redis.flushdb()
  const started = performance.now()
  for (let i = 0; i < rows.length; i += batch) {
    const pipeline = redis.pipeline()
    for (const row of rows.slice(i, i + batch)) {
      pipeline.hset(usageHashKey(row.id), ...usageHashArgs(row))
      pipeline.zadd(timeIndexKey(utcDay(Number(row.created_at))), row.created_at, row.id)
    }
    const results = (await pipeline.exec()) ?? []
    const failed = results.find(([e]) => e !== null)
    if (failed?.[0]) throw failed[0]
  }
  return rows.length / ((performance.now() - started) / 1000)
}

const runSyncBenchmark = async (): Promise<BenchReport> => {
  const rowsOut: Array<BenchRow> = []
  const checks: Array<TargetCheck> = []
  psql("postgres", `DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`)
  psql("postgres", `CREATE DATABASE ${DATABASE}`)
  const redis = new Redis(`redis://127.0.0.1:6379/${REDIS_DB}`)
  const Pg = PgClient.layer({ url: Redacted.make(DATABASE_URL), maxConnections: 4 })
  const runtime = ManagedRuntime.make(Layer.effect(ReaderSql, Effect.gen(function*() {
    return yield* SqlClient.SqlClient
  })).pipe(Layer.provideMerge(Pg)))
  try {
    await runtime.runPromise(migrateLocked)
    fillDatabase()
    // The ceiling writes the rows the sync reads, in the same text form.
    const rows = await runtime.runPromise(Effect.gen(function*() {
      const reader = yield* ReaderSql
      const out: Array<UsageRowText> = []
      yield* streamUsageRows(reader, Date.now() - 95 * DAY_MS, Date.now() + DAY_MS).pipe(
        Stream.runForEach((r) => Effect.sync(() => void out.push(r)))
      )
      return out
    }))
    const ceilings: Array<number> = []
    const syncs: Array<number> = []
    const ceilingCpu: Array<{ clientUs: number; redisUs: number }> = []
    const syncCpu: Array<{ clientUs: number; redisUs: number }> = []
    let synced = 0
    for (let round = 0; round < ROUNDS; round++) {
      const c = await withCpu(redis, rows.length, () => ceiling(redis, rows, DEFAULT_BATCH_SIZE))
      ceilings.push(c.rate)
      ceilingCpu.push(c)
      await redis.flushdb()
      const s = await withCpu(redis, rows.length, async () => {
        const result = await runtime.runPromise(runSync(redis, { full: true, lagMs: 24 * 3_600_000, batchSize: DEFAULT_BATCH_SIZE }))
        synced = result.rows
        return result.rows / result.seconds
      })
      syncs.push(s.rate)
      syncCpu.push(s)
    }
    // Memory: a sync into an empty database, INFO memory before and after.
    await redis.flushdb()
    const before = await usedMemory(redis)
    await runtime.runPromise(runSync(redis, { full: true, lagMs: 24 * 3_600_000, batchSize: DEFAULT_BATCH_SIZE }))
    const after = await usedMemory(redis)
    const perRow = (after - before) / synced
    const sample = rows[Math.floor(rows.length / 2)]!
    const hashBytes = Number(await redis.memory("USAGE", usageHashKey(sample.id)))
    const timeKey = timeIndexKey(utcDay(Number(sample.created_at)))
    const timeBytes = Number(await redis.memory("USAGE", timeKey, "SAMPLES", "0"))
    const timeCard = await redis.zcard(timeKey)
    const encoding = await redis.object("ENCODING", usageHashKey(sample.id))
    const ceilingRate = median(ceilings)
    const syncRate = median(syncs)
    const ratio = syncRate / ceilingRate
    rowsOut.push(
      { group: GROUP, subject: "ceiling: pipelined HSET + ZADD (ioredis)", rate: ceilingRate, unit: "rows/s", cpuUsPerRequest: median(ceilingCpu.map((c) => c.clientUs)), helperCpuUsPerRequest: median(ceilingCpu.map((c) => c.redisUs)), note: `${rows.length} rows, pipelines of ${DEFAULT_BATCH_SIZE}; runs ${ceilings.map((c) => Math.round(c)).join(", ")}` },
      { group: GROUP, subject: "tb sync, full run (from PostgreSQL)", rate: syncRate, unit: "rows/s", ratio, cpuUsPerRequest: median(syncCpu.map((c) => c.clientUs)), helperCpuUsPerRequest: median(syncCpu.map((c) => c.redisUs)), note: `${synced} rows; runs ${syncs.map((c) => Math.round(c)).join(", ")}` },
      { group: GROUP, subject: "Valkey memory per synced row", rate: perRow, unit: "bytes", note: `used_memory +${after - before} B for ${synced} rows; one usage:<id> hash ${hashBytes} B (${encoding}); a day's time index ${timeBytes} B for ${timeCard} members` }
    )
    checks.push({ name: `${GROUP}: tb sync ≥ ${RATIO_TARGET}x the pipelined HSET+ZADD ceiling`, pass: ratio >= RATIO_TARGET, detail: `${ratio.toFixed(2)}x (${Math.round(syncRate)} against ${Math.round(ceilingRate)} rows/s)` })
    return { rows: rowsOut, checks }
  } catch (error) {
    return { rows: rowsOut, checks: [...checks, { name: `${GROUP}: measured`, pass: false, detail: messageOf(error) }] }
  } finally {
    await redis.flushdb().catch(() => undefined)
    await redis.quit().catch(() => undefined)
    await runtime.dispose()
    psql("postgres", `DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`)
  }
}

export const syncBenchmark: Benchmark = {
  name: "sync: usage rows/s into Valkey against pipelined HSET+ZADD, and Valkey memory per row",
  run: runSyncBenchmark
}
