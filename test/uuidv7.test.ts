import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { UUID_V7, uuidv7, uuidv7Time } from "../src/domain/uuidv7.ts"

const MAX_MS = 2 ** 48 - 1

describe("uuidv7", () => {
  it("is a well-formed version 7 UUID carrying its timestamp", () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: MAX_MS }), fc.uint8Array({ minLength: 10, maxLength: 10 }), (ms, random) => {
      const id = uuidv7(ms, random)
      expect(id).toMatch(UUID_V7)
      expect(uuidv7Time(id)).toBe(ms)
    }))
  })

  it("sorts as text in time order", () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: MAX_MS }), fc.integer({ min: 0, max: MAX_MS }), fc.uint8Array({ minLength: 10, maxLength: 10 }), fc.uint8Array({ minLength: 10, maxLength: 10 }), (a, b, ra, rb) => {
      fc.pre(a !== b)
      expect(uuidv7(a, ra) < uuidv7(b, rb)).toBe(a < b)
    }))
  })

  it("differs when the random bits differ", () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 10, maxLength: 10 }), fc.uint8Array({ minLength: 10, maxLength: 10 }), (ra, rb) => {
      // Bits the format overwrites (version, variant) are masked before comparing.
      const mask = (r: Uint8Array) => [r[0]! & 0x0f, r[1], r[2]! & 0x3f, ...r.slice(3)].join(",")
      fc.pre(mask(ra) !== mask(rb))
      expect(uuidv7(1_700_000_000_000, ra)).not.toBe(uuidv7(1_700_000_000_000, rb))
    }))
  })
})
