/**
 * The partner stream through `tb serve` (FEEDS=simulated, real PostgreSQL): the LPO's own wiring
 * of /ws (fast path → node:http upgrade) and /stream, keys from the database, prices from the
 * simulators, usage rows in usage_logs, and a RECONNECT notice on SIGTERM.
 */
import { get as httpGet } from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { WebSocket } from "ws"
import { createKey, type RunningServer, startServer } from "./support/server.ts"
import { dropDatabase, freshDatabase, psqlLines } from "./support/services.ts"

let server: RunningServer
let dbUrl: string

beforeAll(async () => {
  dbUrl = freshDatabase("stream_blackbox")
  server = await startServer({ DATABASE_URL: dbUrl })
}, 90_000)

afterAll(async () => {
  await server?.stop()
  dropDatabase(dbUrl)
})

const psqlRows = (sql: string) => psqlLines(dbUrl, sql)

const wsUrl = () => `${server.baseUrl.replace("http", "ws")}/ws`

interface Message {
  readonly type: string
  readonly seq: number
  readonly [field: string]: unknown
}

/** Connects, sends `first`, collects messages until `until` holds (or `ms` pass). */
const session = (headers: Record<string, string>, first: ReadonlyArray<unknown>, until: (ms: ReadonlyArray<Message>) => boolean, ms = 10_000) =>
  new Promise<{ messages: ReadonlyArray<Message>; ws: WebSocket }>((resolve, reject) => {
    const ws = new WebSocket(wsUrl(), { headers })
    const messages: Array<Message> = []
    const timer = setTimeout(() => resolve({ messages, ws }), ms)
    ws.on("open", () => {
      for (const m of first) ws.send(JSON.stringify(m))
    })
    ws.on("message", (data) => {
      messages.push(JSON.parse(String(data)) as Message)
      if (until(messages)) {
        clearTimeout(timer)
        resolve({ messages, ws })
      }
    })
    ws.on("unexpected-response", (_req, res) => {
      clearTimeout(timer)
      let body = ""
      res.on("data", (d: Buffer) => void (body += d.toString()))
      res.on("end", () => reject(Object.assign(new Error(`refused ${res.statusCode}`), { status: res.statusCode, body })))
    })
    ws.on("error", reject)
  })

describe("partner stream through tb serve (black box)", () => {
  it("streams simulated prices to a partner key over /ws and /stream, refuses other tiers, logs usage rows", async () => {
    const partner = await createKey(server, "partner")
    const { messages, ws } = await session({ "x-api-key": partner.key }, [{ type: "subscribe", assets: ["BTC", "ETH"] }],
      (ms) => ms.filter((m) => m.type === "price_update").length >= 4)
    expect(messages[0]).toMatchObject({ type: "response", status: "success", assets: ["BTC", "ETH"], seq: 1 })
    const updates = messages.filter((m) => m.type === "price_update")
    expect(updates.length).toBeGreaterThanOrEqual(4)
    for (const u of updates) expect(u["price"]).toBeGreaterThan(0)
    expect(messages.map((m) => m.seq)).toEqual(messages.map((_, i) => i + 1))
    const closed = new Promise<number>((r) => ws.once("close", (code) => r(code)))
    ws.close(1000)
    await closed

    // Browser style: the key as the first message.
    const byMessage = await session({}, [{ type: "auth", key: partner.key }, { type: "subscribe", assets: ["SOL"] }], (ms) => ms.some((m) => m.type === "price_update"))
    expect(byMessage.messages.slice(0, 2)).toMatchObject([{ type: "response", code: "OK" }, { type: "response", code: "OK", assets: ["SOL"] }])
    byMessage.ws.terminate()

    const associate = await createKey(server, "associate")
    const refused = await session({ "x-api-key": associate.key }, [], () => true).then(() => undefined, (e: { status?: number; body?: string }) => e)
    expect(refused?.status).toBe(403)
    expect(JSON.parse(refused?.body ?? "{}")).toMatchObject({ success: false, service: "LPO" })

    const sse = await new Promise<string>((resolve) => {
      httpGet(`${server.baseUrl}/stream?assets=BTC`, { headers: { "x-api-key": partner.key } }, (res) => {
        let text = ""
        res.setEncoding("utf8")
        res.on("data", (chunk: string) => {
          text += chunk
          if (text.includes("event: price_update")) {
            res.destroy()
            resolve(text)
          }
        })
      })
    })
    expect(sse).toMatch(/^event: response\nid: 1\ndata: \{"type":"response","status":"success"/)

    // The rows are written at shutdown at the latest; a stream open at SIGTERM is told to reconnect.
    const open = await session({ "x-api-key": partner.key }, [{ type: "subscribe", assets: ["BTC"] }], (ms) => ms.some((m) => m.type === "price_update"))
    const notice = new Promise<Message>((resolve) => open.ws.on("message", (data) => {
      const m = JSON.parse(String(data)) as Message
      if (m.type === "response") resolve(m)
    }))
    const stopped = server.stop()
    expect(await notice).toMatchObject({ status: "error", code: "RECONNECT" })
    expect(await stopped).toBe(0)
    const rows = psqlRows(`SELECT endpoint, protocol, status_code, bytes_out > 0 FROM usage_logs WHERE api_key_id = '${partner.key_id}' ORDER BY created_at, endpoint`)
    expect(rows).toContain("/ws ws 101 f")
    expect(rows).toContain("/ws:subscribe ws 200 f")
    expect(rows).toContain("/ws:close ws 200 t")
    expect(rows).toContain("/stream http 200 f")
    expect(rows).toContain("/stream:close http 200 t")
    expect(rows.filter((r) => r.startsWith("/ws:close"))).toHaveLength(3)
    expect(psqlRows(`SELECT count(*) FROM usage_logs WHERE api_key_id = '${associate.key_id}' AND endpoint = '/ws' AND status_code = 403`)).toEqual(["1"])
  }, 60_000)
})
