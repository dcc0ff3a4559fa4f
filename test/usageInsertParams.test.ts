import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { arrayElement, pgArrayLiteral, textParameter } from "../src/domain/pgArrayLiteral.ts"
import { USAGE_COLUMNS, type UsageRow } from "../src/domain/usage.ts"
import { rowsOfChunk } from "../src/domain/usageChunk.ts"
import { isUniform, usageRowsInsertParams } from "../src/domain/usageInsertParams.ts"
import { chunkOf, sameFactsArb, usageFactsArb } from "./support/usageFacts.ts"

const chunksArb = fc.array(fc.array(usageFactsArb(), { minLength: 1, maxLength: 30 }), { minLength: 1, maxLength: 4 })
  .map((groups) => groups.map((facts, g) => chunkOf(facts, g * 1_000)!))
/** Chunks whose rows share some values, within a chunk and (the first chunk's facts repeated) across chunks. */
const sameChunksArb = fc.tuple(sameFactsArb(), fc.integer({ min: 1, max: 3 }))
  .map(([facts, copies]) => Array.from({ length: copies }, (_, g) => chunkOf(facts, g * 1_000)!))

/** The text a parameter of its own carries for a value, as the writer's `$n::type` reads it. */
const scalarText = (v: string | number | null) => (v === null ? null : typeof v === "number" ? arrayElement(v) : textParameter(v))

/** Each column is one value (sent once) exactly when every row has the same element, never for id; else the rows' array. */
const expectParamsOfRows = (rows: ReadonlyArray<UsageRow>) => {
  const params = usageRowsInsertParams(rows)
  expect(params.values).toHaveLength(USAGE_COLUMNS.length)
  USAGE_COLUMNS.forEach((column, i) => {
    const elements = rows.map((r) => arrayElement(r[column]))
    const same = column !== "id" && elements.every((e) => e === elements[0])
    expect(isUniform(params, i), column).toBe(same)
    expect(params.values[i], column).toBe(same ? scalarText(rows[0]![column]) : pgArrayLiteral(rows.map((r) => r[column])))
  })
  return params
}

describe("usage insert parameters (an array literal per column, or its one value)", () => {
  it("rows: a column is sent once exactly when every row holds that value, else as the rows' array", () => {
    fc.assert(fc.property(chunksArb, (chunks) => void expectParamsOfRows(chunks.flatMap(rowsOfChunk))))
    fc.assert(fc.property(sameChunksArb, (chunks) => void expectParamsOfRows(chunks.flatMap(rowsOfChunk))))
  })

  it("the id is never sent once, even for one row; node and region of one chunk always are", () => {
    fc.assert(fc.property(sameChunksArb, (chunks) => {
      const params = usageRowsInsertParams(chunks.flatMap(rowsOfChunk))
      for (const column of ["node", "region"] as const) expect(isUniform(params, USAGE_COLUMNS.indexOf(column)), column).toBe(true)
      expect(isUniform(params, USAGE_COLUMNS.indexOf("id"))).toBe(false)
    }))
    const one = usageRowsInsertParams(rowsOfChunk(chunkOf(fc.sample(usageFactsArb(), 1))!))
    expect(USAGE_COLUMNS.filter((_, i) => !isUniform(one, i))).toEqual(["id"])
  })
})
