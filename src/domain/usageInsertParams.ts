/**
 * The parameters of the usage insert, one per column in `USAGE_COLUMNS` order. A column is sent
 * as a PostgreSQL array literal, which the database expands with `unnest` (see pgArrayLiteral.ts),
 * unless every row of the batch holds the same value: then it is sent once, as that value.
 *
 * Why: reading the array literals is most of what the insert costs the embedded database, and many
 * columns are one value for a whole batch (node, region and service always; endpoint, status and
 * error code most of the time; key, client, asset, quote and source when one client dominates).
 * Figures: bench/README.md, "Measurements behind design choices".
 */
import { arrayElement, numeralElement, textParameter } from "./pgArrayLiteral.ts"
import { USAGE_COLUMNS, type UsageRow } from "./usage.ts"


export interface UsageInsertParams {
  /** Bit `i` set: every row holds one value in column `USAGE_COLUMNS[i]`, and `values[i]` is that value. */
  readonly uniformMask: number
  /** Per column: an array literal, or (uniform) the value's text, null for SQL NULL. */
  readonly values: ReadonlyArray<string | null>
}

/** The id is always an array, even when a batch holds one row: its length is the batch's row count. */
const ID_COLUMN = USAGE_COLUMNS.indexOf("id")

export const isUniform = (params: UsageInsertParams, column: number): boolean => (params.uniformMask & (1 << column)) !== 0

const scalarOf = (v: string | number | null): string | null => (v === null ? null : typeof v === "number" ? numeralElement(v) : textParameter(v))

/** Uniform means the same element text in every row. */
export const usageRowsInsertParams = (rows: ReadonlyArray<UsageRow>): UsageInsertParams => {
  let uniformMask = 0
  const values = USAGE_COLUMNS.map((column, i) => {
    const elements = rows.map((r) => arrayElement(r[column]))
    if (i !== ID_COLUMN && elements.length > 0 && elements.every((e) => e === elements[0])) {
      uniformMask |= 1 << i
      return scalarOf(rows[0]![column])
    }
    return `{${elements.join(",")}}`
  })
  return { uniformMask, values }
}
