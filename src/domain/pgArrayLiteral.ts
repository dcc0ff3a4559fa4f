/**
 * PostgreSQL array literals (`{"a","b",NULL}`), for sending a column of values as one text
 * parameter that the server reads with `$1::text[]` and expands with `unnest`. The array input
 * parser is far cheaper per value than JSON functions such as json_to_recordset (bench/README.md).
 */

/**
 * Every string is quoted (so "", "NULL" and strings with commas, braces or spaces stay strings);
 * `"` and `\` are backslash-escaped. PostgreSQL text cannot hold U+0000: it becomes U+FFFD, so one
 * odd value cannot make a whole batch fail.
 */
export const quotedElement = (s: string): string =>
  s.includes('"') || s.includes("\\") || s.includes("\u0000") ? `"${s.replace(/["\\]/gu, (c) => `\\${c}`).replaceAll("\u0000", "\uFFFD")}"` : `"${s}"`

/** A string as a text parameter of its own: unquoted, with U+0000 made U+FFFD as in `quotedElement`. */
export const textParameter = (s: string): string => (s.includes("\u0000") ? s.replaceAll("\u0000", "\uFFFD") : s)

/** Numbers in a form `float8[]` and `int[]` read back exactly (JS's shortest round-trip form). */
export const numeralElement = (n: number): string =>
  // String(-0) is "0"; float8 keeps the sign.
  Object.is(n, -0) ? "-0" : Number.isFinite(n) ? String(n) : Number.isNaN(n) ? "NaN" : n > 0 ? "Infinity" : "-Infinity"

/** One value as an element of an array literal. */
export const arrayElement = (v: string | number | null): string => (v === null ? "NULL" : typeof v === "number" ? numeralElement(v) : quotedElement(v))

export const pgArrayLiteral = (values: ReadonlyArray<string | number | null>): string => {
  let out = "{"
  for (let i = 0; i < values.length; i++) out += i === 0 ? arrayElement(values[i]!) : "," + arrayElement(values[i]!)
  return out + "}"
}
