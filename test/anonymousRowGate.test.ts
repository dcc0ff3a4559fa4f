import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { makeAnonymousRowGate } from "../src/domain/anonymousRowGate.ts"

/** The start of some second, in ms. */
const T = 1_765_000_000_000

/** How many of `times` (ms) the gate admits for `address`. */
const admitted = (gate: ReturnType<typeof makeAnonymousRowGate>, address: string, times: ReadonlyArray<number>, perSecond: number) =>
  times.filter((t) => gate.admit(address, t, perSecond)).length

const within = (second: number, n: number) => Array.from({ length: n }, (_, i) => T + second * 1000 + (i % 1000))

describe("anonymous row gate", () => {
  it("admits up to perSecond rows per address in one second, each address on its own", () => {
    const gate = makeAnonymousRowGate({ maxAddresses: 100 })
    expect(admitted(gate, "10.0.0.1", within(0, 25), 10)).toBe(10)
    expect(admitted(gate, "10.0.0.2", within(0, 25), 10)).toBe(10)
    expect(admitted(gate, "2001:db8::1", within(0, 3), 10)).toBe(3)
  })

  it("starts a new count every second", () => {
    const gate = makeAnonymousRowGate({ maxAddresses: 100 })
    expect([0, 1, 2, 5].map((s) => admitted(gate, "10.0.0.1", within(s, 25), 4))).toEqual([4, 4, 4, 4])
  })

  it("counts a late row in its own second, the previous one; rows older than that are refused", () => {
    const gate = makeAnonymousRowGate({ maxAddresses: 100 })
    expect(admitted(gate, "10.0.0.1", within(0, 2), 3)).toBe(2)
    expect(admitted(gate, "10.0.0.1", within(1, 3), 3)).toBe(3)
    // Second 0 has one row left for this address, whatever second 1 used.
    expect(admitted(gate, "10.0.0.1", within(0, 5), 3)).toBe(1)
    expect(admitted(gate, "10.0.0.2", within(0, 5), 3)).toBe(3)
    expect(admitted(gate, "10.0.0.1", within(2, 1), 3)).toBe(1)
    // Second 0 is two seconds old now: its window is gone.
    expect(admitted(gate, "10.0.0.3", within(0, 1), 3)).toBe(0)
    expect(admitted(gate, "10.0.0.1", within(2, 5), 3)).toBe(2)
  })

  it("restarts its windows after the clock stepped back far, instead of refusing every row until it catches up", () => {
    const gate = makeAnonymousRowGate({ maxAddresses: 100 })
    expect(admitted(gate, "10.0.0.1", within(3600, 5), 2)).toBe(2)
    expect(admitted(gate, "10.0.0.1", within(0, 5), 2)).toBe(2)
    expect(admitted(gate, "10.0.0.1", within(1, 5), 2)).toBe(2)
  })

  it("refuses every row with perSecond 0, and reads perSecond on every call", () => {
    const gate = makeAnonymousRowGate({ maxAddresses: 100 })
    expect(admitted(gate, "10.0.0.1", within(0, 5), 0)).toBe(0)
    expect(admitted(gate, "10.0.0.1", within(0, 5), 2)).toBe(2)
    expect(admitted(gate, "10.0.0.1", within(0, 5), 4)).toBe(2)
  })

  it("refuses rows with a time that is not a number, without losing its count", () => {
    const gate = makeAnonymousRowGate({ maxAddresses: 100 })
    expect(admitted(gate, "10.0.0.1", within(0, 2), 2)).toBe(2)
    expect(admitted(gate, "10.0.0.1", [Number.NaN, Number.POSITIVE_INFINITY], 2)).toBe(0)
    expect(admitted(gate, "10.0.0.1", within(0, 2), 2)).toBe(0)
  })

  it("tracks at most maxAddresses addresses a second: rows of further addresses are refused, and the next second starts afresh", () => {
    const gate = makeAnonymousRowGate({ maxAddresses: 50 })
    const addresses = Array.from({ length: 10_000 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`)
    const first = addresses.filter((a) => gate.admit(a, T, 10)).length
    expect({ first, tracked: gate.trackedAddresses() }).toEqual({ first: 50, tracked: 50 })
    // The tracked ones keep their own allowance.
    expect(admitted(gate, addresses[0]!, within(0, 20), 10)).toBe(9)
    const second = addresses.filter((a) => gate.admit(a, T + 1000, 10)).length
    const third = addresses.filter((a) => gate.admit(a, T + 2000, 10)).length
    expect({ second, third, tracked: gate.trackedAddresses() }).toEqual({ second: 50, third: 50, tracked: 100 })
  })

  it("never admits more than perSecond rows for an address in one second, nor tracks more than two seconds of maxAddresses", () => {
    // A clock that moves forward, and rows stamped up to 3 s before it (answered late).
    const row = fc.record({ address: fc.integer({ min: 0, max: 30 }), stepMs: fc.integer({ min: 0, max: 1500 }), lateMs: fc.integer({ min: 0, max: 3000 }) })
    fc.assert(
      fc.property(fc.array(row, { maxLength: 400 }), fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 20 }), (rows, perSecond, maxAddresses) => {
        const gate = makeAnonymousRowGate({ maxAddresses })
        const perAddressSecond = new Map<string, number>()
        let clock = T
        for (const { address, stepMs, lateMs } of rows) {
          clock += stepMs
          const t = clock - lateMs
          const ip = `10.0.0.${address}`
          if (gate.admit(ip, t, perSecond)) {
            const key = `${ip}@${Math.floor(t / 1000)}`
            perAddressSecond.set(key, (perAddressSecond.get(key) ?? 0) + 1)
          }
          expect(gate.trackedAddresses()).toBeLessThanOrEqual(2 * maxAddresses)
        }
        for (const n of perAddressSecond.values()) expect(n).toBeLessThanOrEqual(perSecond)
      })
    )
  })
})
