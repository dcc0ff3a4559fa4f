/**
 * `quote=USDC` (spec `/price`): the seeded USDC markets, served by the exchange simulators
 * (FEEDS=simulated), answer it from the venues whose USDC markets the seed enables.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ASSET_MAP_SEED } from "../src/domain/seedData.ts"
import { createKey, priceWith, type RunningServer, startServer } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"

let server: RunningServer
let dbUrl: string

beforeAll(async () => {
  dbUrl = freshDatabase("usdc_quote")
  server = await startServer({ DATABASE_URL: dbUrl, FEEDS: "simulated" })
}, 90_000)

afterAll(async () => {
  expect(await server?.stop()).toBe(0)
  dropDatabase(dbUrl)
})

const enabledVenues = (asset: string, quote: string) =>
  ASSET_MAP_SEED.filter((m) => m.asset === asset && m.quote === quote && m.enabled).map((m) => m.exchange).sort()

interface PriceData { readonly asset: string; readonly quote: string; readonly price: number; readonly sources: ReadonlyArray<{ readonly exchange: string }> }

describe("quote=USDC with FEEDS=simulated (black box)", () => {
  it("answers BTC and ETH in USDC from the venues whose USDC markets are seeded enabled", async () => {
    const { key } = await createKey(server, "demo")
    for (const asset of ["BTC", "ETH"]) {
      const venues = enabledVenues(asset, "USDC")
      expect(venues.length).toBeGreaterThanOrEqual(2)
      // Wait (within a demo key's 5 requests a second) until every venue has sent its first tick.
      let answer = await priceWith(server, key, `asset=${asset}&quote=USDC`)
      for (let i = 0; i < 30 && (answer.status !== 200 || (answer.body.data as unknown as PriceData | null)?.sources.length !== venues.length); i++) {
        await new Promise((r) => setTimeout(r, 300))
        answer = await priceWith(server, key, `asset=${asset}&quote=USDC`)
      }
      expect(answer.status).toBe(200)
      const data = answer.body.data as unknown as PriceData
      expect({ asset: data.asset, quote: data.quote, venues: data.sources.map((s) => s.exchange).sort() }).toEqual({ asset, quote: "USDC", venues })
      expect(data.price).toBeGreaterThan(0)
    }
  }, 60_000)
})
