import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { rowsOfChunk, type UsageFacts } from "../src/domain/usageChunk.ts"
import { decodeQueueMessage, encodeUsageLogMessagesOfChunks } from "../src/domain/usageQueueMessage.ts"
import {
  MESSAGE_MAX_BYTES, REQUEST_MAX_BYTES, requestsOf, TYPE_ATTRIBUTE, TYPE_ATTRIBUTE_BYTES, USAGE_LOG_MAX_BODY_BYTES
} from "../src/layers/usage/UsageWriterSqs.ts"
import { chunkOf } from "./support/usageFacts.ts"

/** What SQS counts of a SendMessageBatch entry: its body and its attributes' names, data types and values. */
const entryBytes = (body: string) => {
  const [name, value] = Object.entries(TYPE_ATTRIBUTE)[0]!
  return Buffer.byteLength(body) + name.length + value.DataType.length + value.StringValue.length
}

describe("usage messages in SendMessageBatch requests", () => {
  it("counts the type attribute as SQS does", () => {
    expect(TYPE_ATTRIBUTE).toEqual({ type: { DataType: "String", StringValue: "usage_log" } })
    expect(entryBytes("")).toBe(TYPE_ATTRIBUTE_BYTES)
    expect(USAGE_LOG_MAX_BODY_BYTES + TYPE_ATTRIBUTE_BYTES).toBe(MESSAGE_MAX_BYTES)
  })

  it("groups bodies in order into requests of at most 10 entries and REQUEST_MAX_BYTES, attributes included", () => {
    const body = fc.integer({ min: 1, max: USAGE_LOG_MAX_BODY_BYTES }).map((n) => "é".repeat(Math.floor(n / 2)) + "x".repeat(n % 2))
    fc.assert(fc.property(fc.array(body, { maxLength: 40 }), (bodies) => {
      const requests = requestsOf(bodies)
      expect(requests.flat()).toEqual(bodies)
      for (const request of requests) {
        expect(request.length).toBeGreaterThan(0)
        expect(request.length).toBeLessThanOrEqual(10)
        expect(request.reduce((n, b) => n + entryBytes(b), 0)).toBeLessThanOrEqual(REQUEST_MAX_BYTES)
      }
    }), { numRuns: 50 })
  })

  it("fills requests: small bodies go ten to a request", () => {
    expect(requestsOf(Array.from({ length: 25 }, (_, i) => `body ${i}`)).map((r) => r.length)).toEqual([10, 10, 5])
  })

  it("sends a body over the request limit alone (a single row too large for a message)", () => {
    const huge = "x".repeat(REQUEST_MAX_BYTES)
    expect(requestsOf(["a", huge, "b"])).toEqual([["a"], [huge], ["b"]])
  })

  it("sends a batch of realistic serving-thread chunks (1,024 rows) as one message within the limit", () => {
    // Varied prices, latencies and addresses make the longest real rows; a fixed LCG keeps it reproducible.
    let seed = 42
    const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31
    const realistic = (i: number): UsageFacts => ({
      requestSeq: 1_000_000 + i, apiKeyId: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", service: "LPO", protocol: i % 2 === 0 ? "http" : "udp",
      endpoint: i % 2 === 0 ? "/price" : "price", asset: "BTC", quote: "USD", source: "coinbase", price: 97_000 + next() * 1_000, code: "OK",
      latencyUs: Math.floor(next() * 900), clientIp: `10.${Math.floor(next() * 255)}.${Math.floor(next() * 255)}.${Math.floor(next() * 255)}`,
      bytesOut: 600 + Math.floor(next() * 60), createdAt: 1_795_000_000_000 + i
    })
    const chunks = [0, 256, 512, 768].map((at) => chunkOf(Array.from({ length: 256 }, (_, i) => realistic(at + i)), at * 10)!)
    const bodies = encodeUsageLogMessagesOfChunks(chunks, USAGE_LOG_MAX_BODY_BYTES)
    expect(bodies).toHaveLength(1)
    expect(requestsOf(bodies)).toHaveLength(1)
    expect(entryBytes(bodies[0]!)).toBeLessThan(MESSAGE_MAX_BYTES / 1.5)
    expect(decodeQueueMessage(bodies[0]!)).toEqual({ _tag: "UsageLog", rows: chunks.flatMap(rowsOfChunk) })
  })
})
