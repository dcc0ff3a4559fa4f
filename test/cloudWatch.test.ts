import { Effect, Layer } from "effect"
import { createServer as createNetServer } from "node:net"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { MINUTE_MS } from "../src/domain/minuteFigures.ts"
import { CloudWatchLive } from "../src/layers/CloudWatchLive.ts"
import { makeMinuteBook, runCloudWatchPublisher } from "../src/layers/metrics/cloudWatchPublisher.ts"
import { type CloudWatchStandIn, startCloudWatchStandIn } from "../src/simulators/cloudWatchStandIn.ts"
import type { ScrapedFamily } from "../src/services/Metrics.ts"
import { AWS_TEST_ENV } from "./support/awsStandIns.ts"
import { createKey, priceWith, startServer } from "./support/server.ts"

let standIn: CloudWatchStandIn

beforeAll(async () => {
  standIn = await startCloudWatchStandIn()
  // The SDK's client reads its endpoint and credentials from the environment, as in production.
  Object.assign(process.env, AWS_TEST_ENV, { AWS_ENDPOINT_URL_CLOUDWATCH: standIn.url, AWS_MAX_ATTEMPTS: "1" })
})

afterAll(async () => {
  await standIn?.close()
})

beforeEach(() => {
  standIn.datums.length = 0
  standIn.requests.length = 0
  standIn.mode = "accept"
})

const outcomes = (family: ScrapedFamily) => Object.fromEntries(family.read().map((s) => [s.labels["outcome"], s.value]))

/** Runs the publisher with `body` in its scope; the scope's end is a shutdown. */
const withPublisher = <A>(
  book: ReturnType<typeof makeMinuteBook>,
  options: { readonly intervalMs: number; readonly maxPendingDatums: number; readonly finalPublishMs?: number },
  body: (family: ScrapedFamily) => Promise<A>
) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const family = yield* runCloudWatchPublisher(book, { prefix: "TB", finalPublishMs: 2_000, ...options })
    return yield* Effect.promise(() => body(family))
  })).pipe(Effect.provide(Layer.fresh(CloudWatchLive))))

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const lastMinute = () => Date.now() - (Date.now() % MINUTE_MS) - MINUTE_MS

describe("CloudWatch publisher (the real SDK against a loopback stand-in)", () => {
  it("publishes a closed minute per service to <prefix>/LPO and <prefix>/LRS, one PutMetricData call per namespace", async () => {
    const book = makeMinuteBook()
    const at = lastMinute() + 1_000
    for (let i = 0; i < 7; i++) book.add("LPO", 200, "OK", 40 + i, at)
    book.add("LPO", 429, "RATE_LIMITED", 30, at)
    book.add("LPO", 503, "NO_FRESH_PRICE", 30, at)
    for (let i = 0; i < 3; i++) book.add("LRS", 200, "OK", 5_000, at)
    book.add("WEBHOOK", 200, "OK", 1_000, at) // not a published service
    await withPublisher(book, { intervalMs: 50, maxPendingDatums: 100 }, async (family) => {
      const deadline = Date.now() + 5_000
      while (standIn.requests.length < 2 && Date.now() < deadline) await sleep(20)
      expect(outcomes(family)).toMatchObject({ sent: standIn.datums.length, refused: 0, dropped: 0 })
    })
    expect(standIn.requests.map((r) => r.target)).toEqual(["GraniteServiceVersion20100801.PutMetricData", "GraniteServiceVersion20100801.PutMetricData"])
    expect(standIn.requests.every((r) => r.authorization.includes("/monitoring/aws4_request"))).toBe(true)
    const lpo = (name: string) => standIn.datums.find((d) => d.namespace === "TB/LPO" && d.name === name)
    expect(lpo("Requests")?.value).toBe(9)
    expect(lpo("RateLimited")?.value).toBe(1)
    expect(lpo("ServerErrors")?.value).toBe(1)
    expect(lpo("ClientErrors")?.value).toBe(1)
    expect(lpo("Requests")?.timestamp).toBe(lastMinute() / 1000)
    const latency = lpo("Latency")
    expect(latency?.unit).toBe("Milliseconds")
    expect(latency?.counts?.reduce((a, b) => a + b, 0)).toBe(9)
    expect(standIn.datums.find((d) => d.namespace === "TB/LRS" && d.name === "Requests")?.value).toBe(3)
    expect(standIn.datums.some((d) => d.namespace.endsWith("WEBHOOK"))).toBe(false)
  })

  it("drops and counts what CloudWatch refuses, and does not send it again", async () => {
    standIn.mode = "refuse"
    const book = makeMinuteBook()
    book.add("LPO", 200, "OK", 40, lastMinute())
    await withPublisher(book, { intervalMs: 50, maxPendingDatums: 100 }, async (family) => {
      const deadline = Date.now() + 5_000
      while (outcomes(family)["refused"] === 0 && Date.now() < deadline) await sleep(20)
      expect(outcomes(family)).toMatchObject({ sent: 0, refused: 6 })
      const calls = standIn.requests.length
      await sleep(300)
      expect(standIn.requests.length).toBe(calls)
    })
  })

  it("keeps what fails while CloudWatch is down, up to its bound (the oldest dropped and counted), and sends the rest when it is back", async () => {
    standIn.mode = "unavailable"
    const book = makeMinuteBook()
    // Four closed minutes of LPO: 6 datums each, 24 in all, with room for 10.
    for (let m = 4; m >= 1; m--) book.add("LPO", 200, "OK", 40, lastMinute() - (m - 1) * MINUTE_MS)
    await withPublisher(book, { intervalMs: 50, maxPendingDatums: 10 }, async (family) => {
      const deadline = Date.now() + 5_000
      while (standIn.requests.length < 2 && Date.now() < deadline) await sleep(20)
      expect(outcomes(family)).toMatchObject({ sent: 0, refused: 0, dropped: 14 })
      standIn.mode = "accept"
      while (outcomes(family)["sent"] === 0 && Date.now() < deadline) await sleep(20)
      expect(outcomes(family)).toMatchObject({ sent: 10, dropped: 14 })
    })
    // The newest minutes were kept.
    const stamps = new Set(standIn.datums.map((d) => d.timestamp))
    expect(stamps.has(lastMinute() / 1000)).toBe(true)
  })

  it("past its bound drops the oldest datums of either namespace, not one namespace first", async () => {
    standIn.mode = "unavailable"
    const book = makeMinuteBook()
    // Two old minutes of LRS, two newer of LPO: 24 datums, room for 12.
    for (const back of [4, 3]) book.add("LRS", 200, "OK", 40, lastMinute() - (back - 1) * MINUTE_MS)
    for (const back of [2, 1]) book.add("LPO", 200, "OK", 40, lastMinute() - (back - 1) * MINUTE_MS)
    await withPublisher(book, { intervalMs: 50, maxPendingDatums: 12 }, async (family) => {
      const deadline = Date.now() + 5_000
      while (standIn.requests.length < 1 && Date.now() < deadline) await sleep(20)
      expect(outcomes(family)).toMatchObject({ dropped: 12 })
      standIn.mode = "accept"
      while (outcomes(family)["sent"] === 0 && Date.now() < deadline) await sleep(20)
    })
    expect(new Set(standIn.datums.map((d) => d.namespace))).toEqual(new Set(["TB/LPO"]))
    expect(standIn.datums).toHaveLength(12)
  })

  it("counts a late request in its own minute, without splitting the minute that has begun", () => {
    const book = makeMinuteBook()
    const now = lastMinute() + MINUTE_MS + 1_000
    book.add("LPO", 200, "OK", 40, now)
    book.add("LPO", 200, "OK", 40, lastMinute() + 59_000) // answered after a request of the next minute
    book.add("LPO", 200, "OK", 40, now + 1)
    const taken = book.take(now, true)
    expect(taken.map((t) => [t.figures.minute, t.figures.requests])).toEqual([[lastMinute(), 1], [lastMinute() + MINUTE_MS, 2]])
    expect(book.take(now, true)).toEqual([])
  })

  it("publishes the minute in progress at shutdown", async () => {
    const book = makeMinuteBook()
    book.add("LRS", 200, "OK", 1_000, Date.now())
    await withPublisher(book, { intervalMs: 60_000, maxPendingDatums: 100 }, () => sleep(100))
    expect(standIn.datums.find((d) => d.namespace === "TB/LRS" && d.name === "Requests")?.value).toBe(1)
  })

  it("tb serve with CLOUDWATCH_NAMESPACE_PREFIX publishes what it served, at the latest when it stops", async () => {
    const server = await startServer({
      SERVER_TYPE: "APP_SERVER",
      CLOUDWATCH_NAMESPACE_PREFIX: "TrinityBeast",
      AWS_ENDPOINT_URL_CLOUDWATCH: standIn.url,
      ...AWS_TEST_ENV
    })
    try {
      const { key } = await createKey(server, "partner")
      for (let i = 0; i < 4; i++) await priceWith(server, key)
    } finally {
      expect(await server.stop()).toBe(0)
    }
    const requests = standIn.datums.filter((d) => d.namespace === "TrinityBeast/LPO" && d.name === "Requests").reduce((a, d) => a + (d.value ?? 0), 0)
    expect(requests).toBe(4)
  }, 90_000)

  it("a CloudWatch that never answers does not hold up shutdown past SHUTDOWN_TIMEOUT_MS", async () => {
    // Accepts connections and never answers: the last publish can only end by its timeout.
    const silent = createNetServer(() => {})
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", () => resolve()))
    const address = silent.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    try {
      const server = await startServer({
        SERVER_TYPE: "APP_SERVER",
        SHUTDOWN_TIMEOUT_MS: "3000",
        CLOUDWATCH_NAMESPACE_PREFIX: "TrinityBeast",
        AWS_ENDPOINT_URL_CLOUDWATCH: `http://127.0.0.1:${port}`,
        ...AWS_TEST_ENV
      })
      const { key } = await createKey(server, "partner")
      await priceWith(server, key)
      const stoppedAt = Date.now()
      expect(await server.stop()).toBe(0)
      expect(Date.now() - stoppedAt).toBeLessThan(3_000)
    } finally {
      silent.close()
    }
  }, 90_000)
})
