import { describe, expect, it } from "vitest"
import { allowedMethods, routesOf } from "../src/api/routeTable.ts"
import { TrinityApi } from "../src/api/TrinityApi.ts"
import { corsHeaders, corsPolicyOf, preflightHeaders } from "../src/domain/cors.ts"
import { snakeCaseKeys } from "../src/domain/snakeCase.ts"
import { rateHeaders } from "../src/programs/lpo/priceHttp.ts"
import { readinessProblem } from "../src/programs/lpo/readiness.ts"

describe("rate-limit headers", () => {
  it("QUOTA_EXCEEDED carries Retry-After and the RateLimit-* headers of the monthly quota", () => {
    const headers = rateHeaders({ _tag: "QuotaExceeded", limit: 10_000, retryAfterSec: 3600 }) ?? []
    const byName = new Map<string, string | number>()
    for (let i = 0; i + 1 < headers.length; i += 2) byName.set(String(headers[i]), headers[i + 1]!)
    expect(byName.get("retry-after")).toBe(3600)
    expect(byName.get("ratelimit-limit")).toBe(10_000)
    expect(byName.get("ratelimit-remaining")).toBe(0)
    expect(byName.get("ratelimit-reset")).toBe(3600)
  })
})

describe("route table", () => {
  it("gives a path's declared methods, HEAD with GET, nothing for an unknown path", () => {
    const allowed = allowedMethods(routesOf(TrinityApi))
    expect([...allowed("/admin/keys")].sort()).toEqual(["GET", "HEAD", "POST"])
    expect([...allowed("/price")].sort()).toEqual(["GET", "HEAD"])
    expect(allowed("/nope")).toEqual([])
  })
})

describe("CORS policy", () => {
  const policy = corsPolicyOf(" https://a.example , ,https://b.example")
  it("names a listed origin, never *, and says nothing to others", () => {
    expect(corsHeaders(policy, "https://a.example")).toContain("https://a.example")
    expect(corsHeaders(policy, "https://a.example")).not.toContain("*")
    expect(corsHeaders(policy, "https://c.example")).toEqual([])
    expect(corsHeaders(policy, undefined)).toEqual([])
    expect(preflightHeaders(policy, "https://c.example", ["GET"])).toBeUndefined()
    expect(corsHeaders(corsPolicyOf(undefined), "https://a.example")).toEqual([])
  })
})

describe("snake_case field names", () => {
  it("renames every key, however deep, and leaves values alone", () => {
    expect(snakeCaseKeys({ lastMessageAgeMs: 1, marketHealth: [{ lastTickAgeMs: 2, symbol: "BTC-USD" }], ok: "camelCase" })).toEqual({
      last_message_age_ms: 1, market_health: [{ last_tick_age_ms: 2, symbol: "BTC-USD" }], ok: "camelCase"
    })
  })
})

describe("readiness", () => {
  const base = {
    feeds: { mode: "live", connected: 0, total: 6, freshest_age_ms: null },
    prices: { assets: 100, fresh_assets: 0, warm: false },
    storage: { database: true, cache: true },
    draining: false
  }
  it("tells an offline first run to use FEEDS=simulated", () => {
    expect(readinessProblem(base)).toMatch(/FEEDS=simulated/)
  })
  it("names the database setting when the database does not answer", () => {
    expect(readinessProblem({ ...base, storage: { database: false, cache: true } })).toMatch(/DATABASE_URL/)
  })
  it("is silent once warm, and counts progress while warming", () => {
    expect(readinessProblem({ ...base, prices: { ...base.prices, warm: true } })).toBeUndefined()
    expect(readinessProblem({ ...base, feeds: { ...base.feeds, connected: 3 }, prices: { ...base.prices, fresh_assets: 20 } })).toMatch(/20 of 100/)
  })
})
