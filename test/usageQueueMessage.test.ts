import fc from "fast-check"
import { Schema } from "effect"
import { describe, expect, it } from "vitest"
import type { UsageRow } from "../src/domain/usage.ts"
import { rowsOfChunk, type UsageFacts } from "../src/domain/usageChunk.ts"
import {
  decodeQueueMessage, encodeUsageLogMessages, encodeUsageLogMessagesOfChunks, USAGE_LOG_TYPE, USAGE_LOG_VERSION, UsageLogMessage
} from "../src/domain/usageQueueMessage.ts"
import { chunkOf, sameFactsArb, usageFactsArb } from "./support/usageFacts.ts"

/** JSON has no -0: a row's price of -0 arrives as 0 (no price is ever negative). */
const jsonFacts = usageFactsArb().map((f): UsageFacts => (Object.is(f.price, -0) ? { ...f, price: 0 } : f))
const chunksArb = fc.array(fc.array(jsonFacts, { minLength: 1, maxLength: 40 }), { minLength: 1, maxLength: 5 })
  .map((groups) => groups.map((g, i) => chunkOf(g, i * 4_096)!))
/** Chunks in which some fields hold one value throughout (one client's requests), as the encoders write such columns once. */
const sameChunksArb = fc.array(sameFactsArb(), { minLength: 1, maxLength: 4 })
  .map((groups) => groups.map((g, i) => chunkOf(g.map((f) => (Object.is(f.price, -0) ? { ...f, price: 0 } : f)), i * 4_096)!))
const rowsArb = fc.oneof(chunksArb, sameChunksArb).map((chunks) => chunks.flatMap(rowsOfChunk))

const rowsOf = (bodies: ReadonlyArray<string>): ReadonlyArray<UsageRow> =>
  bodies.flatMap((body) => {
    const message = decodeQueueMessage(body)
    if (message._tag === "Poison") throw new Error(`poison: ${message.reason}`)
    return message.rows
  })

/** The characters SQS accepts in a message body. */
const SQS_BODY = /^[\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]*$/u

const row = (over: Partial<UsageRow> = {}): UsageRow => ({
  id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", request_id: "9f3a61c2-1", api_key_id: null, service: "LPO", protocol: "udp",
  endpoint: "price", asset: "BTC", quote: "USD", source: "consensus", price: 97_000.5, status_code: 200, error_code: null,
  latency_us: 17, client_ip: "10.1.2.3", node: "node-a", region: "us-east-1", bytes_out: 321, created_at: 1_795_000_000_000, ...over
})
const goodBody = (rows: ReadonlyArray<UsageRow> = [row(), row({ request_id: "9f3a61c2-2", latency_us: 18 })]) => encodeUsageLogMessages(rows, 1 << 20)[0]!
const edited = (edit: (message: Record<string, unknown> & { columns: Record<string, unknown> }) => void): string => {
  const message = JSON.parse(goodBody())
  edit(message)
  return JSON.stringify(message)
}

describe("usage_log queue messages", () => {
  it("round trip: any rows come back as they were, in order, in bodies within the limit that SQS accepts", () => {
    fc.assert(fc.property(rowsArb, fc.integer({ min: 2_000, max: 40_000 }), (rows, maxBytes) => {
      const bodies = encodeUsageLogMessages(rows, maxBytes)
      expect(rowsOf(bodies)).toEqual(rows)
      for (const body of bodies) {
        expect(body).toMatch(SQS_BODY)
        if (Buffer.byteLength(body) > maxBytes) expect(rowsOf([body])).toHaveLength(1)
      }
    }), { numRuns: 60 })
  })

  it("the chunk encoder writes exactly what the row encoder writes for the chunks' rows", () => {
    fc.assert(fc.property(fc.oneof(chunksArb, sameChunksArb), fc.integer({ min: 2_000, max: 40_000 }), (chunks, maxBytes) => {
      expect(encodeUsageLogMessagesOfChunks(chunks, maxBytes)).toEqual(encodeUsageLogMessages(chunks.flatMap(rowsOfChunk), maxBytes))
    }), { numRuns: 100 })
  })

  it("the encoders write what the Schema encodes, and the Schema decodes it to the rows", () => {
    fc.assert(fc.property(rowsArb, (rows) => {
      const [body, ...rest] = encodeUsageLogMessages(rows, 1 << 30)
      expect(rest).toEqual([])
      const message = { type: USAGE_LOG_TYPE, v: USAGE_LOG_VERSION, rows: rows as unknown as UsageLogMessage["rows"] } as const
      expect(JSON.parse(body!)).toEqual(JSON.parse(JSON.stringify(Schema.encodeSync(UsageLogMessage)(message))))
      expect(Schema.decodeUnknownSync(UsageLogMessage)(JSON.parse(body!)).rows).toEqual(rows)
    }), { numRuns: 40 })
  })

  it("writes a column that holds one value in the whole message once, the others as arrays of count values", () => {
    const message = JSON.parse(goodBody())
    expect(message.count).toBe(2)
    expect(message.columns.node).toBe("node-a")
    expect(message.columns.api_key_id).toBeNull()
    expect(message.columns.request_id).toEqual(["9f3a61c2-1", "9f3a61c2-2"])
    expect(message.columns.latency_us).toEqual([17, 18])
    expect(Object.keys(message.columns)).toHaveLength(18)
  })

  it("splits a batch too large for one body into bodies within the limit, rows in order", () => {
    const rows = Array.from({ length: 3_000 }, (_, i) => row({ request_id: `9f3a61c2-${i.toString(36)}`, latency_us: i }))
    const bodies = encodeUsageLogMessages(rows, 16 * 1024)
    expect(bodies.length).toBeGreaterThan(1)
    for (const body of bodies) expect(Buffer.byteLength(body)).toBeLessThanOrEqual(16 * 1024)
    expect(rowsOf(bodies)).toEqual(rows)
    expect(encodeUsageLogMessages([], 16 * 1024)).toEqual([])
  })

  it("sends a single row larger than the limit alone", () => {
    const big = row({ endpoint: "x".repeat(5_000) })
    const bodies = encodeUsageLogMessages([row(), big, row()], 4_000)
    expect(bodies.map((b) => rowsOf([b]).length)).toEqual([1, 1, 1])
    expect(rowsOf(bodies)[1]).toEqual(big)
  })

  it("escapes U+FFFE and U+FFFF, which SQS refuses, and gets them back", () => {
    const odd = row({ endpoint: "a\uFFFEb\uFFFFc", client_ip: "\u0000\uD800" })
    const [body] = encodeUsageLogMessages([odd], 1 << 20)
    expect(body).toMatch(SQS_BODY)
    expect(rowsOf([body!])).toEqual([odd])
  })

  describe("poison messages: reported with a one-line reason, never thrown", () => {
    const poisons: ReadonlyArray<readonly [string, string, RegExp]> = [
      ["not JSON", "{\"type\":\"usage_log\",", /not JSON/],
      ["a JSON array", "[1,2]", /not a JSON object/],
      ["a JSON string", "\"usage_log\"", /not a JSON object/],
      ["an unknown type", edited((m) => void (m.type = "usage_log_v2")), /unknown message type "usage_log_v2"/],
      ["no type", edited((m) => void delete m.type), /unknown message type/],
      ["an unknown version", edited((m) => void (m.v = 2)), /unknown usage_log version 2/],
      ["the version as a string", edited((m) => void (m.v = "1")), /unknown usage_log version "1"/],
      ["zero rows", edited((m) => void (m.count = 0)), /holds no rows/],
      ["zero rows, columns empty", JSON.stringify({ type: "usage_log", v: 1, count: 0, columns: {} }), /holds no rows/],
      ["a negative count", edited((m) => void (m.count = -1)), /does not decode/],
      ["a column shorter than count", edited((m) => void (m.count = 3)), /request_id holds 2 values, count is 3/],
      ["a value of the wrong type", edited((m) => void (m.columns.latency_us = [17, "18"])), /does not decode.*latency_us/],
      ["a fractional integer", edited((m) => void (m.columns.status_code = 200.5)), /does not decode.*status_code/],
      ["an unknown service", edited((m) => void (m.columns.service = "FTP")), /does not decode.*service/],
      ["a missing column", edited((m) => void delete m.columns.region), /does not decode.*region/],
      ["null in a column that has no nulls", edited((m) => void (m.columns.id = [null, "x"])), /does not decode.*id/]
    ]
    for (const [what, body, reason] of poisons) {
      it(what, () => {
        const message = decodeQueueMessage(body)
        expect(message._tag).toBe("Poison")
        if (message._tag !== "Poison") return
        expect(message.reason).toMatch(reason)
        expect(message.reason).not.toMatch(/\n/)
        expect(message.reason).not.toMatch(/Cause\(|SchemaError\(/)
      })
    }

    it("the unedited message decodes (the edits above are what makes them poison)", () => {
      expect(decodeQueueMessage(goodBody())).toEqual({ _tag: "UsageLog", rows: [row(), row({ request_id: "9f3a61c2-2", latency_us: 18 })] })
    })
  })
})
