import { get } from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { histogramCount, scrape } from "./support/prometheus.ts"
import { admin, createKey, type RunningServer, startServer } from "./support/server.ts"

/** One request on a connection of its own, so the node's workers take turns answering. */
const answerOnFreshConnection = (server: RunningServer, path: string, key: string): Promise<{ status: number; node: string }> =>
  new Promise((resolve, reject) => {
    const req = get(`${server.baseUrl}${path}`, { agent: false, headers: { "x-api-key": key } }, (res) => {
      let body = ""
      res.on("data", (d: Buffer) => void (body += d.toString()))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, node: (JSON.parse(body) as { node: string }).node }))
    })
    req.on("error", reject)
  })

describe("LPO_WORKERS > 1 without Valkey", () => {
  let server: RunningServer
  beforeAll(async () => {
    server = await startServer({ LPO_WORKERS: "2" })
  }, 90_000)
  afterAll(async () => {
    expect(await server?.stop()).toBe(0)
  })

  it("a revoked key is refused at once by every worker, not only the one that took the revocation", async () => {
    const { key, key_id } = await createKey(server, "associate")
    // /ready answered by one worker says nothing of the other: wait until both answer.
    const nodes = new Set<string>()
    for (let i = 0; i < 200 && nodes.size < 2; i++) {
      nodes.add((await answerOnFreshConnection(server, "/health", key)).node)
      if (nodes.size < 2) await new Promise((r) => setTimeout(r, 100))
    }
    const before = await Promise.all(Array.from({ length: 12 }, () => answerOnFreshConnection(server, "/price?asset=BTC", key)))
    expect(before.every((a) => a.status === 200)).toBe(true)
    expect(new Set(before.map((a) => a.node)).size, "both workers knew the key").toBe(2)
    expect((await admin(server, "POST", "/admin/revoke-key", { key_id })).status).toBe(200)
    await new Promise((r) => setTimeout(r, 200))
    const after: Array<{ status: number; node: string }> = []
    for (let i = 0; i < 12; i++) after.push(await answerOnFreshConnection(server, "/price?asset=BTC", key))
    expect(new Set(after.map((a) => a.node)).size, "both workers answered").toBe(2)
    expect(after.map((a) => a.status)).toEqual(Array.from({ length: 12 }, () => 403))
  }, 30_000)

  it("/metrics (served by the primary) sums every worker's series", async () => {
    const { key } = await createKey(server, "associate")
    const answers = await Promise.all(Array.from({ length: 10 }, () => answerOnFreshConnection(server, "/price?asset=BTC", key)))
    const nodes = new Set(answers.map((a) => a.node))
    await new Promise((r) => setTimeout(r, 300))
    const s = await scrape(server.metricsUrl)
    const total = s.families.get("tb_price_hits_total")?.metrics[0]?.value
    expect(nodes.size).toBe(2)
    expect(Number(total)).toBeGreaterThanOrEqual(answers.filter((a) => a.status === 200).length + 12)
    const priced = histogramCount(s, "http_server_request_duration_seconds", { service: "LPO", http_route: "/price", http_response_status_code: "200" })
    expect(priced).toBeGreaterThanOrEqual(answers.filter((a) => a.status === 200).length + 12)
  }, 30_000)
})
