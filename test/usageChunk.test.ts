import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  checkChunk,
  makeUsageChunkBuilder,
  rowsOfChunk,
  type UsageChunk,
  UsageChunkError
} from "../src/domain/usageChunk.ts"
import { UUID_V7, uuidv7Time } from "../src/domain/uuidv7.ts"
import { CHUNK_META, chunkOf, countingRandom, expectedRow, usageFactsArb } from "./support/usageFacts.ts"

const factsList = fc.array(usageFactsArb(), { minLength: 1, maxLength: 40 })

describe("usage chunks (serving thread → usage thread)", () => {
  it("a chunk's rows are the rows its facts make, in order, each with its own UUIDv7 id", () => {
    fc.assert(fc.property(factsList, (facts) => {
      const rows = rowsOfChunk(chunkOf(facts)!)
      expect(rows).toEqual(facts.map((f, i) => expectedRow(f, i)))
      for (const [i, r] of rows.entries()) {
        expect(r.id).toMatch(UUID_V7)
        expect(uuidv7Time(r.id)).toBe(facts[i]!.createdAt)
      }
    }))
  })

  it("a chunk copied between threads (structured clone) gives the same rows", () => {
    fc.assert(fc.property(factsList, (facts) => {
      const chunk = chunkOf(facts)!
      expect(rowsOfChunk(structuredClone(chunk))).toEqual(rowsOfChunk(chunk))
    }))
  })

  it("a chunk whose refs do not hold together is refused, saying which", () => {
    const good = chunkOf(fc.sample(usageFactsArb(), 3))!
    const withRef = (i: number, value: number): UsageChunk => {
      const refs = Int32Array.from(good.refs)
      refs[i] = value
      return { ...good, refs }
    }
    expect(() => checkChunk(withRef(2, 999))).toThrow(/service refers to string 999/)
    expect(() => checkChunk(withRef(2, -1))).toThrow(/service is missing/)
    expect(() => checkChunk({ ...good, strings: good.strings.map((s) => (s === good.strings[good.refs[2]!] ? "SHOP" : s)) })).toThrow(/unknown service/)
    expect(() => checkChunk({ ...good, rows: 4 })).toThrow(/holds/)
    expect(() => checkChunk(good)).not.toThrow()
  })

  it("the builder keeps each distinct string once, starts over after take, and refuses a row past its capacity", () => {
    const builder = makeUsageChunkBuilder({ capacity: 2, ...CHUNK_META, fillRandom: countingRandom() })
    expect(builder.take()).toBeUndefined()
    const facts = { requestSeq: 1, apiKeyId: undefined, service: "LPO", protocol: "udp", endpoint: "price", asset: "BTC", quote: "USD", code: "OK", latencyUs: 5, clientIp: "127.0.0.1", bytesOut: 100, createdAt: 1 } as const
    expect(builder.record(facts)).toBe(1)
    expect(builder.record({ ...facts, requestSeq: 2 })).toBe(2)
    expect(() => builder.record(facts)).toThrow(UsageChunkError)
    const chunk = builder.take()!
    expect(chunk.strings).toEqual(["LPO", "udp", "price", "BTC", "USD", "127.0.0.1"])
    expect(rowsOfChunk(chunk).map((r) => r.request_id)).toEqual([`${CHUNK_META.requestTag}-1`, `${CHUNK_META.requestTag}-2`])
    expect(builder.rows()).toBe(0)
    // New random bytes for the next chunk: its first id differs from the first chunk's.
    builder.record(facts)
    expect(rowsOfChunk(builder.take()!)[0]!.id).not.toBe(rowsOfChunk(chunk)[0]!.id)
  })
})
