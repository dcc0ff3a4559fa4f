import { createHash, randomBytes, randomUUID } from "node:crypto"
import { createServer, type ServerResponse } from "node:http"
import { Schema } from "effect"
import { decodeQueueMessage } from "../domain/usageQueueMessage.ts"
import { closeServer, jsonProtocolHandler, listenLoopback, type RecordedRequest, replyJson, type StandIn } from "./awsJsonProtocol.ts"

/**
 * A loopback stand-in for one SQS standard queue, speaking AWS JSON 1.0 as the installed
 * @aws-sdk/client-sqs does (`POST /`, `X-Amz-Target: AmazonSQS.<Op>`, `application/x-amz-json-1.0`,
 * errors as `{"__type":"com.amazonaws.sqs#<Name>"}` plus the `x-amzn-query-error` header):
 *
 * - SendMessage, SendMessageBatch: the real service's quotas (10 entries, 256 KiB per request and
 *   per message, body and message attributes counted together, at most 10 attributes), message
 *   attributes kept, MD5OfMessageBody / MD5OfMessageAttributes computed as SQS does.
 * - ReceiveMessage: MaxNumberOfMessages 1–10, WaitTimeSeconds 0–20 (long polling answers as soon as
 *   a message is visible; a client that hangs up, or `close()`, ends the wait), VisibilityTimeout
 *   per call or the queue default, a new receipt handle per receive, the requested message
 *   attributes and system attributes (ApproximateReceiveCount, ApproximateFirstReceiveTimestamp,
 *   SentTimestamp, SenderId).
 * - DeleteMessage(Batch): any receipt handle this queue handed out deletes its message, also one
 *   made stale by a later receive (as on real standard queues) and also again after the message
 *   is gone (SQS answers success then too); a handle it never issued is ReceiptHandleIsInvalid.
 * - ChangeMessageVisibility(Batch): only the newest handle of a message still in flight; 0 makes it
 *   visible at once. A message whose visibility expired is MessageNotInflight; a stale handle or one
 *   of a deleted message is ReceiptHandleIsInvalid ("The receipt handle has expired").
 * - Redelivery: a message received and not deleted is visible again after its visibility timeout,
 *   ApproximateReceiveCount one higher on the next receive. With `maxReceiveCount` (the redrive
 *   policy), a message already received that many times goes to `deadLetters()` instead of being
 *   received again, as SQS moves it to the dead-letter queue.
 *
 * Not modelled: FIFO queues, message system attributes on send (AWSTraceHeader), retention,
 * queue management. Point the SDK at it with AWS_ENDPOINT_URL_SQS and STAND_IN_AWS_ENV. `GET /_stats`
 * (not part of SQS) reports what arrived and the queue's state, for a process that runs it as a
 * child (`sqsStandInMain.ts`).
 */

/** SQS quotas the real service enforces. */
export const SQS_MAX_BATCH_ENTRIES = 10
export const SQS_MAX_BATCH_BYTES = 256 * 1024
export const SQS_MAX_MESSAGE_BYTES = 256 * 1024
export const SQS_MAX_MESSAGE_ATTRIBUTES = 10
export const SQS_MAX_RECEIVE_MESSAGES = 10
export const SQS_MAX_WAIT_SECONDS = 20
export const SQS_MAX_VISIBILITY_TIMEOUT_SECONDS = 43_200
export const SQS_MAX_DELAY_SECONDS = 900
/** SQS's default queue visibility timeout. */
export const SQS_DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 30

export const SQS_STATS_PATH = "/_stats"

/** Usage rows in one accepted body (throws when it is not a usage message). The one place the stand-in reads bodies. */
const usageRowsIn = (body: string): number => {
  const message = decodeQueueMessage(body)
  if (message._tag === "Poison") throw new Error(message.reason)
  return message.rows.length
}

export interface SqsStandInStats {
  /** Bodies accepted by SendMessage / SendMessageBatch. */
  readonly messages: number
  /** Usage rows in those bodies. */
  readonly rows: number
  /** Accepted bodies that are not a usage batch. */
  readonly undecodable: number
  readonly violations: ReadonlyArray<string>
  /** Messages not yet deleted nor dead-lettered, visible or in flight. */
  readonly inQueue: number
  readonly inFlight: number
  readonly deleted: number
  readonly deadLetters: number
}

export interface SqsStandInOptions {
  readonly queueName?: string
  /** 0 (default): any free port. */
  readonly port?: number
  /** The queue's VisibilityTimeout, for receives that name none (default 30). Fractions allowed, to keep tests short. */
  readonly visibilityTimeoutSeconds?: number
  /** Redrive policy: a message received this many times goes to `deadLetters()` instead of a further receive. None: never. */
  readonly maxReceiveCount?: number
}

/** A message attribute as the JSON protocol carries it (binary values in base64). */
export const SqsMessageAttributeValue = Schema.Struct({
  DataType: Schema.String,
  StringValue: Schema.optionalKey(Schema.String),
  BinaryValue: Schema.optionalKey(Schema.String),
  StringListValues: Schema.optionalKey(Schema.Array(Schema.String)),
  BinaryListValues: Schema.optionalKey(Schema.Array(Schema.String))
})
export type SqsMessageAttributeValue = typeof SqsMessageAttributeValue.Type
const MessageAttributeMap = Schema.Record(Schema.String, SqsMessageAttributeValue)
export type SqsMessageAttributeMap = typeof MessageAttributeMap.Type

/** A message that left the queue through the redrive policy. */
export interface SqsDeadLetter {
  readonly messageId: string
  readonly body: string
  readonly messageAttributes: SqsMessageAttributeMap
  readonly receiveCount: number
}

export interface SqsStandIn extends StandIn {
  readonly queueUrl: string
  /** Every body accepted by SendMessageBatch / SendMessage / `enqueue`, in arrival order (also after deletion). */
  readonly acceptedBodies: Array<string>
  /** Messages not yet deleted nor dead-lettered (visible, delayed or in flight). */
  readonly inQueue: () => number
  /** Messages a receive would return now. */
  readonly visible: () => number
  /** Messages received and still within their visibility timeout. */
  readonly inFlight: () => number
  /** Messages deleted so far (each message once, however many handles deleted it). */
  readonly deleted: () => number
  /** Messages moved out by the redrive policy (`maxReceiveCount`), oldest first. */
  readonly deadLetters: () => ReadonlyArray<SqsDeadLetter>
  /** Puts a message on the queue directly, as SendMessage would; returns its MessageId. */
  readonly enqueue: (body: string, messageAttributes?: SqsMessageAttributeMap) => string
  /** Ends every visibility timeout now (as if it had expired): in-flight messages become visible. Returns how many. */
  readonly expireVisibility: () => number
  /** Report the entries with these Ids as Failed (not stored) in the next SendMessageBatch requests, `times` times each. */
  readonly failEntries: (ids: ReadonlyArray<string>, times?: number) => void
  /** Quota and parameter violations seen (a correct client never causes any). */
  readonly violations: Array<string>
  /** Decodes the bodies accepted since the last call (not per message, to keep SendMessageBatch cheap). */
  readonly stats: () => SqsStandInStats
}

/** MD5 hex of a body, as MD5OfMessageBody / MD5OfBody. */
const md5Hex = (s: string) => createHash("md5").update(s, "utf8").digest("hex")

/**
 * MD5OfMessageAttributes as SQS computes it: attributes sorted by name; for each, the name, the
 * data type and the value, each preceded by its byte length (4 bytes, big-endian), with a
 * transport byte before the value (1 for String and Number, 2 for Binary). Undefined for none.
 */
export const md5OfMessageAttributes = (attributes: SqsMessageAttributeMap): string | undefined => {
  const names = Object.keys(attributes).sort()
  if (names.length === 0) return undefined
  const hash = createHash("md5")
  const lengthPrefixed = (bytes: Buffer) => {
    const length = Buffer.alloc(4)
    length.writeUInt32BE(bytes.length)
    hash.update(length).update(bytes)
  }
  for (const name of names) {
    const attribute = attributes[name]!
    lengthPrefixed(Buffer.from(name, "utf8"))
    lengthPrefixed(Buffer.from(attribute.DataType, "utf8"))
    const binary = attribute.DataType.startsWith("Binary")
    hash.update(Buffer.of(binary ? 2 : 1))
    lengthPrefixed(binary ? Buffer.from(attribute.BinaryValue ?? "", "base64") : Buffer.from(attribute.StringValue ?? "", "utf8"))
  }
  return hash.digest("hex")
}

/** Bytes SQS counts toward a message's size: the body plus each attribute's name, type and value. */
const messageBytes = (body: string, attributes: SqsMessageAttributeMap) =>
  Object.entries(attributes).reduce(
    (n, [name, a]) =>
      n + Buffer.byteLength(name) + Buffer.byteLength(a.DataType) +
      (a.BinaryValue === undefined ? Buffer.byteLength(a.StringValue ?? "") : Buffer.from(a.BinaryValue, "base64").length),
    Buffer.byteLength(body, "utf8")
  )

// Request bodies of the operations served (the SDK's member names; unknown members ignored).
const QueueUrl = Schema.String
const seconds = Schema.optionalKey(Schema.Number)
const SendMessageRequest = Schema.Struct({
  QueueUrl,
  MessageBody: Schema.String,
  DelaySeconds: seconds,
  MessageAttributes: Schema.optionalKey(MessageAttributeMap)
})
const SendMessageBatchRequest = Schema.Struct({
  QueueUrl,
  Entries: Schema.Array(Schema.Struct({
    Id: Schema.String,
    MessageBody: Schema.String,
    DelaySeconds: seconds,
    MessageAttributes: Schema.optionalKey(MessageAttributeMap)
  }))
})
const ReceiveMessageRequest = Schema.Struct({
  QueueUrl,
  AttributeNames: Schema.optionalKey(Schema.Array(Schema.String)),
  MessageSystemAttributeNames: Schema.optionalKey(Schema.Array(Schema.String)),
  MessageAttributeNames: Schema.optionalKey(Schema.Array(Schema.String)),
  MaxNumberOfMessages: Schema.optionalKey(Schema.Number),
  VisibilityTimeout: seconds,
  WaitTimeSeconds: seconds
})
const DeleteMessageRequest = Schema.Struct({ QueueUrl, ReceiptHandle: Schema.String })
const DeleteMessageBatchRequest = Schema.Struct({
  QueueUrl,
  Entries: Schema.Array(Schema.Struct({ Id: Schema.String, ReceiptHandle: Schema.String }))
})
const ChangeMessageVisibilityRequest = Schema.Struct({ QueueUrl, ReceiptHandle: Schema.String, VisibilityTimeout: Schema.Number })
const ChangeMessageVisibilityBatchRequest = Schema.Struct({
  QueueUrl,
  Entries: Schema.Array(Schema.Struct({ Id: Schema.String, ReceiptHandle: Schema.String, VisibilityTimeout: seconds }))
})

/** SQS errors: the name (`__type`), HTTP status and query-compatible code, as the SDK's model has them. */
const SQS_ERRORS = {
  QueueDoesNotExist: [400, "AWS.SimpleQueueService.NonExistentQueue"],
  ReceiptHandleIsInvalid: [404, "ReceiptHandleIsInvalid"],
  MessageNotInflight: [400, "AWS.SimpleQueueService.MessageNotInflight"],
  EmptyBatchRequest: [400, "AWS.SimpleQueueService.EmptyBatchRequest"],
  TooManyEntriesInBatchRequest: [400, "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"],
  BatchRequestTooLong: [400, "AWS.SimpleQueueService.BatchRequestTooLong"],
  BatchEntryIdsNotDistinct: [400, "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"],
  InvalidBatchEntryId: [400, "AWS.SimpleQueueService.InvalidBatchEntryId"],
  InvalidParameterValue: [400, "InvalidParameterValue"],
  UnsupportedOperation: [400, "AWS.SimpleQueueService.UnsupportedOperation"],
  InternalError: [500, "InternalError"]
} as const satisfies Record<string, readonly [number, string]>
type SqsErrorName = keyof typeof SQS_ERRORS

/** An SQS error answer; thrown by the operations, turned into the reply (or a batch's Failed entry). */
class SqsFault extends Error {
  readonly errorName: SqsErrorName
  /** False for the service's own faults (Failed entries with SenderFault false are worth resending). */
  readonly senderFault: boolean
  constructor(errorName: SqsErrorName, message: string, senderFault = true) {
    super(message)
    this.errorName = errorName
    this.senderFault = senderFault
  }
}

/** A request decoder whose failure is SQS's answer to a malformed request. */
const requestDecoder = <A>(decode: (input: unknown) => A) => (body: unknown): A => {
  try {
    return decode(body)
  } catch (error) {
    throw new SqsFault("InvalidParameterValue", error instanceof Error ? error.message : String(error))
  }
}
const decodeSendMessage = requestDecoder(Schema.decodeUnknownSync(SendMessageRequest))
const decodeSendMessageBatch = requestDecoder(Schema.decodeUnknownSync(SendMessageBatchRequest))
const decodeReceiveMessage = requestDecoder(Schema.decodeUnknownSync(ReceiveMessageRequest))
const decodeDeleteMessage = requestDecoder(Schema.decodeUnknownSync(DeleteMessageRequest))
const decodeDeleteMessageBatch = requestDecoder(Schema.decodeUnknownSync(DeleteMessageBatchRequest))
const decodeChangeMessageVisibility = requestDecoder(Schema.decodeUnknownSync(ChangeMessageVisibilityRequest))
const decodeChangeMessageVisibilityBatch = requestDecoder(Schema.decodeUnknownSync(ChangeMessageVisibilityBatchRequest))

interface StoredMessage {
  readonly messageId: string
  readonly body: string
  readonly md5OfBody: string
  readonly messageAttributes: SqsMessageAttributeMap
  readonly sentAt: number
  /** Epoch ms from which a receive may return it (delay, then each visibility timeout). */
  visibleAt: number
  receiveCount: number
  firstReceivedAt: number | undefined
  /** The receipt handle of the latest receive; visibility changes need it. */
  latestHandle: string | undefined
}

const SQS_JSON = "application/x-amz-json-1.0"
const SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp", "SentTimestamp", "SenderId"] as const
const STAND_IN_SENDER_ID = "AIDASTANDIN000000000"
const BATCH_ENTRY_ID = /^[A-Za-z0-9_-]{1,80}$/

const isWholeInRange = (n: number, min: number, max: number) => Number.isInteger(n) && n >= min && n <= max

export const startSqsStandIn = async (options: SqsStandInOptions = {}): Promise<SqsStandIn> => {
  const requests: Array<RecordedRequest> = []
  const acceptedBodies: Array<string> = []
  const violations: Array<string> = []
  /** Messages not deleted nor dead-lettered, by MessageId, in arrival order (the order receives return them). */
  const queue = new Map<string, StoredMessage>()
  /** Every receipt handle handed out → its message. */
  const handles = new Map<string, string>()
  const deadLetters: Array<SqsDeadLetter> = []
  const failing = new Map<string, number>()
  /** Long polls waiting for a message: woken by a send, a visibility change and close. */
  const waiters = new Set<() => void>()
  /** Requests being answered; close() lets them answer before the connections go. */
  const answering = new Set<Promise<void>>()
  const defaultVisibilityMs = (options.visibilityTimeoutSeconds ?? SQS_DEFAULT_VISIBILITY_TIMEOUT_SECONDS) * 1000
  let deleted = 0
  let closed = false
  let queueUrl = ""

  const wakeWaiters = () => {
    for (const wake of waiters) wake()
  }

  /** A violation is also the fault the client gets: a correct client never sees either. */
  const violation = (errorName: SqsErrorName, message: string) => {
    violations.push(message)
    return new SqsFault(errorName, message)
  }

  const checkAttributes = (attributes: SqsMessageAttributeMap) => {
    const names = Object.keys(attributes)
    if (names.length > SQS_MAX_MESSAGE_ATTRIBUTES) {
      throw violation("InvalidParameterValue", `Number of message attributes [${names.length}] exceeds the allowed maximum [${SQS_MAX_MESSAGE_ATTRIBUTES}].`)
    }
    for (const [name, a] of Object.entries(attributes)) {
      const binary = a.DataType.startsWith("Binary")
      const known = binary || a.DataType.startsWith("String") || a.DataType.startsWith("Number")
      if (!known || (binary ? a.BinaryValue === undefined : a.StringValue === undefined)) {
        throw violation("InvalidParameterValue", `Message attribute '${name}' of type '${a.DataType}' has no value of its type.`)
      }
    }
  }

  const checkMessage = (body: string, attributes: SqsMessageAttributeMap, delaySeconds: number | undefined) => {
    if (body.length === 0) throw violation("InvalidParameterValue", "The request must contain the parameter MessageBody.")
    checkAttributes(attributes)
    const bytes = messageBytes(body, attributes)
    if (bytes > SQS_MAX_MESSAGE_BYTES) {
      throw violation("InvalidParameterValue", `One or more parameters are invalid. Reason: Message must be shorter than ${SQS_MAX_MESSAGE_BYTES} bytes (got ${bytes}).`)
    }
    if (delaySeconds !== undefined && !isWholeInRange(delaySeconds, 0, SQS_MAX_DELAY_SECONDS)) {
      throw violation("InvalidParameterValue", `Value ${delaySeconds} for parameter DelaySeconds is invalid. Reason: Must be >= 0 and <= ${SQS_MAX_DELAY_SECONDS}, if provided.`)
    }
  }

  const accept = (body: string, messageAttributes: SqsMessageAttributeMap = {}, delaySeconds = 0): StoredMessage => {
    const now = Date.now()
    const message: StoredMessage = {
      messageId: randomUUID(),
      body,
      md5OfBody: md5Hex(body),
      messageAttributes,
      sentAt: now,
      visibleAt: now + delaySeconds * 1000,
      receiveCount: 0,
      firstReceivedAt: undefined,
      latestHandle: undefined
    }
    queue.set(message.messageId, message)
    acceptedBodies.push(body)
    wakeWaiters()
    return message
  }

  const sendResult = (m: StoredMessage) => {
    const md5OfAttributes = md5OfMessageAttributes(m.messageAttributes)
    return { MessageId: m.messageId, MD5OfMessageBody: m.md5OfBody, ...(md5OfAttributes === undefined ? {} : { MD5OfMessageAttributes: md5OfAttributes }) }
  }

  /** Takes up to `max` visible messages, in arrival order, making each invisible for `visibilityMs` under a new handle. */
  const takeVisible = (max: number, visibilityMs: number): Array<StoredMessage> => {
    const now = Date.now()
    const taken: Array<StoredMessage> = []
    for (const m of queue.values()) {
      if (taken.length >= max) break
      if (m.visibleAt > now) continue
      if (options.maxReceiveCount !== undefined && m.receiveCount >= options.maxReceiveCount) {
        queue.delete(m.messageId)
        deadLetters.push({ messageId: m.messageId, body: m.body, messageAttributes: m.messageAttributes, receiveCount: m.receiveCount })
        continue
      }
      // Receipt handles are opaque and long on real SQS; random base64 here.
      const handle = randomBytes(48).toString("base64url")
      handles.set(handle, m.messageId)
      m.latestHandle = handle
      m.receiveCount++
      m.firstReceivedAt ??= now
      m.visibleAt = now + visibilityMs
      taken.push(m)
    }
    return taken
  }

  /** The earliest time a message now hidden becomes visible, if any. */
  const nextVisibleAt = () => {
    const now = Date.now()
    let next = Number.POSITIVE_INFINITY
    for (const m of queue.values()) if (m.visibleAt > now && m.visibleAt < next) next = m.visibleAt
    return next
  }

  /** Resolves at `until`, on a send or visibility change, on close, or when the client hangs up. */
  const waitForChange = (until: number, res: ServerResponse) =>
    new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer)
        waiters.delete(wake)
        res.off("close", wake)
        resolve()
      }
      const timer = setTimeout(wake, Math.max(0, until - Date.now()))
      waiters.add(wake)
      res.once("close", wake)
    })

  const wantedNames = (requested: ReadonlyArray<string>, available: ReadonlyArray<string>) =>
    requested.some((n) => n === "All" || n === ".*")
      ? available
      : available.filter((name) => requested.some((n) => n === name || (n.endsWith(".*") && name.startsWith(n.slice(0, -1)))))

  const received = (m: StoredMessage, systemNames: ReadonlyArray<string>, attributeNames: ReadonlyArray<string>) => {
    const system: Record<(typeof SYSTEM_ATTRIBUTES)[number], string> = {
      ApproximateReceiveCount: String(m.receiveCount),
      ApproximateFirstReceiveTimestamp: String(m.firstReceivedAt ?? m.sentAt),
      SentTimestamp: String(m.sentAt),
      SenderId: STAND_IN_SENDER_ID
    }
    const attributes = Object.fromEntries(wantedNames(systemNames, SYSTEM_ATTRIBUTES).map((n) => [n, system[n as keyof typeof system]]))
    const messageAttributes = Object.fromEntries(
      wantedNames(attributeNames, Object.keys(m.messageAttributes)).map((n) => [n, m.messageAttributes[n]!])
    )
    const md5OfAttributes = md5OfMessageAttributes(messageAttributes)
    return {
      MessageId: m.messageId,
      ReceiptHandle: m.latestHandle,
      MD5OfBody: m.md5OfBody,
      Body: m.body,
      ...(Object.keys(attributes).length === 0 ? {} : { Attributes: attributes }),
      ...(md5OfAttributes === undefined ? {} : { MD5OfMessageAttributes: md5OfAttributes, MessageAttributes: messageAttributes })
    }
  }

  const deleteByHandle = (handle: string) => {
    const messageId = handles.get(handle)
    if (messageId === undefined) throw new SqsFault("ReceiptHandleIsInvalid", `The input receipt handle "${handle}" is not a valid receipt handle.`)
    if (queue.delete(messageId)) deleted++
  }

  const changeVisibility = (handle: string, visibilityTimeout: number) => {
    const messageId = handles.get(handle)
    if (messageId === undefined) throw new SqsFault("ReceiptHandleIsInvalid", `The input receipt handle "${handle}" is not a valid receipt handle.`)
    if (!isWholeInRange(visibilityTimeout, 0, SQS_MAX_VISIBILITY_TIMEOUT_SECONDS)) {
      throw violation("InvalidParameterValue", `Value ${visibilityTimeout} for parameter VisibilityTimeout is invalid. Reason: Must be >= 0 and <= ${SQS_MAX_VISIBILITY_TIMEOUT_SECONDS}.`)
    }
    const m = queue.get(messageId)
    if (m === undefined || m.latestHandle !== handle) throw new SqsFault("ReceiptHandleIsInvalid", "The receipt handle has expired.")
    const now = Date.now()
    if (m.visibleAt <= now) throw new SqsFault("MessageNotInflight", "Message is not in flight.")
    m.visibleAt = now + visibilityTimeout * 1000
    if (visibilityTimeout === 0) wakeWaiters()
  }

  /** A batch operation: request-level checks, then each entry on its own; an entry's fault is a Failed entry. */
  const batch = <E extends { readonly Id: string }>(entries: ReadonlyArray<E>, each: (entry: E) => Record<string, unknown> | undefined) => {
    if (entries.length === 0) throw violation("EmptyBatchRequest", "There should be at least one entry in the request.")
    if (entries.length > SQS_MAX_BATCH_ENTRIES) {
      throw violation("TooManyEntriesInBatchRequest", `Maximum number of entries per request are ${SQS_MAX_BATCH_ENTRIES}. You have sent ${entries.length}.`)
    }
    const badId = entries.find((e) => !BATCH_ENTRY_ID.test(e.Id))
    if (badId !== undefined) throw violation("InvalidBatchEntryId", `A batch entry id can only contain alphanumeric characters, hyphens and underscores (got "${badId.Id}").`)
    if (new Set(entries.map((e) => e.Id)).size !== entries.length) throw violation("BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id.")
    const Successful: Array<unknown> = []
    const Failed: Array<unknown> = []
    for (const entry of entries) {
      try {
        Successful.push({ Id: entry.Id, ...each(entry) })
      } catch (error) {
        if (!(error instanceof SqsFault)) throw error
        Failed.push({ Id: entry.Id, SenderFault: error.senderFault, Code: error.errorName, Message: error.message })
      }
    }
    return { Successful, Failed }
  }

  const receiveMessage = async (body: unknown, res: ServerResponse) => {
    const request = decodeReceiveMessage(body)
    const max = request.MaxNumberOfMessages ?? 1
    if (!isWholeInRange(max, 1, SQS_MAX_RECEIVE_MESSAGES)) {
      throw violation("InvalidParameterValue", `Value ${max} for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and ${SQS_MAX_RECEIVE_MESSAGES}, if provided.`)
    }
    const waitSeconds = request.WaitTimeSeconds ?? 0
    if (!isWholeInRange(waitSeconds, 0, SQS_MAX_WAIT_SECONDS)) {
      throw violation("InvalidParameterValue", `Value ${waitSeconds} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= ${SQS_MAX_WAIT_SECONDS}, if provided.`)
    }
    if (request.VisibilityTimeout !== undefined && !isWholeInRange(request.VisibilityTimeout, 0, SQS_MAX_VISIBILITY_TIMEOUT_SECONDS)) {
      throw violation("InvalidParameterValue", `Value ${request.VisibilityTimeout} for parameter VisibilityTimeout is invalid. Reason: Must be >= 0 and <= ${SQS_MAX_VISIBILITY_TIMEOUT_SECONDS}.`)
    }
    const visibilityMs = request.VisibilityTimeout === undefined ? defaultVisibilityMs : request.VisibilityTimeout * 1000
    const deadline = Date.now() + waitSeconds * 1000
    let taken = takeVisible(max, visibilityMs)
    // A client that hung up takes nothing: what it would have received stays visible.
    while (taken.length === 0 && !closed && !res.destroyed && Date.now() < deadline) {
      await waitForChange(Math.min(deadline, nextVisibleAt()), res)
      if (closed || res.destroyed) break
      taken = takeVisible(max, visibilityMs)
    }
    const systemNames = [...(request.AttributeNames ?? []), ...(request.MessageSystemAttributeNames ?? [])]
    const attributeNames = request.MessageAttributeNames ?? []
    return taken.length === 0 ? {} : { Messages: taken.map((m) => received(m, systemNames, attributeNames)) }
  }

  const operations: Record<string, (body: unknown, res: ServerResponse) => unknown> = {
    SendMessage: (body) => {
      const request = decodeSendMessage(body)
      const attributes = request.MessageAttributes ?? {}
      checkMessage(request.MessageBody, attributes, request.DelaySeconds)
      return sendResult(accept(request.MessageBody, attributes, request.DelaySeconds))
    },
    SendMessageBatch: (body) => {
      const request = decodeSendMessageBatch(body)
      const bytes = request.Entries.reduce((n, e) => n + messageBytes(e.MessageBody, e.MessageAttributes ?? {}), 0)
      if (bytes > SQS_MAX_BATCH_BYTES) {
        throw violation("BatchRequestTooLong", `Batch requests cannot be longer than ${SQS_MAX_BATCH_BYTES} bytes. You have sent ${bytes} bytes.`)
      }
      return batch(request.Entries, (e) => {
        const left = failing.get(e.Id) ?? 0
        if (left > 0) {
          failing.set(e.Id, left - 1)
          throw new SqsFault("InternalError", "injected failure (test)", false)
        }
        const attributes = e.MessageAttributes ?? {}
        checkMessage(e.MessageBody, attributes, e.DelaySeconds)
        return sendResult(accept(e.MessageBody, attributes, e.DelaySeconds))
      })
    },
    ReceiveMessage: receiveMessage,
    DeleteMessage: (body) => {
      deleteByHandle(decodeDeleteMessage(body).ReceiptHandle)
      return {}
    },
    DeleteMessageBatch: (body) => batch(decodeDeleteMessageBatch(body).Entries, (e) => void deleteByHandle(e.ReceiptHandle)),
    ChangeMessageVisibility: (body) => {
      const request = decodeChangeMessageVisibility(body)
      changeVisibility(request.ReceiptHandle, request.VisibilityTimeout)
      return {}
    },
    ChangeMessageVisibilityBatch: (body) =>
      batch(decodeChangeMessageVisibilityBatch(body).Entries, (e) => void changeVisibility(e.ReceiptHandle, e.VisibilityTimeout ?? 0))
  }

  let decoded = 0
  let rows = 0
  let undecodable = 0
  const inFlight = () => {
    const now = Date.now()
    let n = 0
    for (const m of queue.values()) if (m.latestHandle !== undefined && m.visibleAt > now) n++
    return n
  }
  const stats = (): SqsStandInStats => {
    for (; decoded < acceptedBodies.length; decoded++) {
      try {
        rows += usageRowsIn(acceptedBodies[decoded]!)
      } catch {
        undecodable++
      }
    }
    return {
      messages: acceptedBodies.length,
      rows,
      undecodable,
      violations: [...violations],
      inQueue: queue.size,
      inFlight: inFlight(),
      deleted,
      deadLetters: deadLetters.length
    }
  }

  const reply = (res: ServerResponse, fault: SqsFault) => {
    const [status, queryCode] = SQS_ERRORS[fault.errorName]
    replyJson(res, SQS_JSON, status, { __type: `com.amazonaws.sqs#${fault.errorName}`, message: fault.message }, {
      "x-amzn-query-error": `${queryCode};${fault.senderFault ? "Sender" : "Receiver"}`
    })
  }

  const handle = async (operation: string, body: Record<string, unknown>, res: ServerResponse) => {
    try {
      const run = operations[operation]
      if (run === undefined) throw new SqsFault("UnsupportedOperation", `${operation} is not supported by the SQS stand-in.`)
      const requestedUrl = body["QueueUrl"]
      if (requestedUrl !== queueUrl) throw new SqsFault("QueueDoesNotExist", `The specified queue does not exist: ${String(requestedUrl)}`)
      const result = await run(body, res)
      if (!res.destroyed) replyJson(res, SQS_JSON, 200, result)
    } catch (error) {
      if (!(error instanceof SqsFault)) throw error
      reply(res, error)
    }
  }

  const tracked = (operation: string, body: Record<string, unknown>, res: ServerResponse) => {
    const answer = handle(operation, body, res)
    answering.add(answer)
    return answer.finally(() => answering.delete(answer))
  }
  const protocol = jsonProtocolHandler(SQS_JSON, "AmazonSQS", requests, tracked)
  const server = createServer((req, res) => {
    if (req.method === "GET" && req.url === SQS_STATS_PATH) return replyJson(res, "application/json", 200, stats())
    protocol(req, res)
  })
  const url = await listenLoopback(server, options.port ?? 0)
  queueUrl = `${url}/000000000000/${options.queueName ?? "usage-logs"}`
  const closeListener = closeServer(server)
  return {
    url,
    queueUrl,
    requests,
    acceptedBodies,
    violations,
    stats,
    inQueue: () => queue.size,
    visible: () => {
      const now = Date.now()
      let n = 0
      for (const m of queue.values()) if (m.visibleAt <= now) n++
      return n
    },
    inFlight,
    deleted: () => deleted,
    deadLetters: () => [...deadLetters],
    enqueue: (body, messageAttributes = {}) => accept(body, messageAttributes).messageId,
    expireVisibility: () => {
      const now = Date.now()
      let n = 0
      for (const m of queue.values()) {
        if (m.latestHandle !== undefined && m.visibleAt > now) {
          m.visibleAt = now
          n++
        }
      }
      wakeWaiters()
      return n
    },
    failEntries: (ids, times = 1) => {
      for (const id of ids) failing.set(id, times)
    },
    close: async () => {
      // Long polls answer (empty) before the connections go, so no client waits out its poll.
      closed = true
      wakeWaiters()
      await Promise.allSettled(answering)
      await closeListener()
    }
  }
}
