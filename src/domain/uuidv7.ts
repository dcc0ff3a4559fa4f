/**
 * UUID version 7 (RFC 9562): 48-bit Unix ms timestamp, version 7, 74 random bits. Usage row ids
 * are time-ordered so inserts append at the right edge of the primary-key B-tree instead of
 * landing on random pages.
 */
const HEX: ReadonlyArray<string> = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"))

/** Uses the 10 bytes of `random` from `offset` (there must be that many). */
export const uuidv7 = (now: number, random: Uint8Array, offset = 0): string => {
  const ms = Math.max(0, Math.floor(now))
  const high = Math.floor(ms / 0x10000) // top 32 bits of the 48-bit timestamp
  const low = ms % 0x10000
  const h = (n: number) => HEX[n & 0xff]!
  return (
    h(high >>> 24) + h(high >>> 16) + h(high >>> 8) + h(high) + "-" +
    h(low >>> 8) + h(low) + "-" +
    h(0x70 | (random[offset]! & 0x0f)) + h(random[offset + 1]!) + "-" +
    h(0x80 | (random[offset + 2]! & 0x3f)) + h(random[offset + 3]!) + "-" +
    h(random[offset + 4]!) + h(random[offset + 5]!) + h(random[offset + 6]!) + h(random[offset + 7]!) + h(random[offset + 8]!) + h(random[offset + 9]!)
  )
}

/** The timestamp (ms) a UUIDv7 carries. */
export const uuidv7Time = (id: string): number => parseInt(id.slice(0, 8) + id.slice(9, 13), 16)

export const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
