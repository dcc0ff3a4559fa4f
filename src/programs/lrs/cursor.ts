/**
 * `next_cursor` of /reports/usage: the last row's exact position (created_at in µs, id), so the
 * next page starts strictly after it in newest-first order whatever arrives meanwhile (keyset
 * paging). Opaque to clients: base64url of `v1.<µs>.<uuid>`.
 */
import type { RowPosition } from "../../services/UsageReports.ts"

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

export const encodeCursor = (p: RowPosition): string => Buffer.from(`v1.${p.createdAtUs}.${p.id}`, "latin1").toString("base64url")

/** The position, or undefined for a cursor this server did not write. */
export const decodeCursor = (cursor: string): RowPosition | undefined => {
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(cursor)) return undefined
  const [version, us, id, ...rest] = Buffer.from(cursor, "base64url").toString("latin1").split(".")
  if (version !== "v1" || rest.length > 0 || us === undefined || id === undefined || !/^-?[0-9]{1,19}$/.test(us) || !UUID.test(id)) return undefined
  return { createdAtUs: BigInt(us), id }
}
