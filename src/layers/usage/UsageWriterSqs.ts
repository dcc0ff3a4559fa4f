import { Effect, Layer, Option } from "effect"
import { AppConfig } from "../../config/AppConfig.ts"
import { USAGE_LOG_TYPE } from "../../domain/usageQueueMessage.ts"
import { Sqs, type SqsMessageAttributes } from "../../services/Sqs.ts"
import { UsageWriteError, UsageWriter } from "../../services/UsageSink.ts"
import { malformedSetting, settingUrl, type StartupError } from "../../services/StartupError.ts"
import { SqsLive } from "../SqsLive.ts"

/**
 * Message and request sizes. SQS takes 1 MiB per message and per SendMessageBatch request now;
 * until 2025 it took 256 KiB, and that is what older queues' tooling and SQS-compatible servers
 * still take. Usage messages keep to 256 KiB (bodies and attributes, as SQS counts them), per
 * message and per request:
 * - any SQS setup accepts them;
 * - the usage thread's batch at the default `usage_batch_size` (1,000 rows, ~125 KB as a
 *   `usage_log` message) is one message and one request; a larger one is split;
 * - ten messages (one ReceiveMessage, one Lambda batch at the default batch size) are 2.5 MiB,
 *   under Lambda's 6 MB invocation payload, which ten 1 MiB messages would exceed;
 * - larger messages would save no money (SQS bills each 64 KiB of a request's payload as one
 *   request), only calls.
 */
export const MESSAGE_MAX_BYTES = 256 * 1024
export const REQUEST_MAX_BYTES = 256 * 1024
const MAX_ENTRIES = 10

/** Every message carries its `type` as a message attribute too, so a queue's consumers can route without reading the body. */
const TYPE_ATTRIBUTES: SqsMessageAttributes = { type: USAGE_LOG_TYPE }
/** The same attribute as SendMessageBatch carries it. */
export const TYPE_ATTRIBUTE = { type: { DataType: "String", StringValue: USAGE_LOG_TYPE } } as const
/** What SQS counts of that attribute toward the message's size: its name, data type and value. */
export const TYPE_ATTRIBUTE_BYTES = "type".length + "String".length + USAGE_LOG_TYPE.length
/** The body's share of a message. */
export const USAGE_LOG_MAX_BODY_BYTES = MESSAGE_MAX_BYTES - TYPE_ATTRIBUTE_BYTES

/**
 * Bodies into SendMessageBatch requests: in order, at most MAX_ENTRIES and REQUEST_MAX_BYTES each
 * (a body over that, a single row too large for a message, goes alone for SQS to refuse loudly).
 */
export const requestsOf = (bodies: ReadonlyArray<string>): ReadonlyArray<ReadonlyArray<string>> => {
  const requests: Array<Array<string>> = []
  let current: Array<string> = []
  let bytes = 0
  for (const body of bodies) {
    const size = Buffer.byteLength(body, "utf8") + TYPE_ATTRIBUTE_BYTES
    if (current.length > 0 && (current.length === MAX_ENTRIES || bytes + size > REQUEST_MAX_BYTES)) {
      requests.push(current)
      current = []
      bytes = 0
    }
    current.push(body)
    bytes += size
  }
  if (current.length > 0) requests.push(current)
  return requests
}

/**
 * A queue URL SQS can take: http(s), a host, and the queue's path
 * (https://sqs.<region>.amazonaws.com/<account>/<queue>). The SDK would take anything and fail
 * each send; start-up says so instead.
 */
export const checkSqsQueueUrl = (queueUrl: string): Effect.Effect<void, StartupError> =>
  settingUrl("SQS_QUEUE_URL", queueUrl, ["https:", "http:"], SQS_URL_FORM).pipe(
    Effect.flatMap((parsed) =>
      parsed.hostname === "" || parsed.pathname.replace(/\//g, "") === ""
        ? Effect.fail(malformedSetting("SQS_QUEUE_URL", `the URL names no queue (expected ${SQS_URL_FORM})`))
        : Effect.void)
  )

const SQS_URL_FORM = "https://sqs.<region>.amazonaws.com/<account>/<queue>"

/**
 * Start-up's check of SQS_QUEUE_URL, in the serving process: the writer itself runs on the usage
 * thread, whose failure to start would only be retried.
 */
export const SqsQueueUrlCheck = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* AppConfig
  if (Option.isSome(config.sqsQueueUrl)) yield* checkSqsQueueUrl(config.sqsQueueUrl.value)
}))

/**
 * The usage thread's `usage_log` bodies (src/domain/usageQueueMessage.ts) to the usage-log
 * queue, through the `Sqs` service the queued writer uses too; `tb queued-writer` (or the Lambda
 * entry) inserts them.
 */
export const usageWriterSqs = (queueUrl: string) =>
  Layer.effect(UsageWriter, Effect.gen(function*() {
    yield* checkSqsQueueUrl(queueUrl)
    const sqs = yield* Sqs
    /** One SendMessageBatch request per group of `requestsOf`; Sqs resends the entries SQS reports Failed. */
    const sendBodies = (bodies: ReadonlyArray<string>) =>
      Effect.forEach(requestsOf(bodies), (request) => sqs.sendBatch(request.map((body) => ({ body, attributes: TYPE_ATTRIBUTES }))), { discard: true }).pipe(
        Effect.mapError((e) => new UsageWriteError({ reason: "Queue", message: `${e.operation}: ${e.message}` }))
      )
    return UsageWriter.of({
      kind: "sqs",
      // SQS checks nothing in a body: nothing comes back refused (the queued writer reports poison).
      write: (bodies) => sendBodies(bodies).pipe(Effect.as([]))
    })
  })).pipe(Layer.provide(SqsLive(queueUrl)))
