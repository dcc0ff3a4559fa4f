/**
 * Spec "Storage": requests without a valid key are logged up to `anonymous_rows_per_ip_per_s`
 * (default 10) per client address per second; past that they are only counted. Black box: a
 * flood of keyless and random-key requests from one address against `tb serve`.
 */
import { randomBytes } from "node:crypto"
import { createSocket } from "node:dgram"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { admin, call, type RunningServer, startServer } from "./support/server.ts"
import { dropDatabase, freshDatabase, psqlLines } from "./support/services.ts"

let server: RunningServer
let dbUrl: string

beforeAll(async () => {
  dbUrl = freshDatabase("anonymous_rows")
  server = await startServer({ DATABASE_URL: dbUrl })
}, 90_000)

afterAll(async () => {
  await server?.stop()
  dropDatabase(dbUrl)
})

const psqlRows = (sql: string) => psqlLines(dbUrl, sql)

/** A well-formed key nobody holds: each one costs the server a database lookup. */
const randomKey = () => `tb_${randomBytes(32).toString("base64url")}`

/** Send every datagram from one socket; resolves the replies received within `waitMs` of the last. */
const udpFlood = (port: number, payloads: ReadonlyArray<string>, waitMs: number) =>
  new Promise<number>((resolve) => {
    const socket = createSocket("udp4")
    let replies = 0
    socket.on("message", () => void replies++)
    for (const p of payloads) socket.send(p, port, "127.0.0.1")
    setTimeout(() => {
      socket.close()
      resolve(replies)
    }, waitMs)
  })

describe("usage rows of requests without a valid key (black box)", () => {
  it("are written up to anonymous_rows_per_ip_per_s per client address per second; the rest are counted in anonymous_rows_dropped", async () => {
    const statuses = await Promise.all(Array.from({ length: 300 }, (_, i) => {
      const headers: Record<string, string> = i % 4 === 0 ? {} : { "x-api-key": i % 4 === 1 ? "garbage" : randomKey() }
      return call(server, i % 4 === 3 ? "/nowhere" : "/price?asset=BTC", { headers }).then((r) => r.status)
    }))
    const udpReplies = await udpFlood(server.udpPort, Array.from({ length: 100 }, (_, i) => `v1 price ${randomKey()} BTC u${i}`), 1_000)
    // Admin paths without the token are as anonymous as any other request.
    const adminStatuses = await Promise.all(Array.from({ length: 100 }, () => call(server, "/admin/nope").then((r) => r.status)))
    expect(adminStatuses.every((s) => s === 401 || s === 404)).toBe(true)
    expect(statuses.every((s) => s === 401 || s === 404 || s === 503)).toBe(true)
    expect(udpReplies).toBeGreaterThan(0)
    const stats = await admin(server, "GET", "/admin/stress-stats")
    const counters = (stats.body.data as { counters: Record<string, number> }).counters
    // The rows left in the buffer are written at shutdown.
    expect(await server.stop()).toBe(0)

    const perSecond = psqlRows(`SELECT client_ip, count(*) FROM usage_logs WHERE api_key_id IS NULL AND status_code >= 400
      GROUP BY client_ip, date_trunc('second', created_at) ORDER BY 2 DESC`)
    const written = perSecond.reduce((sum, line) => sum + Number(line.split(" ")[1]), 0)
    expect(perSecond.length).toBeGreaterThan(0)
    for (const line of perSecond) {
      const [address, rows] = line.split(" ")
      expect(address).toBe("127.0.0.1")
      expect(Number(rows)).toBeLessThanOrEqual(10)
    }
    // Every answered request without a key is a row or a count: 300 over HTTP, and each datagram
    // the UDP handler took, unless it was refused silently (no reply, no row).
    const answered = 300 + 100 + counters["udp_requests"]! - counters["udp_silent_drops"]!
    expect({ total: written + counters["anonymous_rows_dropped"]!, dropped: counters["anonymous_rows_dropped"]! > 0 }).toEqual({ total: answered, dropped: true })
    // Served admin rows (no key either, but the token checked) are never held back.
    const adminRows = psqlRows(`SELECT count(*) FROM usage_logs WHERE service = 'ADMIN' AND status_code < 400`)
    expect(Number(adminRows[0])).toBeGreaterThanOrEqual(1)
  }, 60_000)
})
