/** `sql.insert` wants a non-empty array of rows; callers check emptiness first. */
export const nonEmptyRows = <A extends Record<string, unknown>>(rows: ReadonlyArray<A>): readonly [A, ...Array<A>] => {
  if (rows.length === 0) throw new RangeError("nonEmptyRows: no rows")
  return rows as unknown as readonly [A, ...Array<A>]
}
