import { createHash, randomUUID } from "node:crypto"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"

/**
 * Loopback stand-ins for the AWS services the platform calls, speaking the wire protocols the
 * installed SDK clients use: SQS over AWS JSON 1.0 (`X-Amz-Target: AmazonSQS.<Op>`,
 * `application/x-amz-json-1.0`) and Secrets Manager over AWS JSON 1.1
 * (`X-Amz-Target: secretsmanager.<Op>`). Point the SDK at them with AWS_ENDPOINT_URL_SQS /
 * AWS_ENDPOINT_URL_SECRETS_MANAGER and dummy credentials. Signatures are not verified, but the
 * Authorization header is recorded so tests can check requests were signed for the right service.
 */

/** SQS quotas the real service enforces on SendMessageBatch. */
export const SQS_MAX_BATCH_ENTRIES = 10
export const SQS_MAX_BATCH_BYTES = 256 * 1024

export interface RecordedRequest {
  readonly target: string
  readonly contentType: string
  readonly authorization: string
  readonly body: Record<string, unknown>
}

export interface StandIn {
  /** Endpoint origin, e.g. http://127.0.0.1:43121 */
  readonly url: string
  readonly requests: Array<RecordedRequest>
  readonly close: () => Promise<void>
}

interface QueuedMessage {
  readonly messageId: string
  readonly body: string
  readonly md5: string
  receiptHandle: string | undefined
  invisibleUntil: number
  receiveCount: number
}

export interface SqsStandIn extends StandIn {
  readonly queueUrl: string
  /** Every body accepted by SendMessageBatch / SendMessage, in arrival order (also after deletion). */
  readonly acceptedBodies: Array<string>
  /** Messages not yet deleted. */
  readonly inQueue: () => number
  /** Report the entries with these Ids as Failed (not stored) in the next SendMessageBatch requests, `times` times each. */
  readonly failEntries: (ids: ReadonlyArray<string>, times?: number) => void
  /** Quota violations seen (a correct producer never causes any). */
  readonly violations: Array<string>
}

const md5Hex = (s: string) => createHash("md5").update(s, "utf8").digest("hex")

const readBody = (req: IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    req.on("error", reject)
  })

const listen = (server: Server): Promise<string> =>
  new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      resolve(`http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`)
    })
  })

const closeServer = (server: Server) => () =>
  new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  })

const reply = (res: ServerResponse, contentType: string, status: number, body: unknown, headers: Record<string, string> = {}) => {
  const text = JSON.stringify(body)
  res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(text), "x-amzn-requestid": randomUUID(), ...headers })
  res.end(text)
}

/** A JSON-protocol server: parses the target and body, records them, and hands them to `handle`. */
const jsonProtocolServer = (
  contentType: string,
  handle: (operation: string, body: Record<string, unknown>, res: ServerResponse) => void | Promise<void>,
  targetPrefix: string,
  requests: Array<RecordedRequest>
) =>
  createServer((req, res) => {
    void readBody(req).then(async (text) => {
      const target = String(req.headers["x-amz-target"] ?? "")
      const parsed: unknown = text === "" ? {} : JSON.parse(text)
      const body = typeof parsed === "object" && parsed !== null ? parsed as Record<string, unknown> : {}
      requests.push({ target, contentType: String(req.headers["content-type"] ?? ""), authorization: String(req.headers["authorization"] ?? ""), body })
      if (req.method !== "POST" || !target.startsWith(`${targetPrefix}.`)) {
        return reply(res, contentType, 400, { __type: "UnknownOperationException", message: `unsupported target ${target}` })
      }
      await handle(target.slice(targetPrefix.length + 1), body, res)
    }).catch((e: unknown) => reply(res, contentType, 500, { __type: "InternalFailure", message: String(e) }))
  })

const SQS_JSON = "application/x-amz-json-1.0"

/** SQS with one queue: SendMessage(Batch), ReceiveMessage (with visibility timeout), DeleteMessage(Batch). */
export const startSqsStandIn = async (queueName = "usage-logs"): Promise<SqsStandIn> => {
  const requests: Array<RecordedRequest> = []
  const acceptedBodies: Array<string> = []
  const violations: Array<string> = []
  const queue: Array<QueuedMessage> = []
  const failing = new Map<string, number>()
  let queueUrl = ""

  const sqsError = (res: ServerResponse, status: number, type: string, queryCode: string, message: string) =>
    reply(res, SQS_JSON, status, { __type: `com.amazonaws.sqs#${type}`, message }, { "x-amzn-query-error": `${queryCode};Sender` })

  const accept = (body: string): QueuedMessage => {
    const message = { messageId: randomUUID(), body, md5: md5Hex(body), receiptHandle: undefined, invisibleUntil: 0, receiveCount: 0 }
    queue.push(message)
    acceptedBodies.push(body)
    return message
  }

  const receive = (max: number, visibilityMs: number) => {
    const now = Date.now()
    const visible = queue.filter((m) => m.invisibleUntil <= now).slice(0, max)
    for (const m of visible) {
      m.receiptHandle = randomUUID()
      m.invisibleUntil = now + visibilityMs
      m.receiveCount++
    }
    return visible
  }

  const removeByHandle = (handle: unknown) => {
    const i = queue.findIndex((m) => m.receiptHandle !== undefined && m.receiptHandle === handle)
    if (i >= 0) queue.splice(i, 1)
    return i >= 0
  }

  const handle = async (operation: string, body: Record<string, unknown>, res: ServerResponse) => {
    if (body["QueueUrl"] !== queueUrl) {
      return sqsError(res, 400, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", `The specified queue does not exist: ${String(body["QueueUrl"])}`)
    }
    switch (operation) {
      case "SendMessage": {
        const m = accept(String(body["MessageBody"] ?? ""))
        return reply(res, SQS_JSON, 200, { MessageId: m.messageId, MD5OfMessageBody: m.md5 })
      }
      case "SendMessageBatch": {
        const entries = Array.isArray(body["Entries"]) ? body["Entries"] as Array<{ Id: string; MessageBody: string }> : []
        if (entries.length === 0) return sqsError(res, 400, "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest", "no entries")
        if (entries.length > SQS_MAX_BATCH_ENTRIES) {
          violations.push(`SendMessageBatch with ${entries.length} entries`)
          return sqsError(res, 400, "TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", `${entries.length} entries`)
        }
        const bytes = entries.reduce((n, e) => n + Buffer.byteLength(e.MessageBody ?? "", "utf8"), 0)
        if (bytes > SQS_MAX_BATCH_BYTES) {
          violations.push(`SendMessageBatch of ${bytes} bytes`)
          return sqsError(res, 400, "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong", `${bytes} bytes`)
        }
        if (new Set(entries.map((e) => e.Id)).size !== entries.length) {
          violations.push("SendMessageBatch with duplicate entry ids")
          return sqsError(res, 400, "BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", "duplicate ids")
        }
        const Successful: Array<unknown> = []
        const Failed: Array<unknown> = []
        for (const e of entries) {
          const left = failing.get(e.Id) ?? 0
          if (left > 0) {
            failing.set(e.Id, left - 1)
            Failed.push({ Id: e.Id, SenderFault: false, Code: "InternalError", Message: "injected failure (test)" })
            continue
          }
          const m = accept(e.MessageBody)
          Successful.push({ Id: e.Id, MessageId: m.messageId, MD5OfMessageBody: m.md5 })
        }
        return reply(res, SQS_JSON, 200, { Successful, Failed })
      }
      case "ReceiveMessage": {
        const max = Math.min(10, Math.max(1, Number(body["MaxNumberOfMessages"] ?? 1)))
        const visibilityMs = Number(body["VisibilityTimeout"] ?? 30) * 1000
        const deadline = Date.now() + Math.min(20, Number(body["WaitTimeSeconds"] ?? 0)) * 1000
        let got = receive(max, visibilityMs)
        while (got.length === 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 25))
          got = receive(max, visibilityMs)
        }
        return reply(res, SQS_JSON, 200, got.length === 0 ? {} : {
          Messages: got.map((m) => ({ MessageId: m.messageId, ReceiptHandle: m.receiptHandle, MD5OfBody: m.md5, Body: m.body, Attributes: { ApproximateReceiveCount: String(m.receiveCount) } }))
        })
      }
      case "DeleteMessage": {
        if (!removeByHandle(body["ReceiptHandle"])) return sqsError(res, 400, "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", "unknown receipt handle")
        return reply(res, SQS_JSON, 200, {})
      }
      case "DeleteMessageBatch": {
        const entries = Array.isArray(body["Entries"]) ? body["Entries"] as Array<{ Id: string; ReceiptHandle: string }> : []
        const Successful: Array<unknown> = []
        const Failed: Array<unknown> = []
        for (const e of entries) {
          if (removeByHandle(e.ReceiptHandle)) Successful.push({ Id: e.Id })
          else Failed.push({ Id: e.Id, SenderFault: true, Code: "ReceiptHandleIsInvalid", Message: "unknown receipt handle" })
        }
        return reply(res, SQS_JSON, 200, { Successful, Failed })
      }
      default:
        return reply(res, SQS_JSON, 400, { __type: "com.amazonaws.sqs#UnsupportedOperation", message: operation })
    }
  }

  const server = jsonProtocolServer(SQS_JSON, handle, "AmazonSQS", requests)
  const url = await listen(server)
  queueUrl = `${url}/000000000000/${queueName}`
  return {
    url,
    queueUrl,
    requests,
    acceptedBodies,
    violations,
    inQueue: () => queue.length,
    failEntries: (ids, times = 1) => {
      for (const id of ids) failing.set(id, times)
    },
    close: closeServer(server)
  }
}

const SECRETS_JSON = "application/x-amz-json-1.1"

/** Secrets Manager: GetSecretValue for the configured secrets (name → SecretString). */
export const startSecretsManagerStandIn = async (secrets: Readonly<Record<string, string>>): Promise<StandIn> => {
  const requests: Array<RecordedRequest> = []
  const handle = (operation: string, body: Record<string, unknown>, res: ServerResponse) => {
    if (operation !== "GetSecretValue") return reply(res, SECRETS_JSON, 400, { __type: "UnknownOperationException", Message: operation })
    const name = String(body["SecretId"] ?? "")
    const value = secrets[name]
    if (value === undefined) {
      return reply(res, SECRETS_JSON, 400, { __type: "ResourceNotFoundException", Message: "Secrets Manager can't find the specified secret." })
    }
    return reply(res, SECRETS_JSON, 200, {
      ARN: `arn:aws:secretsmanager:us-east-1:000000000000:secret:${name}-AbCdEf`,
      Name: name,
      VersionId: randomUUID(),
      SecretString: value,
      VersionStages: ["AWSCURRENT"],
      CreatedDate: Math.floor(Date.now() / 1000)
    })
  }
  const server = jsonProtocolServer(SECRETS_JSON, handle, "secretsmanager", requests)
  const url = await listen(server)
  return { url, requests, close: closeServer(server) }
}

/** Dummy credentials and region: the SDK signs requests, the stand-ins do not check signatures. */
export const AWS_TEST_ENV = {
  AWS_ACCESS_KEY_ID: "AKIDTESTSTANDIN",
  AWS_SECRET_ACCESS_KEY: "test-secret-standin",
  AWS_REGION: "us-east-1",
  AWS_EC2_METADATA_DISABLED: "true"
} as const
