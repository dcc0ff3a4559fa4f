import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { AWS_TEST_ENV, type SqsStandIn, startSqsStandIn } from "./support/awsStandIns.ts"
import { scrape, valueOf } from "./support/prometheus.ts"
import { createKey, freePort, priceWith, startServer, udpRequest, usageCount } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"
import { eventually, psqlRows, startQueuedWriter } from "./queuedWriterSupport.ts"

interface StoredRow {
  readonly id: string
  readonly request_id: string
  readonly api_key_id: string | null
  readonly protocol: string
  readonly endpoint: string
  readonly status_code: number
}

describe("usage end to end: tb serve → SQS → tb queued-writer → usage_logs", () => {
  let sqs: SqsStandIn
  let db: string
  beforeAll(async () => {
    sqs = await startSqsStandIn()
    db = freshDatabase("queued_writer_e2e")
  })
  afterAll(async () => {
    await sqs.close()
    dropDatabase(db)
  })

  it("N requests over HTTP and UDP, SIGTERM, then the queued writer drains the queue: exactly N rows, every request id once, counted once", async () => {
    const env = { ...AWS_TEST_ENV, DATABASE_URL: db, SQS_QUEUE_URL: sqs.queueUrl, AWS_ENDPOINT_URL_SQS: sqs.url }
    const server = await startServer(env)
    const HTTP = 40
    const UDP = 40
    const httpRequestIds: Array<string> = []
    let keyId = ""
    try {
      const created = await createKey(server, "associate")
      keyId = created.key_id
      for (let i = 0; i < HTTP; i++) {
        const r = await priceWith(server, created.key, i % 2 === 0 ? "asset=BTC" : "asset=ETH")
        expect(r.status).toBe(200)
        httpRequestIds.push(String(r.body["request_id"]))
      }
      for (let i = 0; i < UDP; i++) {
        expect(await udpRequest(server.udpPort, `v1 price ${created.key} BTC/USD e2e-${i}`)).toContain("\"ok\":true")
      }
    } finally {
      expect(await server.stop("SIGTERM")).toBe(0)
    }
    expect(sqs.violations).toEqual([])
    expect(sqs.stats().undecodable).toBe(0)
    // On the queue, not in the database yet.
    expect(await usageCount({ DATABASE_URL: db })).toBe(0)
    const queuedRows = sqs.stats().rows

    const metricsPort = await freePort()
    const writer = startQueuedWriter({ ...env, LOG_LEVEL: "Warn", METRICS_PORT: String(metricsPort) })
    expect(await eventually(() => sqs.inQueue() === 0, 30_000), writer.output()).toBe(true)
    // Its /metrics: the messages it stored and the rows in them.
    const metrics = await scrape(`http://127.0.0.1:${metricsPort}/metrics`)
    expect(valueOf(metrics, "tb_queued_writer_rows_total")).toBe(queuedRows)
    expect(valueOf(metrics, "tb_queued_writer_messages_total", { outcome: "poison" })).toBe(0)
    expect(await writer.stop("SIGTERM")).toBe(0)
    expect(writer.output()).not.toMatch(/poison/)

    const rows = psqlRows<StoredRow>(db, "SELECT id::text, request_id, api_key_id::text, protocol, endpoint, status_code FROM usage_logs")
    expect(rows).toHaveLength(queuedRows)
    expect(new Set(rows.map((r) => r.id)).size).toBe(rows.length)
    expect(new Set(rows.map((r) => r.request_id)).size).toBe(rows.length)
    const priced = rows.filter((r) => r.api_key_id === keyId && r.status_code === 200)
    const http = priced.filter((r) => r.protocol === "http" && r.endpoint === "/price")
    expect(http.map((r) => r.request_id).sort()).toEqual([...httpRequestIds].sort())
    expect(priced.filter((r) => r.protocol === "udp")).toHaveLength(UDP)
    expect(psqlRows(db, `SELECT queries::int FROM api_key_usage_monthly WHERE api_key_id = '${keyId}'`)).toEqual([{ queries: HTTP + UDP }])
  }, 120_000)
})
