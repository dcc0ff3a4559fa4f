/**
 * `tb serve --mode REPORT_SERVER` as a child process against the real PostgreSQL and Redis (DB 4):
 * reports equal SQL over the same rows, only the caller's rows, formats, cursor paging while rows
 * arrive, the key route, the monthly report limit, report-on-report rows, UDP summaries, the edge's
 * refusals, and a clean SIGTERM.
 */
import { parse } from "csv-parse/sync"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { connect } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { histogramCount, scrape, valueOf } from "./support/prometheus.ts"
import { freePort, udpRequest } from "./support/server.ts"
import { dropDatabase, freshDatabase, freshRedis, psqlText, REDIS_HOST, REDIS_PORT } from "./support/services.ts"

const ROOT = join(import.meta.dirname, "..")
/** The built CLI (`npm test` builds first); TB_CLI points a local run at another build. */
const CLI = process.env["TB_CLI"] ?? join(ROOT, "dist", "src", "programs", "cli.js")
const REDIS_DB = 4
const DAY = 86_400_000
const QUOTA_TIER_LIMIT = 3

let env: Record<string, string>
let child: ChildProcess
let exited: Promise<number | null>
let output = ""
let base = ""
let udpPort = 0
let dbUrl = ""
const keys: Record<"a" | "b" | "noLrs" | "quota", { key: string; key_id: string }> = {} as never

const cli = (args: ReadonlyArray<string>) => execFileSync(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, encoding: "utf8" })
const psql = (sql: string) => psqlText(dbUrl, sql)

/** `n` LPO rows of a key over the last `days` days (3 rows per millisecond used, so ties on created_at). */
const insertRows = (keyId: string, n: number, from: number, span: number) =>
  psql(`INSERT INTO usage_logs (id, request_id, api_key_id, service, protocol, endpoint, asset, quote, source, price, status_code, error_code,
                                latency_us, client_ip, node, region, bytes_out, created_at)
        SELECT gen_random_uuid(), 'bb-' || g, '${keyId}', 'LPO', 'http', (ARRAY['/price','/prices'])[1 + g % 2], (ARRAY['BTC','ETH','=CMD'])[1 + g % 3],
               'USD', 'consensus', 97000.5 + g, (ARRAY[200,200,404])[1 + g % 3], CASE WHEN g % 3 = 2 THEN 'UNKNOWN_ASSET' END,
               (g * 131) % 50000, '10.1.2.3', 'n1', 'local', 300 + g,
               to_timestamp(${from / 1000}) + (floor(random() * ${span} / 3) * 3)::int * interval '1 millisecond'
        FROM generate_series(1, ${n}) g`)

const get = (path: string, key?: string, init: { readonly method?: string; readonly headers?: Record<string, string> } = {}) =>
  fetch(`${base}${path}`, { method: init.method ?? "GET", headers: { ...(key === undefined ? {} : { "x-api-key": key }), ...init.headers } })
const json = async (res: Response) => (await res.json()) as { success: boolean; code: string; service: string; data: Record<string, unknown> | null }

const sqlIds = (keyId: string, from: number, to: number, extra = "") =>
  psql(`SELECT id FROM usage_logs WHERE api_key_id = '${keyId}' AND created_at >= to_timestamp(${from / 1000}) AND created_at < to_timestamp(${to / 1000}) ${extra}
        ORDER BY created_at DESC, id DESC`).split("\n").filter((l) => l !== "")

beforeAll(async () => {
  dbUrl = freshDatabase("lrs_blackbox")
  env = {
    DATABASE_URL: dbUrl,
    VALKEY_URL: freshRedis(REDIS_DB),
    DATA_DIR: mkdtempSync(join(tmpdir(), "tb-lrs-")),
    BIND_HOST: "127.0.0.1",
    LOG_LEVEL: "Warn",
    ADMIN_TOKEN: `admin-${crypto.randomUUID()}`,
    LRS_HTTP_PORT: String(await freePort()),
    LRS_UDP_PORT: String(await freePort()),
    LPO_HTTP_PORT: String(await freePort()),
    LPO_UDP_PORT: String(await freePort()),
    METRICS_PORT: String(await freePort())
  }
  cli(["migrate"])
  // A tier whose monthly report limit this test can exhaust (limits are data).
  psql(`INSERT INTO rate_limit_template (tier, requests_per_second, burst, monthly_queries, lrs_reports_per_month, public, description)
        VALUES ('lrs_test', 100, 100, 1000, ${QUOTA_TIER_LIMIT}, false, 'test') ON CONFLICT (tier) DO NOTHING`)
  const create = (tier: string, lrs: boolean) => JSON.parse(cli(["keys", "create", "--tier", tier, ...(lrs ? ["--lrs"] : []), "--json"]).trim().split("\n").pop()!) as { key: string; key_id: string }
  keys.a = create("partner", true)
  keys.b = create("partner", true)
  // listener: reports only with the add-on, not taken here
  keys.noLrs = create("listener", false)
  keys.quota = create("lrs_test", true)
  const now = Date.now()
  insertRows(keys.a.key_id, 600, now - 2 * DAY, 2 * DAY - 60_000)
  insertRows(keys.b.key_id, 200, now - 2 * DAY, 2 * DAY - 60_000)
  child = spawn(process.execPath, [CLI, "serve", "--mode", "REPORT_SERVER"], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
  child.stdout?.on("data", (d: Buffer) => void (output += d.toString()))
  child.stderr?.on("data", (d: Buffer) => void (output += d.toString()))
  exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)))
  base = `http://127.0.0.1:${env["LRS_HTTP_PORT"]}`
  udpPort = Number(env["LRS_UDP_PORT"])
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline && child.exitCode === null) {
    const res = await fetch(`${base}/openapi.json`).catch(() => undefined)
    if (res?.status === 200) return
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`report server did not start:\n${output.slice(-4000)}`)
}, 120_000)

afterAll(async () => {
  if (child?.exitCode === null) child.kill("SIGKILL")
  await exited
  if (dbUrl !== "") dropDatabase(dbUrl)
})

describe("tb serve --mode REPORT_SERVER", () => {
  it("serves the LRS only: the report routes and the API document, no price routes", async () => {
    const spec = (await (await get("/openapi.json")).json()) as { paths: Record<string, unknown> }
    expect(Object.keys(spec.paths)).toEqual(expect.arrayContaining(["/reports/usage", "/reports/summary", "/reports/key"]))
    const price = await get("/price?asset=BTC", keys.a.key)
    expect(price.status).toBe(404)
    expect((await json(price)).service).toBe("LRS")
    expect(await fetch(`http://127.0.0.1:${env["LPO_HTTP_PORT"]}/health`).catch(() => undefined)).toBeUndefined()
  })

  it("/reports/usage: the caller's own rows, newest first, equal to SQL over the same rows", async () => {
    const now = Date.now()
    const from = now - 2 * DAY
    const res = await get(`/reports/usage?from=${new Date(from).toISOString()}&to=${new Date(now).toISOString()}&service=LPO&page_size=1000`, keys.a.key)
    expect(res.status).toBe(200)
    const body = await json(res)
    expect(body).toMatchObject({ success: true, code: "OK", service: "LRS" })
    const data = body.data as { rows: Array<{ id: string; price: number; asset: string }>; data_through: string; next_cursor: string | null }
    expect(data.rows.map((r) => r.id)).toEqual(sqlIds(keys.a.key_id, from, now, "AND service = 'LPO'"))
    expect(data.rows).toHaveLength(600)
    expect(data.next_cursor).toBeNull()
    expect(Date.parse(data.data_through)).toBeLessThanOrEqual(now)
    const bIds = new Set(sqlIds(keys.b.key_id, from, now))
    expect(data.rows.some((r) => bIds.has(r.id))).toBe(false)
    // Filters: asset.
    const eth = (await json(await get(`/reports/usage?asset=ETH&page_size=1000&from=${new Date(from).toISOString()}`, keys.a.key))).data as { rows: Array<{ asset: string }> }
    expect(eth.rows.length).toBe(Number(psql(`SELECT count(*) FROM usage_logs WHERE api_key_id = '${keys.a.key_id}' AND asset = 'ETH' AND created_at >= to_timestamp(${from / 1000})`)))
    expect(eth.rows.every((r) => r.asset === "ETH")).toBe(true)
  })

  it("cursor paging returns every row once while new rows arrive", async () => {
    const now = Date.now()
    const from = now - 2 * DAY
    const window = `from=${new Date(from).toISOString()}&to=${new Date(now).toISOString()}&service=LPO`
    const expected = sqlIds(keys.a.key_id, from, now, "AND service = 'LPO'")
    const seen: Array<string> = []
    let cursor: string | null = null
    for (let page = 0; page < 100; page++) {
      const body = await json(await get(`/reports/usage?${window}&page_size=97${cursor === null ? "" : `&cursor=${cursor}`}`, keys.a.key))
      const data = body.data as { rows: Array<{ id: string }>; next_cursor: string | null }
      seen.push(...data.rows.map((r) => r.id))
      cursor = data.next_cursor
      if (cursor === null) break
      if (page < 3) insertRows(keys.a.key_id, 20, now - 10_000, 9_000)
    }
    expect(seen).toEqual(expected)
    const bad = await get(`/reports/usage?cursor=not-a-cursor`, keys.a.key)
    expect(bad.status).toBe(400)
  })

  it("csv, tsv and text: a header row and the same rows, no envelope; values guarded against formulas", async () => {
    const q = `/reports/usage?service=LPO&asset==CMD&page_size=1000&from=${new Date(Date.now() - 2 * DAY).toISOString()}`
    const jsonRows = ((await json(await get(q, keys.a.key))).data as { rows: Array<{ id: string; asset: string }> }).rows
    expect(jsonRows.length).toBeGreaterThan(0)
    expect(jsonRows[0]!.asset).toBe("=CMD")
    for (const [format, type, delimiter] of [["csv", "text/csv", ","], ["tsv", "text/tab-separated-values", "\t"]] as const) {
      const res = await get(`${q}&format=${format}`, keys.a.key)
      expect(res.status).toBe(200)
      expect(res.headers.get("content-type")).toContain(type)
      const table = parse(await res.text(), { delimiter }) as Array<Array<string>>
      expect(table[0]!.slice(0, 3)).toEqual(["id", "request_id", "service"])
      expect(table.slice(1).map((r) => r[0])).toEqual(jsonRows.map((r) => r.id))
      expect(table[1]![table[0]!.indexOf("asset")]).toBe("'=CMD")
    }
    const text = await get(`${q}&format=text`, keys.a.key)
    expect(text.headers.get("content-type")).toContain("text/plain")
    const lines = (await text.text()).trimEnd().split("\n")
    expect(lines[0]).toMatch(/^id\s+request_id\s+service/)
    expect(lines).toHaveLength(jsonRows.length + 1)
    const summary = await get(`/reports/summary?group_by=service&format=csv`, keys.a.key)
    expect((await summary.text()).split("\r\n")[0]).toBe("service,requests,errors,bytes_out,p50_us,p95_us,p99_us")
  })

  it("/reports/summary: counts equal SQL; by day every day of the window", async () => {
    const now = Date.now()
    const from = now - 2 * DAY
    const body = await json(await get(`/reports/summary?group_by=service&from=${new Date(from).toISOString()}&to=${new Date(now).toISOString()}`, keys.b.key))
    const data = body.data as { groups: Array<{ group: string; requests: number; errors: number; bytes_out: number }>; data_through: string }
    const lpo = data.groups.find((g) => g.group === "LPO")!
    const [requests, errors, bytes] = psql(`SELECT count(*), count(*) FILTER (WHERE status_code >= 400), sum(bytes_out) FROM usage_logs
      WHERE api_key_id = '${keys.b.key_id}' AND service = 'LPO' AND created_at >= to_timestamp(${from / 1000}) AND created_at < to_timestamp(${now / 1000})`).split("|").map(Number)
    expect([lpo.requests, lpo.errors, lpo.bytes_out]).toEqual([requests, errors, bytes])
    const days = (await json(await get("/reports/summary?from=2026-01-01&to=2026-01-01", keys.b.key)))
    if (Date.now() - Date.parse("2026-01-01") < 93 * DAY) expect((days.data as { groups: Array<unknown> }).groups).toHaveLength(1)
    const week = (await json(await get(`/reports/summary?group_by=day&from=${new Date(now - 6 * DAY).toISOString().slice(0, 10)}`, keys.b.key))).data as { groups: Array<{ group: string; requests: number }> }
    expect(week.groups.map((g) => g.group)).toEqual(Array.from({ length: 7 }, (_, i) => new Date(now - (6 - i) * DAY).toISOString().slice(0, 10)))
    expect(week.groups[0]!.requests).toBe(0)
  })

  it("refuses: no key 401, a key without reports 403 LRS_NOT_ENABLED, page_size over 1000 and a window over 93 days 400, a wrong method 405", async () => {
    expect(await json(await get("/reports/usage"))).toMatchObject({ code: "MISSING_API_KEY", service: "LRS" })
    const noLrs = await get("/reports/usage", keys.noLrs.key)
    expect(noLrs.status).toBe(403)
    expect((await json(noLrs)).code).toBe("LRS_NOT_ENABLED")
    expect((await get("/reports/key", keys.noLrs.key)).status).toBe(403)
    expect((await get("/reports/usage?page_size=1001", keys.a.key)).status).toBe(400)
    const old = await get(`/reports/usage?from=${new Date(Date.now() - 100 * DAY).toISOString().slice(0, 10)}`, keys.a.key)
    expect(old.status).toBe(400)
    expect((await json(old)).code).toBe("BAD_REQUEST")
    const post = await get("/reports/usage", keys.a.key, { method: "POST" })
    expect(post.status).toBe(405)
    expect(post.headers.get("allow")).toBe("GET, HEAD")
    const head = await get("/reports/key", keys.a.key, { method: "HEAD" })
    expect(head.status).toBe(200)
  })

  it("closes a connection that sends nothing, or not a whole request head, within the 10 s head deadline", async () => {
    const closedAfter = (send: string) =>
      new Promise<number>((resolve) => {
        const started = Date.now()
        const socket = connect(Number(env["LRS_HTTP_PORT"]), "127.0.0.1", () => void (send === "" || socket.write(send)))
        socket.on("data", () => {})
        socket.on("error", () => {})
        socket.on("close", () => resolve(Date.now() - started))
      })
    const [silent, partial] = await Promise.all([closedAfter(""), closedAfter("GET /reports/key HTTP/1.1\r\nHost: x\r\n")])
    for (const ms of [silent, partial]) {
      expect(ms).toBeGreaterThanOrEqual(9_500)
      expect(ms).toBeLessThan(13_000)
    }
  }, 20_000)

  it("counts reports against the tier's monthly limit cluster-wide: QUOTA_EXCEEDED past it, with RateLimit-* headers; /reports/key tells", async () => {
    for (let i = 1; i <= QUOTA_TIER_LIMIT; i++) {
      const res = await get("/reports/summary", keys.quota.key)
      expect(res.status).toBe(200)
      expect(res.headers.get("ratelimit-limit")).toBe(String(QUOTA_TIER_LIMIT))
      expect(res.headers.get("ratelimit-remaining")).toBe(String(QUOTA_TIER_LIMIT - i))
    }
    const over = await get("/reports/usage", keys.quota.key)
    expect(over.status).toBe(429)
    expect((await json(over)).code).toBe("QUOTA_EXCEEDED")
    expect(over.headers.get("ratelimit-remaining")).toBe("0")
    expect(Number(over.headers.get("retry-after"))).toBeGreaterThan(0)
    expect(Number(over.headers.get("ratelimit-reset"))).toBeGreaterThan(0)
    // The count lives in Valkey, where every node sees it.
    const month = new Date().toISOString().slice(0, 7).replace("-", "")
    const counted = execFileSync("redis-cli", ["-h", REDIS_HOST, "-p", String(REDIS_PORT), "-n", String(REDIS_DB), "GET", `lrs-reports:${keys.quota.key_id}:${month}`], { encoding: "utf8" }).trim()
    expect(counted).toBe(String(QUOTA_TIER_LIMIT))
    const info = (await json(await get("/reports/key", keys.quota.key))).data as Record<string, unknown>
    expect(info).toMatchObject({ tier: "lrs_test", key_id: keys.quota.key_id, reports: { limit: QUOTA_TIER_LIMIT, used: QUOTA_TIER_LIMIT, left: 0 } })
    expect(Date.parse(info["month_resets_at"] as string)).toBeGreaterThan(Date.now())
  })

  it("/metrics on METRICS_PORT: the report routes' durations, and the quota refusals of the key by its id", async () => {
    const metrics = await scrape(`http://127.0.0.1:${env["METRICS_PORT"]}/metrics`)
    expect(histogramCount(metrics, "http_server_request_duration_seconds", { service: "LRS", http_route: "/reports/summary", http_response_status_code: "200" }))
      .toBeGreaterThanOrEqual(QUOTA_TIER_LIMIT)
    expect(valueOf(metrics, "tb_key_refusals_total", { key_id: keys.quota.key_id, reason: "quota_exceeded" })).toBe(1)
    expect(metrics.text).not.toContain(keys.quota.key)
  })

  it("every report request is a usage row of the caller, service LRS (report-on-report), seen only by its key", async () => {
    const res = await get("/reports/key", keys.b.key, { headers: { "x-request-id": "report-on-report-1" } })
    expect(res.status).toBe(200)
    const sent = Buffer.byteLength(await res.text())
    let rows: Array<{ request_id: string; endpoint: string; bytes_out: number; status_code: number }> = []
    for (let i = 0; i < 50 && rows.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 200))
      const body = await json(await get("/reports/usage?service=LRS&page_size=1000", keys.b.key))
      rows = ((body.data as { rows: typeof rows }).rows).filter((r) => r.request_id === "report-on-report-1")
    }
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ endpoint: "/reports/key", status_code: 200 })
    expect(rows[0]!.bytes_out).toBe(sent)
    const asA = (await json(await get("/reports/usage?service=LRS&page_size=1000", keys.a.key))).data as { rows: Array<{ request_id: string }> }
    expect(asA.rows.some((r) => r.request_id === "report-on-report-1")).toBe(false)
  })

  it("UDP: v1 summary answers one JSON line for an LRS key; a short unauthenticated probe gets nothing", async () => {
    const reply = await udpRequest(udpPort, `v1 summary ${keys.b.key} ${new Date(Date.now() - 2 * DAY).toISOString().slice(0, 10)} ${new Date().toISOString().slice(0, 10)} u1`, 3000)
    const parsed = JSON.parse(reply ?? "null") as { ok: boolean; rid: string; requests: number; services: Array<{ service: string; requests: number }> }
    expect(parsed).toMatchObject({ ok: true, rid: "u1" })
    expect(parsed.services.find((s) => s.service === "LPO")?.requests).toBe(200)
    expect(await udpRequest(udpPort, "v1 summary x", 500)).toBeUndefined()
    expect(JSON.parse((await udpRequest(udpPort, `v1 summary ${keys.noLrs.key} u2`, 3000)) ?? "null")).toEqual({ ok: false, rid: "u2", code: "LRS_NOT_ENABLED" })
  })

  it("after tb sync, rows before its high-water mark are answered from Valkey: the same rows, even once the database no longer has them", async () => {
    const now = Date.now()
    const from = now - 2 * DAY
    const window = `from=${new Date(from).toISOString()}&to=${new Date(now).toISOString()}&service=LPO&page_size=1000`
    const before = ((await json(await get(`/reports/usage?${window}`, keys.a.key))).data as { rows: Array<Record<string, unknown>> }).rows
    expect(before.length).toBeGreaterThanOrEqual(600)
    cli(["sync", "--full", "--json"])
    const completeThrough = Number(execFileSync("redis-cli", ["-h", REDIS_HOST, "-p", String(REDIS_PORT), "-n", String(REDIS_DB), "HGET", "usage:sync", "complete_through"], { encoding: "utf8" }).trim())
    expect(completeThrough).toBeGreaterThan(from)
    // The reader keeps only what the sync has not copied: the report is still whole.
    psql(`DELETE FROM usage_logs WHERE api_key_id = '${keys.a.key_id}' AND created_at < to_timestamp(${completeThrough / 1000})`)
    const after = ((await json(await get(`/reports/usage?${window}`, keys.a.key))).data as { rows: Array<Record<string, unknown>> }).rows
    expect(after).toEqual(before)
  }, 60_000)

  it("SIGTERM: exits 0 and the last report's usage row is stored", async () => {
    await get("/reports/key", keys.b.key, { headers: { "x-request-id": "last-before-stop" } })
    child.kill("SIGTERM")
    expect(await exited).toBe(0)
    expect(psql(`SELECT count(*) FROM usage_logs WHERE request_id = 'last-before-stop' AND service = 'LRS' AND api_key_id = '${keys.b.key_id}'`)).toBe("1")
    // Its listeners are closed with it, the metrics one included.
    expect(await fetch(`http://127.0.0.1:${env["METRICS_PORT"]}/metrics`).catch(() => undefined)).toBeUndefined()
  }, 30_000)
})
