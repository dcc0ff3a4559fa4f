import { execFileSync } from "node:child_process"
import { createHash, randomUUID } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { disposeQueuedWriterLambda, handler, type SqsEvent } from "../src/programs/lambda/queuedWriter.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"
import { postgresRelay, psqlRows, usageLogBody, usageRow } from "./queuedWriterSupport.ts"

/** A record as Lambda's SQS event source mapping delivers it (field for field, as in the AWS documentation's example). */
const sqsRecord = (messageId: string, body: string, receiveCount = 1): SqsEvent["Records"][number] => ({
  messageId,
  receiptHandle: `AQEB${randomUUID().replaceAll("-", "")}`,
  body,
  attributes: {
    ApproximateReceiveCount: String(receiveCount),
    SentTimestamp: String(Date.now() - 1000),
    SenderId: "AIDAIENQZJOLO23YVJ4VO",
    ApproximateFirstReceiveTimestamp: String(Date.now() - 500)
  },
  messageAttributes: { type: { stringValue: "usage_log", stringListValues: [], binaryListValues: [], dataType: "String" } },
  md5OfBody: createHash("md5").update(body).digest("hex"),
  eventSource: "aws:sqs",
  eventSourceARN: "arn:aws:sqs:us-east-1:123456789012:usage-logs",
  awsRegion: "us-east-1"
})

const NODE_ID = "queued-writer-lambda-test"

describe("the queued writer's Lambda entry", () => {
  const db = freshDatabase("queued_writer_lambda")
  let relay: Awaited<ReturnType<typeof postgresRelay>>
  const storedIds = () => psqlRows<{ readonly id: string }>(db, "SELECT id::text AS id FROM usage_logs ORDER BY id").map((r) => r.id)
  const poolConnections = () =>
    psqlRows<{ readonly pid: number }>(db, `SELECT pid FROM pg_stat_activity WHERE application_name = 'tb-${NODE_ID}-writer' ORDER BY pid`).map((r) => r.pid)

  beforeAll(async () => {
    relay = await postgresRelay()
    // Read at the first invocation, as Lambda's environment variables are.
    Object.assign(process.env, { DATABASE_URL: relay.via(db), NODE_ID, LOG_LEVEL: "Warn" })
  })
  afterAll(async () => {
    await disposeQueuedWriterLambda()
    await relay.close()
    dropDatabase(db)
  })

  it("reports poison records in batchItemFailures; good and duplicate records are stored once; the pool outlives the invocation", async () => {
    const key = randomUUID()
    const good = [usageRow({ api_key_id: key }), usageRow({ api_key_id: key })]
    const other = [usageRow({ api_key_id: key, endpoint: "/prices", asset: "BTC,ETH" })]
    const event: SqsEvent = {
      Records: [
        sqsRecord("11111111-1111-4111-8111-111111111111", usageLogBody(good)),
        sqsRecord("22222222-2222-4222-8222-222222222222", "not json at all"),
        sqsRecord("33333333-3333-4333-8333-333333333333", usageLogBody(other)),
        // The producer sent the first message again: another message id, the same rows.
        sqsRecord("44444444-4444-4444-8444-444444444444", usageLogBody(good)),
        sqsRecord("55555555-5555-4555-8555-555555555555", JSON.stringify({ type: "price_alert", v: 1 }))
      ]
    }
    expect(await handler(event)).toEqual({
      batchItemFailures: [{ itemIdentifier: "22222222-2222-4222-8222-222222222222" }, { itemIdentifier: "55555555-5555-4555-8555-555555555555" }]
    })
    expect(storedIds()).toEqual([...good, ...other].map((r) => r.id).sort())
    const counters = () => psqlRows(db, `SELECT requests::int, queries::int FROM api_key_usage_monthly WHERE api_key_id = '${key}'`)
    expect(counters()).toEqual([{ requests: 3, queries: 4 }])
    const pool = poolConnections()
    expect(pool.length).toBeGreaterThan(0)

    // The whole event delivered again (the visibility timeout expired): the same failures, nothing added.
    const again = { Records: event.Records.map((r) => ({ ...r, attributes: { ...r.attributes, ApproximateReceiveCount: "2" } })) }
    expect((await handler(again)).batchItemFailures.map((f) => f.itemIdentifier)).toEqual([
      "22222222-2222-4222-8222-222222222222", "55555555-5555-4555-8555-555555555555"
    ])
    expect(storedIds()).toHaveLength(3)
    expect(counters()).toEqual([{ requests: 3, queries: 4 }])
    expect(poolConnections()).toEqual(pool)
  })

  it("a database that cannot be reached fails the invocation (the whole batch comes back); the next one after it is back succeeds", async () => {
    const rows = [usageRow()]
    const event = { Records: [sqsRecord(randomUUID(), usageLogBody(rows))] }
    relay.cut()
    try {
      await expect(handler(event)).rejects.toThrow()
    } finally {
      relay.restore()
    }
    expect(await handler(event)).toEqual({ batchItemFailures: [] })
    expect(storedIds()).toContain(rows[0]!.id)
  })

  it("an event that is not an SQS event fails the invocation", async () => {
    await expect(handler({ Records: [{ body: "no message id" }] } as unknown as SqsEvent)).rejects.toThrow(/messageId/)
  })

  it("is the package's export trinity-beast/lambda/queued-writer (the built file), exporting handler", () => {
    const out = execFileSync(process.execPath, ["--input-type=module", "-e",
      "const m = await import('trinity-beast/lambda/queued-writer'); console.log(typeof m.handler)"], { cwd: import.meta.dirname, encoding: "utf8" })
    expect(out.trim()).toBe("function")
  })
})
