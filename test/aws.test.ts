import { DeleteMessageBatchCommand, ReceiveMessageCommand, SQSClient } from "@aws-sdk/client-sqs"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Option, Redacted, Scope } from "effect"
import { randomUUID } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, expect, it as vitestIt } from "vitest"
import type { UsageRow } from "../src/domain/usage.ts"
import type { UsageFacts } from "../src/domain/usageChunk.ts"
import { decodeQueueMessage, encodeUsageLogMessages } from "../src/domain/usageQueueMessage.ts"
import { SecretsLive } from "../src/layers/SecretsLive.ts"
import { UsageSinkThreaded } from "../src/layers/usage/UsageSinkThreaded.ts"
import { USAGE_LOG_MAX_BODY_BYTES, usageWriterSqs } from "../src/layers/usage/UsageWriterSqs.ts"
import { DatabaseInfo } from "../src/services/Database.ts"
import { RuntimeStatsLive } from "../src/layers/RuntimeStatsLive.ts"
import { Secrets } from "../src/services/Secrets.ts"
import { ServerInfo } from "../src/services/ServerInfo.ts"
import { UsageSink, UsageWriter } from "../src/services/UsageSink.ts"
import {
  AWS_TEST_ENV, type SqsStandIn, SQS_MAX_BATCH_BYTES, SQS_MAX_BATCH_ENTRIES, startSecretsManagerStandIn, startSqsStandIn
} from "./support/awsStandIns.ts"
import { createKey, priceWith, runCli, startServer, usageCount } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"
import { testAppConfig } from "./support/config.ts"
import { testParams } from "./support/params.ts"

/** The rows of usage_log bodies; a poison body fails the test. */
const rowsOf = (bodies: ReadonlyArray<string>): ReadonlyArray<UsageRow> =>
  bodies.flatMap((b) => {
    const message = decodeQueueMessage(b)
    if (message._tag === "Poison") throw new Error(`poison body: ${message.reason}`)
    return message.rows
  })

const makeRow = (): UsageRow => ({
  id: randomUUID(),
  request_id: `req-${randomUUID()}`,
  api_key_id: randomUUID(),
  service: "LPO",
  protocol: "udp",
  endpoint: "price",
  asset: "ETH",
  quote: "USD",
  source: "consensus",
  price: 3_456.789,
  status_code: 200,
  error_code: null,
  latency_us: 17,
  client_ip: "10.1.2.3",
  node: "node-a",
  region: "us-east-1",
  bytes_out: 321,
  created_at: Date.now()
})

const byId = (rows: ReadonlyArray<UsageRow>) => [...rows].sort((a, b) => (a.id < b.id ? -1 : 1))

beforeAll(() => {
  Object.assign(process.env, AWS_TEST_ENV)
})

/** A fresh SQS stand-in for one test, with the SDK pointed at it through the environment. */
const sqsStandIn = Effect.acquireRelease(
  Effect.promise(() => startSqsStandIn()).pipe(Effect.tap((sqs) => Effect.sync(() => void (process.env["AWS_ENDPOINT_URL_SQS"] = sqs.url)))),
  (sqs) => Effect.promise(() => sqs.close())
)

const sendBatchRequests = (sqs: SqsStandIn) => sqs.requests.filter((r) => r.target === "AmazonSQS.SendMessageBatch")
interface SentEntry {
  readonly Id: string
  readonly MessageBody: string
  readonly MessageAttributes?: Record<string, { readonly DataType: string; readonly StringValue?: string }>
}
const entriesOf = (body: Record<string, unknown>) => body["Entries"] as Array<SentEntry>
/** What SQS counts toward a batch's size: bodies, and attributes' names, data types and values. */
const entryBytes = (e: SentEntry) =>
  Buffer.byteLength(e.MessageBody) +
  Object.entries(e.MessageAttributes ?? {}).reduce((n, [name, a]) => n + name.length + a.DataType.length + (a.StringValue ?? "").length, 0)

const bodiesOf = (rows: ReadonlyArray<UsageRow>) => encodeUsageLogMessages(rows, USAGE_LOG_MAX_BODY_BYTES)

/** The SQS usage writer, pointed at the stand-in. */
const sqsWriter = (sqs: SqsStandIn) => Layer.build(usageWriterSqs(sqs.queueUrl)).pipe(Effect.map((ctx) => Context.get(ctx, UsageWriter)))

describe("UsageWriterSqs against the SQS stand-in (AWS JSON 1.0)", () => {
  it.live("sends 3000 rows as usage_log messages in SendMessageBatch requests within SQS limits, each with its type attribute", () =>
    Effect.gen(function*() {
      const sqs = yield* sqsStandIn
      const writer = yield* sqsWriter(sqs)
      const rows = Array.from({ length: 3000 }, makeRow)
      yield* writer.write(bodiesOf(rows))
      const sends = sendBatchRequests(sqs)
      assert.isAbove(sends.length, 1, "3000 rows cannot fit one request")
      for (const request of sends) {
        assert.strictEqual(request.contentType, "application/x-amz-json-1.0")
        assert.match(request.authorization, /^AWS4-HMAC-SHA256 Credential=AKIDTESTSTANDIN\/\d{8}\/us-east-1\/sqs\/aws4_request/)
        assert.strictEqual(request.body["QueueUrl"], sqs.queueUrl)
        const entries = entriesOf(request.body)
        assert.isAtMost(entries.length, SQS_MAX_BATCH_ENTRIES)
        assert.isAtMost(entries.reduce((n, e) => n + entryBytes(e), 0), SQS_MAX_BATCH_BYTES)
        for (const e of entries) {
          assert.deepStrictEqual(e.MessageAttributes, { type: { DataType: "String", StringValue: "usage_log" } })
          assert.match(e.MessageBody, /^\{"type":"usage_log","v":1,/)
        }
      }
      assert.deepStrictEqual(sqs.violations, [])
      const received = rowsOf(sqs.acceptedBodies)
      assert.strictEqual(received.length, 3000)
      assert.deepStrictEqual(byId(received), byId(rows))
      // Rows lost: none (the stand-in's own count, as the bench reads it).
      const stats = sqs.stats()
      assert.strictEqual(stats.rows, 3000)
      assert.strictEqual(stats.undecodable, 0)
    }))

  it.live("retries only the entries SQS reports Failed, and fails the write when they keep failing", () =>
    Effect.gen(function*() {
      const sqs = yield* sqsStandIn
      const writer = yield* sqsWriter(sqs)
      // 2500 rows are more than one 256 KiB message: the first request's entry "0" fails once.
      const rows = Array.from({ length: 2500 }, makeRow)
      sqs.failEntries(["0"], 1)
      yield* writer.write(bodiesOf(rows))
      const sends = sendBatchRequests(sqs)
      assert.isAbove(sends.length, 2)
      // The request after the first carries the failed entry again, attribute and all.
      assert.deepStrictEqual(entriesOf(sends[1]!.body), entriesOf(sends[0]!.body).filter((e) => e.Id === "0"))
      const received = rowsOf(sqs.acceptedBodies)
      assert.strictEqual(received.length, 2500)
      assert.deepStrictEqual(byId(received), byId(rows))

      // An entry failing on every attempt fails the write (the sink then keeps the rows).
      sqs.failEntries(["0"], 100)
      const error = yield* Effect.flip(writer.write(bodiesOf(Array.from({ length: 5 }, makeRow))))
      assert.strictEqual(error._tag, "UsageWriteError")
      assert.strictEqual(error.reason, "Queue")
    }))

  it.live("supports a consumer: ReceiveMessage (MD5-checked by the SDK) and DeleteMessageBatch drain the queue", () =>
    Effect.gen(function*() {
      const sqs = yield* sqsStandIn
      const writer = yield* sqsWriter(sqs)
      const rows = Array.from({ length: 1500 }, makeRow)
      yield* writer.write(bodiesOf(rows))
      const client = yield* Effect.acquireRelease(Effect.sync(() => new SQSClient({})), (c) => Effect.sync(() => c.destroy()))
      const consumed: Array<UsageRow> = []
      for (let round = 0; round < 50 && sqs.inQueue() > 0; round++) {
        const out = yield* Effect.promise(() =>
          client.send(new ReceiveMessageCommand({ QueueUrl: sqs.queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1, VisibilityTimeout: 30 }))
        )
        const messages = out.Messages ?? []
        consumed.push(...rowsOf(messages.map((m) => m.Body ?? "")))
        const deleted = yield* Effect.promise(() =>
          client.send(new DeleteMessageBatchCommand({ QueueUrl: sqs.queueUrl, Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle ?? "" })) }))
        )
        assert.strictEqual(deleted.Successful?.length, messages.length)
      }
      assert.strictEqual(sqs.inQueue(), 0)
      assert.deepStrictEqual(byId(consumed), byId(rows))
      // Nothing is left to receive.
      const empty = yield* Effect.promise(() => client.send(new ReceiveMessageCommand({ QueueUrl: sqs.queueUrl, MaxNumberOfMessages: 10 })))
      assert.deepStrictEqual(empty.Messages ?? [], [])
    }))
})

describe("UsageSinkThreaded with SQS (the usage thread writes the serving thread's chunks as usage_log messages)", () => {
  it.live("every row arrives; a batch the queue keeps refusing goes through the sink's retries instead", () =>
    Effect.gen(function*() {
      const sqs = yield* sqsStandIn
      const dataDir = mkdtempSync(join(tmpdir(), "tb-usage-sqs-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dataDir, { recursive: true, force: true })))
      // Entry "0" of the first requests fails as often as the pipeline's four writes of three sends
      // each: the batch goes to the spool, replayed at shutdown.
      sqs.failEntries(["0"], 12)
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(UsageSinkThreaded.pipe(Layer.provide(Layer.mergeAll(
        testAppConfig({ dataDir, sqsQueueUrl: Option.some(sqs.queueUrl) }),
        testParams({ usage_flush_ms: "50", usage_batch_size: "1000" }),
        RuntimeStatsLive,
        Layer.succeed(DatabaseInfo, DatabaseInfo.of({ kind: "postgres" })),
        Layer.succeed(ServerInfo, ServerInfo.of({ node: "node-a", region: "us-east-1", version: "test" }))
      ))), scope)
      const sink = Context.get(context, UsageSink)
      const facts = Array.from({ length: 2_600 }, (): UsageFacts => ({
        requestId: randomUUID(), apiKeyId: randomUUID(), service: "LPO", protocol: "udp", endpoint: "price", asset: "ETH", quote: "USD",
        source: "consensus", price: 3_456.789, code: "OK", latencyUs: 17, clientIp: "10.1.2.3", bytesOut: 321, createdAt: Date.now()
      }))
      for (const f of facts.slice(0, 2_000)) sink.record(f)
      yield* Effect.sleep("500 millis")
      for (const f of facts.slice(2_000)) sink.record(f)
      yield* Scope.close(scope, Exit.void)
      const stats = sink.stats()
      assert.isAtLeast(stats.failures, 1, "the refused batch was counted")
      assert.strictEqual(stats.buffered, 0)
      assert.deepStrictEqual(sqs.violations, [])
      // A retried batch may arrive twice (rows are idempotent on id); none may be missing.
      const received = rowsOf(sqs.acceptedBodies)
      const requestIds = new Set(received.map((r) => r.request_id))
      assert.strictEqual(facts.filter((f) => !requestIds.has(f.requestId ?? "")).length, 0)
      assert.strictEqual(new Set(received.map((r) => r.id)).size, facts.length)
      const standInStats = sqs.stats()
      assert.strictEqual(standInStats.undecodable, 0)
      assert.strictEqual(standInStats.rows, received.length)
    }))
})

describe("tb serve with SQS_QUEUE_URL (end to end)", () => {
  let sqs: SqsStandIn
  let dbUrl: string
  beforeAll(async () => {
    sqs = await startSqsStandIn()
    dbUrl = freshDatabase("aws_e2e")
  })
  afterAll(async () => {
    await sqs.close()
    dropDatabase(dbUrl)
  })

  vitestIt("N price requests arrive as exactly N usage rows in SQS messages after a SIGTERM flush", async () => {
    const env = { ...AWS_TEST_ENV, DATABASE_URL: dbUrl, SQS_QUEUE_URL: sqs.queueUrl, AWS_ENDPOINT_URL_SQS: sqs.url }
    const server = await startServer(env)
    const N = 40
    const requestIds: Array<string> = []
    try {
      const { key } = await createKey(server, "associate")
      for (let i = 0; i < N; i++) {
        const r = await priceWith(server, key, i % 2 === 0 ? "asset=BTC" : "asset=ETH")
        expect(r.status).toBe(200)
        requestIds.push(String(r.body["request_id"]))
      }
    } finally {
      expect(await server.stop("SIGTERM")).toBe(0)
    }
    expect(sqs.violations).toEqual([])
    expect(sqs.stats().undecodable).toBe(0)
    const rows = rowsOf(sqs.acceptedBodies)
    expect(new Set(rows.map((r) => r.id)).size).toBe(rows.length)
    const priceRows = rows.filter((r) => r.service === "LPO" && r.endpoint === "/price")
    expect(priceRows).toHaveLength(N)
    expect(priceRows.map((r) => r.request_id).sort()).toEqual([...requestIds].sort())
    expect(priceRows.every((r) => r.status_code === 200 && r.protocol === "http")).toBe(true)
    // The rows went to the queue, not to the database.
    expect(await usageCount({ DATABASE_URL: dbUrl })).toBe(0)
  }, 90_000)
})

const configWithSecret = (secretName: string) =>
  testAppConfig({ dbSecretName: Option.some(secretName), awsRegion: Option.some("us-east-1") })

/** A port nothing listens on: a stand-in started and closed again. */
const closedEndpoint = async () => {
  const gone = await startSecretsManagerStandIn({})
  await gone.close()
  return gone.url
}

describe("SecretsLive against the Secrets Manager stand-in (AWS JSON 1.1)", () => {
  const SECRET = "tb/test/db"
  beforeAll(() => {
    // The environment wins over the secret; these must come from the stand-in.
    for (const name of ["ADMIN_TOKEN", "DB_PASSWORD", "DB_USERNAME", "STRIPE_SECRET_KEY"]) delete process.env[name]
  })

  it.live("reads ADMIN_TOKEN and DB_PASSWORD from the DB_SECRET_NAME secret", () =>
    Effect.gen(function*() {
      const secretsManager = yield* Effect.acquireRelease(
        Effect.promise(() => startSecretsManagerStandIn({ [SECRET]: JSON.stringify({ username: "tb_app", password: "s3cret-pw", admin_token: "admin-from-aws" }) })),
        (s) => Effect.promise(() => s.close())
      )
      process.env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = secretsManager.url
      const secrets = yield* Layer.build(SecretsLive.pipe(Layer.provide(configWithSecret(SECRET)))).pipe(
        Effect.map((ctx) => Context.get(ctx, Secrets))
      )
      const value = (o: Option.Option<Redacted.Redacted<string>>) => Option.getOrUndefined(Option.map(o, Redacted.value))
      assert.strictEqual(value(yield* secrets.get("ADMIN_TOKEN")), "admin-from-aws")
      assert.strictEqual(value(yield* secrets.get("DB_PASSWORD")), "s3cret-pw")
      assert.strictEqual(value(yield* secrets.get("DB_USERNAME")), "tb_app")
      assert.isTrue(Option.isNone(yield* secrets.get("STRIPE_SECRET_KEY")))
      // Read once at start, over the JSON 1.1 protocol.
      assert.strictEqual(secretsManager.requests.length, 1)
      const request = secretsManager.requests[0]!
      assert.strictEqual(request.target, "secretsmanager.GetSecretValue")
      assert.strictEqual(request.contentType, "application/x-amz-json-1.1")
      assert.deepStrictEqual(request.body, { SecretId: SECRET })
      assert.match(request.authorization, /\/us-east-1\/secretsmanager\/aws4_request/)
    }))

  it.live("fails start-up with a SecretsError naming DB_SECRET_NAME when Secrets Manager is down", () =>
    Effect.gen(function*() {
      process.env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = yield* Effect.promise(closedEndpoint)
      const started = Date.now()
      const error = yield* Effect.flip(Layer.build(SecretsLive.pipe(Layer.provide(configWithSecret(SECRET)))))
      assert.strictEqual(error._tag, "SecretsError")
      assert.strictEqual(error.reason, "Unavailable")
      assert.include(error.message, `DB_SECRET_NAME=${SECRET}`)
      assert.isBelow(Date.now() - started, 15_000)
    }), 20_000)

  it.live("fails with SecretsError Malformed when the secret is not a JSON object", () =>
    Effect.gen(function*() {
      const secretsManager = yield* Effect.acquireRelease(
        Effect.promise(() => startSecretsManagerStandIn({ [SECRET]: "just-a-password" })),
        (s) => Effect.promise(() => s.close())
      )
      process.env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = secretsManager.url
      const error = yield* Effect.flip(Layer.build(SecretsLive.pipe(Layer.provide(configWithSecret(SECRET)))))
      assert.strictEqual(error._tag, "SecretsError")
      assert.strictEqual(error.reason, "Malformed")
    }))

  vitestIt("`tb migrate` with Secrets Manager down exits non-zero with one clear secrets line", async () => {
    const r = await runCli(["migrate"], {
      ...AWS_TEST_ENV,
      DB_SECRET_NAME: SECRET,
      AWS_ENDPOINT_URL_SECRETS_MANAGER: await closedEndpoint(),
      // Unreachable on purpose: start-up must stop at the secrets, before any database work.
      DATABASE_URL: "postgres://postgres@127.0.0.1:1/none"
    })
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain(`secrets error: DB_SECRET_NAME=${SECRET}`)
  }, 30_000)
})
