import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { gzipSync, zstdCompressSync, zstdDecompressSync } from "node:zlib"
import type { UsageRow } from "../src/domain/usage.ts"
import { decodeUsageMessage, ZSTD_BASE64_MAGIC } from "../src/domain/usageMessage.ts"
import { isUsageChunkBytes, rowsOfChunk, type UsageFacts } from "../src/domain/usageChunk.ts"
import { compressUsageChunks, compressUsageMessages } from "../src/layers/UsageWriterSqs.ts"
import { chunkOf, usageFactsArb } from "./support/usageFacts.ts"

const text = fc.string({ maxLength: 40 })
const row: fc.Arbitrary<UsageRow> = fc.record({
  id: fc.uuid(), request_id: text, api_key_id: fc.option(fc.uuid(), { nil: null }),
  service: fc.constantFrom("LPO", "LRS", "WEBHOOK", "RECEIPT", "ADMIN"), protocol: fc.constantFrom("http", "udp", "ws"),
  endpoint: text, asset: fc.option(text, { nil: null }), quote: fc.option(text, { nil: null }), source: fc.option(text, { nil: null }),
  // Prices are positive and finite (JSON has no -0, NaN or Infinity; no price is ever one).
  price: fc.option(fc.double({ min: Number.MIN_VALUE, max: 1e15, noNaN: true }), { nil: null }), status_code: fc.integer({ min: 100, max: 599 }),
  error_code: fc.option(text, { nil: null }), latency_us: fc.nat(), client_ip: text, node: text, region: text,
  bytes_out: fc.nat(), created_at: fc.integer({ min: 0, max: 4_102_444_800_000 })
})

describe("usage queue messages", () => {
  it("compresses batches losslessly within the limit", () => {
    fc.assert(fc.property(fc.array(row, { maxLength: 300 }), fc.integer({ min: 600, max: 20_000 }), (rows, maxBytes) => {
      const bodies = compressUsageMessages(rows, maxBytes)
      expect(bodies.flatMap(decodeUsageMessage)).toEqual(rows)
      for (const b of bodies) {
        expect(b.startsWith(ZSTD_BASE64_MAGIC)).toBe(true)
        if (b.length > maxBytes) expect(decodeUsageMessage(b)).toHaveLength(1)
      }
    }), { numRuns: 40 })
  })

  it("compresses the serving thread's chunks losslessly within the limit, splitting what is too large", () => {
    const facts = usageFactsArb().map((f) => ({ ...f, price: f.price === undefined ? undefined : Math.abs(f.price) || 1 }))
    fc.assert(fc.property(fc.array(fc.array(facts, { minLength: 1, maxLength: 120 }), { maxLength: 8 }), fc.integer({ min: 600, max: 20_000 }), (groups, maxBytes) => {
      const chunks = groups.map((g, i) => chunkOf(g, i * 4_096)!)
      const bodies = compressUsageChunks(chunks, maxBytes)
      expect(bodies.flatMap(decodeUsageMessage)).toEqual(chunks.flatMap(rowsOfChunk))
      for (const b of bodies) if (b.length > maxBytes) expect(decodeUsageMessage(b)).toHaveLength(1)
    }), { numRuns: 40 })
  })

  it("sends realistic serving-thread chunks as chunk bytes, two 256-row chunks to a message, well within an entry", () => {
    // Varied prices, latencies and addresses compress worst among real rows; a fixed LCG keeps it reproducible.
    let seed = 42
    const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31
    const realistic = (i: number): UsageFacts => ({
      requestSeq: i, apiKeyId: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", service: "LPO", protocol: i % 2 === 0 ? "http" : "udp",
      endpoint: i % 2 === 0 ? "/price" : "price", asset: "BTC", quote: "USD", source: "coinbase", price: 97_000 + next() * 1_000, code: "OK",
      latencyUs: Math.floor(next() * 900), clientIp: `10.${Math.floor(next() * 255)}.${Math.floor(next() * 255)}.${Math.floor(next() * 255)}`,
      bytesOut: 600 + Math.floor(next() * 60), createdAt: 1_795_000_000_000 + i
    })
    const chunks = [0, 256, 512, 768].map((at) => chunkOf(Array.from({ length: 256 }, (_, i) => realistic(at + i)), at * 10)!)
    const bodies = compressUsageChunks(chunks, 24 * 1024)
    expect(bodies.map(decodeUsageMessage).map((b) => b.length)).toEqual([512, 512])
    for (const b of bodies) {
      expect(isUsageChunkBytes(zstdDecompressSync(Buffer.from(b, "base64")))).toBe(true)
      expect(b.length).toBeLessThan(16 * 1024)
    }
  })

  it("sends columnar batches: the column names once per message, not once per row", () => {
    fc.assert(fc.property(fc.array(row, { minLength: 2, maxLength: 50 }), (rows) => {
      for (const b of compressUsageMessages(rows, 200_000)) {
        const json = zstdDecompressSync(Buffer.from(b, "base64")).toString("utf8")
        expect(json.startsWith('{"columns":[')).toBe(true)
        expect(json.split('"api_key_id"')).toHaveLength(2)
      }
    }), { numRuns: 20 })
  })

  it("still decodes the zstd object batches of the previous version", () => {
    fc.assert(fc.property(fc.array(row, { maxLength: 20 }), (rows) => {
      expect(decodeUsageMessage(zstdCompressSync(JSON.stringify({ rows })).toString("base64"))).toEqual(rows)
    }))
  })

  it("decodes plain JSON bodies too", () => {
    fc.assert(fc.property(fc.array(row, { maxLength: 20 }), (rows) => {
      expect(decodeUsageMessage(JSON.stringify({ rows }))).toEqual(rows)
    }))
  })

  it("still decodes the gzip bodies earlier versions sent (messages may outlive a deploy)", () => {
    fc.assert(fc.property(fc.array(row, { maxLength: 20 }), (rows) => {
      expect(decodeUsageMessage(gzipSync(JSON.stringify({ rows })).toString("base64"))).toEqual(rows)
    }))
  })
})
