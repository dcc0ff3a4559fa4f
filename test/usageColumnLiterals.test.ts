import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { pgArrayLiteral } from "../src/domain/pgArrayLiteral.ts"
import { USAGE_COLUMNS } from "../src/domain/usage.ts"
import { rowsOfChunk, type UsageChunk } from "../src/domain/usageChunk.ts"
import { usageChunksColumnLiterals, usageRowsColumnLiterals } from "../src/domain/usageColumnLiterals.ts"
import { chunkOf, usageFactsArb } from "./support/usageFacts.ts"

const chunksArb = fc.array(fc.array(usageFactsArb(), { minLength: 1, maxLength: 30 }), { minLength: 1, maxLength: 4 })
  .map((groups) => groups.map((facts, g) => chunkOf(facts, g * 1_000)!))

describe("usage insert parameters (one array literal per column)", () => {
  it("rows give each column's values as one literal, in USAGE_COLUMNS order", () => {
    fc.assert(fc.property(chunksArb, (chunks) => {
      const rows = chunks.flatMap(rowsOfChunk)
      const literals = usageRowsColumnLiterals(rows)
      expect(literals).toHaveLength(USAGE_COLUMNS.length)
      USAGE_COLUMNS.forEach((column, i) => expect(literals[i]).toBe(pgArrayLiteral(rows.map((r) => r[column]))))
    }))
  })

  it("chunks give the very text their rows give, several chunks in one insert", () => {
    fc.assert(fc.property(chunksArb, (chunks) => {
      expect(usageChunksColumnLiterals(chunks)).toEqual(usageRowsColumnLiterals(chunks.flatMap(rowsOfChunk)))
    }))
  })

  it("a chunk that does not hold together is refused, not written as it is", () => {
    const good = chunkOf(fc.sample(usageFactsArb(), 3))!
    const broken: UsageChunk = { ...good, refs: Int32Array.from(good.refs, (v, i) => (i === 2 ? 999 : v)) }
    expect(() => usageChunksColumnLiterals([good, broken])).toThrow(/service refers to string 999/)
  })
})
