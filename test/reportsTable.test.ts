import { parse } from "csv-parse/sync"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { decodeCursor, encodeCursor } from "../src/programs/lrs/cursor.ts"
import { guardCell, renderTable, unguardCell } from "../src/programs/lrs/reportTable.ts"
import { daysOf, reportWindow } from "../src/programs/lrs/reportWindow.ts"

/** Text that stresses a table: delimiters, quotes, line breaks, formula starters, quotes of the guard itself, unicode. */
const nasty = fc.oneof(
  fc.string({ unit: fc.constantFrom(",", "\"", "\t", "\n", "\r", "=", "+", "-", "@", "'", " ", "a", "1", "\uFF1D", "é", "😀") }),
  fc.string({ unit: "binary" }),
  fc.string()
)
const cell = fc.oneof(nasty, fc.integer(), fc.constant(null))
const table = fc.array(fc.array(cell, { minLength: 3, maxLength: 3 }), { maxLength: 8 })
const header = ["a", "b", "c"] as const

/** What a cell reads back as, once the formula guard is undone. */
const expected = (c: string | number | null) => (c === null ? "" : String(c))

describe("report tables", () => {
  for (const [format, delimiter] of [["csv", ","], ["tsv", "\t"]] as const) {
    it(`${format}: every value round-trips through csv-parse after the formula guard is undone`, () => {
      fc.assert(fc.property(table, (rows) => {
        const text = renderTable(format, header, rows)
        const back = parse(text, { delimiter, relax_column_count: false }) as Array<Array<string>>
        expect(back[0]).toEqual([...header])
        expect(back.slice(1).map((r) => r.map(unguardCell))).toEqual(rows.map((r) => r.map(expected)))
      }), { numRuns: 500 })
    })
    it(`${format}: no written cell starts a formula`, () => {
      fc.assert(fc.property(table, (rows) => {
        const back = parse(renderTable(format, header, rows), { delimiter }) as Array<Array<string>>
        for (const row of back.slice(1)) {
          for (const [i, value] of row.entries()) {
            if (typeof rows[back.indexOf(row) - 1]?.[i] === "number") continue
            expect(/^[=+\-@\t\r\uFF1D\uFF0B\uFF0D\uFF20]/.test(value)).toBe(false)
          }
        }
      }), { numRuns: 300 })
    })
  }

  it("quotes commas, quotes, tabs and newlines; guards = + - @ with one quote mark", () => {
    const text = renderTable("csv", ["x"], [["a,b"], ["say \"hi\""], ["t\tab"], ["line\nbreak"], ["=1+2"], ["-3"], ["@SUM(A1)"], ["+7"], ["'quoted"], [-3]])
    expect(text).toBe("x\r\n\"a,b\"\r\n\"say \"\"hi\"\"\"\r\n\"t\tab\"\r\n\"line\nbreak\"\r\n'=1+2\r\n'-3\r\n'@SUM(A1)\r\n'+7\r\n''quoted\r\n-3\r\n")
    expect(guardCell("plain")).toBe("plain")
  })

  it("text: a header row and aligned columns, control characters escaped", () => {
    expect(renderTable("text", ["name", "n"], [["a\tb", 1], ["long value", null]])).toBe("name        n\na\\tb        1\nlong value\n")
  })
})

describe("report windows", () => {
  const now = Date.parse("2026-12-06T12:00:00Z")
  it("defaults to the last 24 h", () => {
    expect(reportWindow(undefined, undefined, now)).toEqual({ from: now - 86_400_000, to: now })
  })
  it("a date means its whole UTC day, to included", () => {
    expect(reportWindow("2026-12-01", "2026-12-02", now)).toEqual({ from: Date.parse("2026-12-01T00:00:00Z"), to: Date.parse("2026-12-03T00:00:00Z") })
    expect(daysOf({ from: Date.parse("2026-12-01T00:00:00Z"), to: Date.parse("2026-12-03T00:00:00Z") })).toEqual(["2026-12-01", "2026-12-02"])
  })
  it("RFC 3339 times with offsets", () => {
    expect(reportWindow("2026-12-05T10:00:00+02:00", "2026-12-05T09:00:00Z", now)).toEqual({ from: Date.parse("2026-12-05T08:00:00Z"), to: Date.parse("2026-12-05T09:00:00Z") })
  })
  it("refuses a from more than 93 days back, and from after to", () => {
    expect(reportWindow("2026-09-04", undefined, now)).toEqual({ from: Date.parse("2026-09-04T00:00:00Z"), to: now })
    expect(typeof reportWindow("2026-09-03", undefined, now)).toBe("string")
    expect(typeof reportWindow("2026-12-05", "2026-12-04", now)).toBe("string")
  })
})

describe("cursors", () => {
  it("round-trip, and anything else is refused", () => {
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: 9_000_000_000_000_000n }), fc.uuid(), (us, id) => {
      expect(decodeCursor(encodeCursor({ createdAtUs: us, id }))).toEqual({ createdAtUs: us, id })
    }))
    fc.assert(fc.property(fc.string(), (s) => {
      const decoded = decodeCursor(s)
      if (decoded !== undefined) expect(encodeCursor(decoded)).toBe(s)
    }))
  })
})
