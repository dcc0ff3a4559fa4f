import { Schema } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { UsageBatchJson, type UsageRow } from "../src/domain/usage.ts"
import { decodeUsageMessage } from "../src/domain/usage.ts"
import { compressUsageMessages, packUsageBatches } from "../src/layers/UsageWriterSqs.ts"

const decode = Schema.decodeUnknownSync(UsageBatchJson)
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

describe("packUsageMessages", () => {
  it("packs every row exactly once, in order, within the size limit", () => {
    fc.assert(fc.property(fc.array(row, { maxLength: 60 }), fc.integer({ min: 2_000, max: 20_000 }), (rows, maxBytes) => {
      const bodies = packUsageBatches(rows, maxBytes).map((b) => b.json)
      const back = bodies.flatMap((b) => decode(b).rows)
      expect(back).toEqual(rows)
      for (const b of bodies) {
        // A body only exceeds the limit when it holds a single row that is larger on its own.
        if (Buffer.byteLength(b) > maxBytes) expect(decode(b).rows).toHaveLength(1)
      }
      expect(bodies.length === 0).toBe(rows.length === 0)
    }), { numRuns: 60 })
  })

  it("compresses batches losslessly within the limit", async () => {
    await fc.assert(fc.asyncProperty(fc.array(row, { maxLength: 300 }), fc.integer({ min: 600, max: 20_000 }), async (rows, maxBytes) => {
      const bodies = await compressUsageMessages(rows, maxBytes)
      expect(bodies.flatMap(decodeUsageMessage)).toEqual(rows)
      for (const b of bodies) {
        expect(b.startsWith("H")).toBe(true)
        if (b.length > maxBytes) expect(decodeUsageMessage(b)).toHaveLength(1)
      }
    }), { numRuns: 40 })
  })

  it("decodes plain JSON bodies too", () => {
    fc.assert(fc.property(fc.array(row, { maxLength: 20 }), (rows) => {
      expect(decodeUsageMessage(JSON.stringify({ rows }))).toEqual(rows)
    }))
  })
})
