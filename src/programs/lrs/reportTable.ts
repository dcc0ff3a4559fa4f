/**
 * Reports as tables: CSV (RFC 4180, via csv-stringify), TSV and plain text, each with a header row.
 *
 * Spreadsheet formula injection: a text value starting with `=`, `+`, `-`, `@`, a tab, a carriage
 * return (or their full-width forms, which some spreadsheets normalise), or a `'`, is written with
 * one `'` in front, so a spreadsheet shows it as text instead of running it. The guard is undone
 * exactly by removing one leading `'` from a value that has one (`unguardCell`): a value that
 * itself started with `'` got a second one. Numbers are written as numbers, unguarded.
 * Fields holding the delimiter, a quote, a tab, CR or LF are quoted, quotes doubled.
 */
import { stringify } from "csv-stringify/sync"

export type Cell = string | number | null
export type TableFormat = "csv" | "tsv" | "text"

export const CONTENT_TYPES: Readonly<Record<TableFormat, string>> = {
  csv: "text/csv; charset=utf-8",
  tsv: "text/tab-separated-values; charset=utf-8",
  text: "text/plain; charset=utf-8"
}

const GUARDED_FIRST = new Set(["=", "+", "-", "@", "\t", "\r", "'", "\uFF1D", "\uFF0B", "\uFF0D", "\uFF20"])

/** A text cell as written: with one `'` in front when a spreadsheet could read it as a formula. */
export const guardCell = (value: string): string => (value.length > 0 && GUARDED_FIRST.has(value[0]!) ? `'${value}` : value)

/** The inverse of `guardCell` on any text read back from a table. */
export const unguardCell = (value: string): string => (value.startsWith("'") ? value.slice(1) : value)

const cellText = (c: Cell): string => (c === null ? "" : typeof c === "number" ? (Number.isFinite(c) ? String(c) : "") : guardCell(c))

/** Plain text cells: backslash escapes for what would break the layout. */
const textCell = (c: Cell): string => cellText(c).replace(/[\\\n\r\t]/g, (ch) => (ch === "\\" ? "\\\\" : ch === "\n" ? "\\n" : ch === "\r" ? "\\r" : "\\t"))

/** The table: header row, then one line per row (CRLF in CSV as RFC 4180 has it, LF otherwise). */
export const renderTable = (format: TableFormat, header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<Cell>>): string => {
  if (format === "text") {
    const lines = [header.map((h) => h), ...rows.map((r) => r.map(textCell))]
    const widths = header.map((_, i) => Math.min(60, Math.max(...lines.map((l) => [...(l[i] ?? "")].length))))
    return lines.map((l) => l.map((cell, i) => (i === l.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  ").trimEnd()).join("\n") + "\n"
  }
  return stringify([header.map((h) => h), ...rows.map((r) => r.map(cellText))], {
    delimiter: format === "csv" ? "," : "\t",
    record_delimiter: format === "csv" ? "\r\n" : "\n",
    // Quote what a reader would otherwise split on: the delimiter and quotes (the library's own
    // rule), and any tab, CR or LF whatever the delimiter.
    quoted_match: [/[\t\r\n]/],
    quote_record_delimiter: true
  })
}
