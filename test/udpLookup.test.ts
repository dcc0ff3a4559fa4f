import { describe, expect, it } from "vitest"
import { isIP } from "node:net"
import { literalFirstLookup } from "../src/programs/lpo/LpoUdpServer.ts"

describe("UDP reply address lookup", () => {
  it("answers IP literals at once, with their family (no deferred DNS callback per reply)", () => {
    for (const [address, family] of [["127.0.0.1", 4], ["203.0.113.9", 4], ["::1", 6], ["2001:db8::7", 6]] as const) {
      let answered: [string, number] | undefined
      literalFirstLookup(address, { family: 0 }, (err, ip, fam) => {
        expect(err).toBeNull()
        answered = [ip, fam]
      })
      expect(answered).toEqual([address, family])
    }
  })

  it("still resolves names through DNS", async () => {
    const resolved = new Promise<[string, number]>((resolve, reject) =>
      literalFirstLookup("localhost", { family: 4 }, (err, ip, fam) => (err === null ? resolve([ip, fam]) : reject(err)))
    )
    const [ip, family] = await resolved
    expect(isIP(ip)).toBe(family)
  })
})
