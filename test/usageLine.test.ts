import fc from "fast-check"
import { describe, expect, it } from "vitest"
import type { UsageRow } from "../src/domain/usage.ts"
import { USAGE_COLUMNS } from "../src/domain/usage.ts"
import { decodeColumnarBatch, encodeColumnarBatch } from "../src/domain/usageLine.ts"

const text = fc.string({ unit: "binary", maxLength: 40 })
const nullable = <A>(a: fc.Arbitrary<A>) => fc.option(a, { nil: null })

/** Any row the serving thread can record, including hostile text in every string column. */
const usageRow: fc.Arbitrary<UsageRow> = fc.record({
  id: fc.uuid(),
  request_id: text,
  api_key_id: nullable(fc.uuid()),
  service: fc.constantFrom("LPO", "LRS", "WEBHOOK", "RECEIPT", "ADMIN"),
  protocol: fc.constantFrom("http", "udp", "ws"),
  endpoint: text,
  asset: nullable(text),
  quote: nullable(text),
  source: nullable(text),
  price: nullable(fc.double({ noNaN: true, noDefaultInfinity: true })),
  status_code: fc.integer({ min: 100, max: 599 }),
  error_code: nullable(text),
  latency_us: fc.nat(),
  client_ip: text,
  node: text,
  region: text,
  bytes_out: fc.nat(),
  created_at: fc.integer({ min: 0, max: 2 ** 47 })
})

describe("columnar batches (queue messages)", () => {
  it("round-trip any rows, in order", () => {
    fc.assert(fc.property(fc.array(usageRow, { maxLength: 20 }), (rows) => {
      expect(decodeColumnarBatch(encodeColumnarBatch(rows))).toEqual(rows.map((r) => (Object.is(r.price, -0) ? { ...r, price: 0 } : r)))
    }))
  })

  it("refuse a row that is not a usage row, saying which column is wrong", () => {
    const good = JSON.parse(encodeColumnarBatch([{
      id: "01930000-0000-7000-8000-000000000000", request_id: "r", api_key_id: null, service: "LPO", protocol: "udp",
      endpoint: "/price", asset: "BTC", quote: "USD", source: null, price: 1.5, status_code: 200, error_code: null,
      latency_us: 3, client_ip: "127.0.0.1", node: "n", region: "r", bytes_out: 10, created_at: 1
    }])) as { readonly columns: Array<string>; readonly rows: Array<Array<unknown>> }
    const row = good.rows[0]!
    const withRow = (r: unknown) => JSON.stringify({ columns: good.columns, rows: [r] })
    const withColumn = (i: number, v: unknown) => withRow(row.map((x, j) => (j === i ? v : x)))
    expect(() => decodeColumnarBatch(withRow({}))).toThrow(/array of 18/)
    expect(() => decodeColumnarBatch(withRow(row.slice(1)))).toThrow(/array of 18/)
    expect(() => decodeColumnarBatch(withColumn(3, "SHOP"))).toThrow(/service/)
    expect(() => decodeColumnarBatch(withColumn(4, "tcp"))).toThrow(/protocol/)
    expect(() => decodeColumnarBatch(withColumn(10, 200.5))).toThrow(/status_code/)
    expect(() => decodeColumnarBatch(withColumn(9, "1.5"))).toThrow(/price/)
    expect(() => decodeColumnarBatch(withColumn(0, null))).toThrow(/id/)
    expect(decodeColumnarBatch(withRow(row))[0]?.protocol).toBe("udp")
  })

  it("refuse a batch whose columns are not the table's, in order", () => {
    const batch = (columns: ReadonlyArray<string>) => JSON.stringify({ columns, rows: [] })
    expect(decodeColumnarBatch(batch(USAGE_COLUMNS))).toEqual([])
    expect(() => decodeColumnarBatch(batch([...USAGE_COLUMNS].reverse()))).toThrow(/columns must be/)
    expect(() => decodeColumnarBatch(batch(USAGE_COLUMNS.slice(1)))).toThrow(/columns must be/)
    expect(() => decodeColumnarBatch(JSON.stringify({ columns: USAGE_COLUMNS, rows: {} }))).toThrow(/rows must be a list/)
    expect(() => decodeColumnarBatch("[]")).toThrow(/columns and rows/)
    expect(() => decodeColumnarBatch("{")).toThrow(/not JSON/)
  })
})
