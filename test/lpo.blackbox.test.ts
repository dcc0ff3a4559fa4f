import { Schema } from "effect"
import { execFileSync } from "node:child_process"
import { createSocket } from "node:dgram"
import { request as httpRequest } from "node:http"
import { connect } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Envelope } from "../src/domain/envelope.ts"
import { admin, call, createKey, priceWith, type RunningServer, startServer, udpRequest } from "./support/server.ts"
import { dropDatabase, freshDatabase, freshRedis } from "./support/services.ts"

const decodeEnvelope = Schema.decodeUnknownSync(Envelope, { onExcessProperty: "error" })

let server: RunningServer
let dbUrl: string

beforeAll(async () => {
  dbUrl = freshDatabase("blackbox")
  server = await startServer({ DATABASE_URL: dbUrl, VALKEY_URL: freshRedis(1) })
}, 90_000)

afterAll(async () => {
  expect(await server?.stop()).toBe(0)
  dropDatabase(dbUrl)
})

describe("LPO over HTTP (black box)", () => {
  it("answers /health and /ready in the 12-field envelope", async () => {
    for (const path of ["/health", "/ready"]) {
      const r = await call(server, path)
      expect(r.status).toBe(200)
      const env = decodeEnvelope(r.body)
      expect(Object.keys(r.body)).toHaveLength(12)
      expect(env.service).toBe("LPO")
      expect(env.code).toBe("OK")
    }
    const health = await call(server, "/health")
    const feeds = (health.body.data as { feeds: { connected: number; total: number } }).feeds
    expect(feeds.connected).toBe(6)
    expect(feeds.total).toBe(6)
  })

  it("serves a consensus price with its sources to a valid key", async () => {
    const { key } = await createKey(server, "associate")
    const r = await priceWith(server, key, "asset=btc")
    expect(r.status).toBe(200)
    decodeEnvelope(r.body)
    const data = r.body.data as { asset: string; quote: string; price: number; method: string; sources: Array<{ exchange: string; price: number; age_ms: number }>; spread_bps: number; ts: number; age_ms: number; stale: boolean }
    expect(data.asset).toBe("BTC")
    expect(data.quote).toBe("USD")
    expect(data.method).toBe("median")
    expect(data.sources.length).toBeGreaterThanOrEqual(3)
    const prices = data.sources.map((s) => s.price)
    expect(data.price).toBeGreaterThanOrEqual(Math.min(...prices))
    expect(data.price).toBeLessThanOrEqual(Math.max(...prices))
    expect(data.ts).toBe(Math.max(...data.sources.map((s) => (s as unknown as { ts: number }).ts)))
    expect(data.stale).toBe(false)
    expect(r.headers.get("ratelimit-limit")).toBe("1000")
  })

  it("answers one exchange with source= and USDT markets alone with quote=USDT", async () => {
    const { key } = await createKey(server, "associate")
    const single = await priceWith(server, key, "asset=ETH&source=kraken")
    const singleData = single.body.data as { method: string; sources: Array<{ exchange: string }> }
    expect(singleData.method).toBe("single")
    expect(singleData.sources.map((s) => s.exchange)).toEqual(["kraken"])
    // Five venues have an enabled ETH/USDT market in the seed; wait until each has sent its first ETH tick.
    let exchanges: Array<string> = []
    for (let i = 0; i < 30 && exchanges.length < 5; i++) {
      const usdt = await priceWith(server, key, "asset=ETH&quote=USDT")
      exchanges = (usdt.body.data as { sources: Array<{ exchange: string }> }).sources.map((s) => s.exchange).sort()
      if (exchanges.length < 5) await new Promise((r) => setTimeout(r, 100))
    }
    expect(exchanges).toEqual(["coinbase", "cryptocom", "gateio", "kraken", "okx"])
  })

  it("answers /prices with found prices and missing assets", async () => {
    const { key } = await createKey(server, "associate")
    const r = await call(server, "/prices?assets=BTC,ETH,NOTACOIN", { headers: { authorization: `Bearer ${key}` } })
    expect(r.status).toBe(200)
    const data = r.body.data as { prices: Array<{ asset: string }>; missing: Array<string> }
    expect(data.prices.map((p) => p.asset)).toEqual(["BTC", "ETH"])
    expect(data.missing).toEqual(["NOTACOIN"])
  })

  it("refuses with the envelope's codes and statuses", async () => {
    const { key } = await createKey(server, "associate")
    const cases: Array<[string, Record<string, string>, number, string]> = [
      ["/price?asset=BTC", {}, 401, "MISSING_API_KEY"],
      ["/price?asset=BTC", { "x-api-key": "tb_notarealkeynotarealkeynotarealkeynotarealkey" }, 401, "INVALID_API_KEY"],
      ["/price?asset=BTC", { "x-api-key": "garbage" }, 401, "INVALID_API_KEY"],
      ["/price", { "x-api-key": key }, 400, "BAD_REQUEST"],
      ["/price?asset=B%20TC", { "x-api-key": key }, 400, "BAD_REQUEST"],
      ["/price?asset=BTC&source=binance", { "x-api-key": key }, 400, "BAD_REQUEST"],
      ["/price?asset=NOTACOIN", { "x-api-key": key }, 404, "UNKNOWN_ASSET"],
      ["/price?asset=BTC&quote=XYZ", { "x-api-key": key }, 404, "UNKNOWN_ASSET"],
      ["/nowhere", {}, 404, "NOT_FOUND"]
    ]
    for (const [path, headers, status, code] of cases) {
      const r = await call(server, path, { headers })
      expect({ path, status: r.status, code: r.body.code }).toEqual({ path, status, code })
      expect(r.body.success).toBe(false)
      decodeEnvelope(r.body)
    }
  })

  it("translates messages and echoes X-Request-Id", async () => {
    const en = await call(server, "/price?asset=BTC")
    const es = await call(server, "/price?asset=BTC&lang=es")
    const ja = await call(server, "/price?asset=BTC", { headers: { "accept-language": "ja-JP,ja;q=0.9", "x-request-id": "client-42" } })
    expect(es.body["lang"]).toBe("es")
    expect(ja.body["lang"]).toBe("ja")
    expect(new Set([en.body["message"], es.body["message"], ja.body["message"]]).size).toBe(3)
    expect(ja.body["request_id"]).toBe("client-42")
    expect(ja.headers.get("x-request-id")).toBe("client-42")
  })

  it("authenticates every request of one keep-alive connection by its own key, whatever the connection sent before", async () => {
    // The fast server remembers a connection's last key and hash (KeyHashMemo): a changed key must
    // never be answered as the remembered one.
    const a = await createKey(server, "associate")
    const b = await createKey(server, "partner")
    const revoked = await createKey(server, "associate")
    expect((await admin(server, "POST", "/admin/revoke-key", { key_id: revoked.key_id })).status).toBe(200)
    const lastCharChanged = a.key.slice(0, -1) + (a.key.endsWith("A") ? "B" : "A")
    const keys = [a.key, b.key, a.key, revoked.key, lastCharChanged, a.key, "not-a-key", a.key, b.key]
    const socket = connect(Number(new URL(server.baseUrl).port), "127.0.0.1")
    socket.write(keys.map((k) => `GET /price?asset=BTC HTTP/1.1\r\nhost: x\r\nx-api-key: ${k}\r\n\r\n`).join(""))
    const answers: Array<{ code: string; limit: string | undefined }> = []
    let buffered = ""
    await new Promise<void>((resolve, reject) => {
      socket.on("error", reject)
      socket.on("data", (chunk: Buffer) => {
        buffered += chunk.toString("latin1")
        for (;;) {
          const end = buffered.indexOf("\r\n\r\n")
          const length = Number(/content-length: (\d+)/i.exec(buffered.slice(0, end))?.[1])
          if (end === -1 || buffered.length < end + 4 + length) break
          const head = buffered.slice(0, end)
          answers.push({
            code: (JSON.parse(buffered.slice(end + 4, end + 4 + length)) as { code: string }).code,
            limit: /ratelimit-limit: (\d+)/i.exec(head)?.[1]
          })
          buffered = buffered.slice(end + 4 + length)
        }
        if (answers.length === keys.length) resolve()
      })
    })
    socket.destroy()
    expect(answers).toEqual([
      { code: "OK", limit: "1000" },
      { code: "OK", limit: "10000" },
      { code: "OK", limit: "1000" },
      { code: "KEY_REVOKED", limit: undefined },
      { code: "INVALID_API_KEY", limit: undefined },
      { code: "OK", limit: "1000" },
      { code: "INVALID_API_KEY", limit: undefined },
      { code: "OK", limit: "1000" },
      { code: "OK", limit: "10000" }
    ])
  })

  it("refuses revoked and expired keys, on this node after /admin/invalidate-key", async () => {
    const revoked = await createKey(server, "associate")
    expect((await priceWith(server, revoked.key)).status).toBe(200)
    expect((await admin(server, "POST", "/admin/revoke-key", { key_id: revoked.key_id })).status).toBe(200)
    const r1 = await priceWith(server, revoked.key)
    expect([r1.status, r1.body.code]).toEqual([403, "KEY_REVOKED"])

    const expired = await createKey(server, "associate")
    expect((await priceWith(server, expired.key)).status).toBe(200)
    execFileSync("psql", [dbUrl, "-qc", `UPDATE api_keys SET expires_at = now() - interval '1 minute', updated_at = now() WHERE id = '${expired.key_id}'`])
    expect((await admin(server, "POST", "/admin/invalidate-key", { key_id: expired.key_id })).status).toBe(200)
    const r2 = await priceWith(server, expired.key)
    expect([r2.status, r2.body.code]).toEqual([403, "KEY_EXPIRED"])
  })

  it("rate limits a demo key at its burst, with RateLimit and Retry-After headers", async () => {
    const { key } = await createKey(server, "demo")
    const statuses: Array<number> = []
    let limited: Awaited<ReturnType<typeof priceWith>> | undefined
    for (let i = 0; i < 14; i++) {
      const r = await priceWith(server, key)
      statuses.push(r.status)
      if (r.status === 429) limited = r
    }
    // Burst 10 at 5/s: the requests above take well under 200 ms, so at most one token refills.
    const ok = statuses.filter((s) => s === 200).length
    expect(ok).toBeGreaterThanOrEqual(10)
    expect(ok).toBeLessThanOrEqual(11)
    expect(limited?.body.code).toBe("RATE_LIMITED")
    expect(Number(limited?.headers.get("retry-after"))).toBeGreaterThanOrEqual(1)
    expect(limited?.headers.get("ratelimit-limit")).toBe("10")
    expect(limited?.headers.get("ratelimit-remaining")).toBe("0")
  })

  it("guards admin endpoints with the admin token", async () => {
    const none = await call(server, "/admin/stress-stats")
    expect([none.status, none.body.code, none.body["service"]]).toEqual([401, "MISSING_API_KEY", "ADMIN"])
    const wrong = await call(server, "/admin/stress-stats", { headers: { "x-admin-token": "nope" } })
    expect([wrong.status, wrong.body.code]).toEqual([401, "INVALID_API_KEY"])
    const stats = await admin(server, "GET", "/admin/stress-stats")
    const counters = (stats.body.data as { counters: Record<string, number> }).counters
    expect(Object.keys(counters)).toHaveLength(25)
    expect(counters["requests_total"]).toBeGreaterThan(0)
  })

  it("answers requests sent as through a proxy (absolute-form target), on the price path and the admin path", async () => {
    /** A request whose request line carries the whole URL, as an HTTP client talking to a proxy sends it. */
    const viaProxy = (method: string, url: string, headers: Record<string, string>, body?: unknown) =>
      new Promise<{ status: number; code: unknown }>((resolve, reject) => {
        const target = new URL(url)
        const req = httpRequest({ host: target.hostname, port: target.port, method, path: url, headers }, (res) => {
          let text = ""
          res.on("data", (c: Buffer) => void (text += c.toString()))
          res.on("end", () => resolve({ status: res.statusCode ?? 0, code: (JSON.parse(text) as { code: unknown }).code }))
        })
        req.on("error", reject)
        req.end(body === undefined ? undefined : JSON.stringify(body))
      })
    const created = await viaProxy("POST", `${server.baseUrl}/admin/keys`, { "x-admin-token": server.adminToken }, { tier: "demo" })
    expect(created).toEqual({ status: 201, code: "OK" })
    const { key } = await createKey(server, "associate")
    expect(await viaProxy("GET", `${server.baseUrl}/price?asset=BTC`, { "x-api-key": key })).toEqual({ status: 200, code: "OK" })
  })

  it("switches to maintenance and back", async () => {
    const { key } = await createKey(server, "associate")
    expect((await admin(server, "POST", "/admin/system-mode", { mode: "maintenance" })).status).toBe(200)
    const r = await priceWith(server, key)
    expect([r.status, r.body.code]).toEqual([503, "MAINTENANCE"])
    expect((await admin(server, "POST", "/admin/system-mode", { mode: "normal" })).status).toBe(200)
    expect((await priceWith(server, key)).status).toBe(200)
    const badMode = await admin(server, "POST", "/admin/system-mode", { mode: "off" })
    expect(badMode.body.code).toBe("BAD_REQUEST")
  })

  it("reads and sets parameters, refusing invalid values", async () => {
    const set = await admin(server, "POST", "/admin/params", { usage_flush_ms: "300" })
    expect(set.status).toBe(200)
    const list = (set.body.data as { params: Array<{ name: string; value: string }> }).params
    expect(list.find((p) => p.name === "usage_flush_ms")?.value).toBe("300")
    const bad = await admin(server, "POST", "/admin/params", { usage_flush_ms: "soon" })
    expect(bad.body.code).toBe("BAD_REQUEST")
    const unknown = await admin(server, "POST", "/admin/params", { drop_table: "users" })
    expect(unknown.body.code).toBe("BAD_REQUEST")
    const profile = await admin(server, "POST", "/admin/params", { profile: "default" })
    expect(profile.status).toBe(200)
  })

  it("reports feed status per exchange", async () => {
    const r = await admin(server, "GET", "/admin/feed-status")
    const data = r.body.data as { mode: string; exchanges: Array<{ exchange: string; connected: boolean; markets: number }> }
    expect(data.mode).toBe("simulated")
    expect(data.exchanges.map((e) => e.exchange).sort()).toEqual(["coinbase", "cryptocom", "gateio", "gemini", "kraken", "okx"])
    expect(data.exchanges.every((e) => e.connected && e.markets > 0)).toBe(true)
  })
})

describe("LPO over UDP (black box)", () => {
  it("answers a valid request with the price and echoes the rid", async () => {
    const { key } = await createKey(server, "associate")
    const reply = await udpRequest(server.udpPort, `v1 price ${key} ETH/USD req-1`)
    const parsed = JSON.parse(reply ?? "null") as Record<string, unknown>
    expect(Object.keys(parsed)).toEqual(["ok", "rid", "asset", "quote", "price", "source", "ts", "age_ms"])
    expect(parsed).toMatchObject({ ok: true, rid: "req-1", asset: "ETH", quote: "USD", source: "consensus" })
    expect(typeof parsed["price"]).toBe("number")
  })

  it("never sends a reply longer than a malformed or unauthenticated request", async () => {
    const payloads = ["x", "v1", "v1 price", "garbage datagram", "v1 price tb_nope BTC", `v1 price ${"k".repeat(60)} BTC r`, "v1  price a BTC", "\u0000\u0001\u0002"]
    for (const p of payloads) {
      const reply = await udpRequest(server.udpPort, p, 300)
      if (reply !== undefined) expect(Buffer.byteLength(reply)).toBeLessThanOrEqual(Buffer.byteLength(p))
    }
    // The socket survived: a valid request still gets its answer.
    const { key } = await createKey(server, "associate")
    expect(await udpRequest(server.udpPort, `v1 price ${key} BTC`)).toContain("\"ok\":true")
  })

  it("authenticates every datagram from one client socket by its own key, whatever it sent before", async () => {
    // The server remembers each client socket's last key and hash (KeyHashMemo).
    const a = await createKey(server, "associate")
    const revoked = await createKey(server, "associate")
    expect((await admin(server, "POST", "/admin/revoke-key", { key_id: revoked.key_id })).status).toBe(200)
    const lastCharChanged = a.key.slice(0, -1) + (a.key.endsWith("A") ? "B" : "A")
    const socket = createSocket("udp4")
    const replies = new Map<string, Record<string, unknown>>()
    socket.on("message", (m) => {
      const reply = JSON.parse(m.toString()) as Record<string, unknown>
      replies.set(String(reply["rid"]), reply)
    })
    const sent = [a.key, revoked.key, lastCharChanged, a.key, lastCharChanged, a.key]
    for (const [i, key] of sent.entries()) {
      socket.send(`v1 price ${key} BTC r${i}`, server.udpPort, "127.0.0.1")
      // One at a time: the memo is read and written in the order datagrams arrive.
      for (let t = 0; t < 100 && !replies.has(`r${i}`); t++) await new Promise((r) => setTimeout(r, 10))
    }
    socket.close()
    expect(sent.map((_, i) => replies.get(`r${i}`)?.["ok"] === true ? "OK" : replies.get(`r${i}`)?.["code"])).toEqual(
      ["OK", "KEY_REVOKED", "INVALID_API_KEY", "OK", "INVALID_API_KEY", "OK"]
    )
  })

  it("reports refusals for an authenticated key as codes", async () => {
    const { key } = await createKey(server, "associate")
    const unknown = await udpRequest(server.udpPort, `v1 price ${key} NOTACOIN r9`)
    expect(JSON.parse(unknown ?? "null")).toEqual({ ok: false, rid: "r9", code: "UNKNOWN_ASSET" })
  })
})
