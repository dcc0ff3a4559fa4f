import fc from "fast-check"
import type { IncomingMessage } from "node:http"
import { describe, expect, it } from "vitest"
import { parseQueryString, wantedHeaders } from "../src/layers/http/httpKit.ts"

const withRaw = (rawHeaders: Array<string>) => ({ rawHeaders }) as unknown as IncomingMessage

describe("wantedHeaders", () => {
  it("finds the headers whatever their case, first occurrence winning", () => {
    const h = wantedHeaders(withRaw([
      "Host", "x", "X-API-KEY", "k1", "x-api-key", "k2", "AUTHORIZATION", "Bearer b", "X-Request-Id", "r",
      "Accept-Language", "es", "X-Admin-Token", "t"
    ]))
    expect(h).toEqual({ apiKey: "k1", authorization: "Bearer b", requestId: "r", acceptLanguage: "es", adminToken: "t" })
  })

  it("agrees with a plain lower-cased lookup on arbitrary header lists", () => {
    const names = fc.constantFrom("x-api-key", "X-Api-Key", "authorization", "Authorization", "x-request-id", "accept-language", "x-admin-token", "host", "x-api-keys", "content-type")
    fc.assert(fc.property(fc.array(fc.tuple(names, fc.string()), { maxLength: 12 }), (pairs) => {
      const first = (n: string) => pairs.find(([k]) => k.toLowerCase() === n)?.[1]
      const h = wantedHeaders(withRaw(pairs.flat()))
      expect(h).toEqual({
        apiKey: first("x-api-key"), authorization: first("authorization"), requestId: first("x-request-id"),
        acceptLanguage: first("accept-language"), adminToken: first("x-admin-token")
      })
    }))
  })
})

describe("parseQueryString", () => {
  it("reads every query string as URLSearchParams does: pairs in order, first value of a name", () => {
    const qs = fc.string({ unit: fc.constantFrom("a", "b", "=", "&", "%", "2", "0", "4", "1", "+", "?", "é", " ", "asset", "BTC"), maxLength: 30 })
    fc.assert(fc.property(qs, fc.constantFrom("a", "b", "", "asset", "a b", "?a"), (q, name) => {
      const reference = new URLSearchParams(q)
      const parsed = parseQueryString(q)
      expect([...parsed]).toEqual([...reference])
      expect(parsed.get(name)).toBe(reference.get(name))
    }), { numRuns: 2_000 })
  })
})
