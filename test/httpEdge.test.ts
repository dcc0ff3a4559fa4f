import { Schema } from "effect"
import { connect } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Envelope } from "../src/domain/envelope.ts"
import { admin, call, createKey, type RunningServer, startServer } from "./support/server.ts"

const decodeEnvelope = Schema.decodeUnknownSync(Envelope, { onExcessProperty: "error" })
const ORIGIN = "https://app.example.com"

let server: RunningServer

beforeAll(async () => {
  server = await startServer({ CORS_ORIGINS: `${ORIGIN}, https://other.example.org` })
}, 90_000)

afterAll(async () => {
  expect(await server?.stop()).toBe(0)
})

interface OpenApiDoc {
  readonly openapi: string
  readonly paths: Record<string, Record<string, unknown>>
}

const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"] as const

/** Raw bytes in, raw answer out (the connection closed by the server or after `ms`). */
const rawExchange = (bytes: string, ms = 2000): Promise<string> =>
  new Promise((resolve) => {
    const socket = connect(Number(new URL(server.baseUrl).port), "127.0.0.1")
    let out = ""
    const timer = setTimeout(() => socket.destroy(), ms)
    socket.on("data", (d) => void (out += d.toString("latin1")))
    socket.on("close", () => {
      clearTimeout(timer)
      resolve(out)
    })
    socket.on("error", () => undefined)
    socket.write(bytes, "latin1")
  })

/** The report routes: the LRS's listener answers them (test/lrs.blackbox.test.ts), the LPO's only points there. */
const servedByTheLrs = (path: string) => path.startsWith("/reports/")

describe("the HTTP API definition", () => {
  it("serves an OpenAPI 3.1 document and a readable page, without a key", async () => {
    const doc = await fetch(`${server.baseUrl}/openapi.json`)
    expect(doc.status).toBe(200)
    const body = await doc.json() as OpenApiDoc
    expect(body.openapi).toMatch(/^3\.1\./)
    expect(Object.keys(body.paths)).toEqual(expect.arrayContaining(["/price", "/prices", "/health", "/ready", "/admin/keys", "/openapi.json", "/docs"]))
    const page = await fetch(`${server.baseUrl}/docs`)
    expect(page.status).toBe(200)
    expect(page.headers.get("content-type")).toMatch(/^text\/html/)
    const html = await page.text()
    expect(html).toContain("/admin/keys")
    expect(html).not.toMatch(/<script[^>]+src=/) // works offline: the script is in the page, not fetched from a CDN
  })

  it("answers every documented route, and only those: other methods 405 with Allow, other paths 404", async () => {
    const body = await (await fetch(`${server.baseUrl}/openapi.json`)).json() as OpenApiDoc
    for (const [path, operations] of Object.entries(body.paths)) {
      const declared = Object.keys(operations).map((m) => m.toUpperCase())
      for (const method of METHODS) {
        const res = await fetch(`${server.baseUrl}${path}`, { method, headers: { "x-admin-token": server.adminToken } })
        await res.arrayBuffer()
        if (declared.includes(method) && servedByTheLrs(path)) {
          // Documented in the one definition, served on LRS_HTTP_PORT: here a 404 that says where.
          expect(res.status, `${method} ${path} on the LPO's port`).toBe(404)
        } else if (declared.includes(method)) {
          expect([404, 405], `${method} ${path} is documented but answered ${res.status}`).not.toContain(res.status)
        } else {
          expect(res.status, `${method} ${path} is not documented`).toBe(405)
          const allow = (res.headers.get("allow") ?? "").split(",").map((m) => m.trim()).sort()
          const expected = [...declared, ...(declared.includes("GET") ? ["HEAD"] : [])].sort()
          expect(allow).toEqual(expected)
        }
      }
    }
    // The paths the fast path claims are in the document too (they are routed outside HttpApi).
    const { FAST_PATH_ROUTES } = await import("../src/programs/lpo/LpoHttpServer.ts")
    for (const path of FAST_PATH_ROUTES) expect(Object.keys(body.paths)).toContain(path)
    for (const path of ["/nope", "/admin/nope", "/price/extra", "/openapi"]) {
      const r = await call(server, path, { headers: { "x-admin-token": server.adminToken } })
      expect(r.status, path).toBe(404)
      expect(r.body.code).toBe("NOT_FOUND")
    }
  })

  it("answers a wrong method with 405 METHOD_NOT_ALLOWED in the envelope", async () => {
    const r = await call(server, "/price?asset=BTC", { method: "POST", body: {} })
    expect(r.status).toBe(405)
    expect(r.headers.get("allow")).toBe("GET, HEAD")
    decodeEnvelope(r.body)
    expect(r.body.code).toBe("METHOD_NOT_ALLOWED")
  })

  it("answers HEAD wherever GET works: same status and headers, no body", async () => {
    for (const path of ["/health", "/price?asset=BTC", "/openapi.json"]) {
      const get = await fetch(`${server.baseUrl}${path}`)
      const getBody = await get.arrayBuffer()
      const head = await fetch(`${server.baseUrl}${path}`, { method: "HEAD" })
      expect(head.status, path).toBe(get.status)
      expect((await head.arrayBuffer()).byteLength, path).toBe(0)
      // The same answer (its latency_us may differ by a digit), announced but not sent.
      expect(Math.abs(Number(head.headers.get("content-length")) - getBody.byteLength), path).toBeLessThanOrEqual(2)
    }
  })
})

describe("admin endpoints through the definition", () => {
  it("refuses bad input with BAD_REQUEST, saying what was wrong, in the caller's language", async () => {
    const r = await call(server, "/admin/keys?lang=es", { method: "POST", headers: { "x-admin-token": server.adminToken }, body: { tier: 5 } })
    expect(r.status).toBe(400)
    decodeEnvelope(r.body)
    expect(r.body.code).toBe("BAD_REQUEST")
    expect(r.body.lang).toBe("es")
    expect(r.body.message).toBe("La solicitud no es válida; revise sus parámetros.")
    expect((r.body.data as { error: string }).error).toMatch(/tier/)
    const notJson = await fetch(`${server.baseUrl}/admin/keys`, { method: "POST", headers: { "x-admin-token": server.adminToken }, body: "{not json" })
    expect(notJson.status).toBe(400)
    expect((await notJson.json() as { code: string }).code).toBe("BAD_REQUEST")
    const unknownTier = await admin(server, "POST", "/admin/keys", { tier: "platinum" })
    expect(unknownTier.status).toBe(400)
  })

  it("localises its own refusals and the token's", async () => {
    const r = await call(server, "/admin/keys", { headers: { "x-admin-token": "not-the-token-at-all", "accept-language": "de" } })
    expect(r.status).toBe(401)
    expect(r.body.code).toBe("INVALID_API_KEY")
    expect(r.body.lang).toBe("de")
    expect(r.body.message).toBe("Der API-Schlüssel ist ungültig.")
    const missing = await call(server, "/admin/keys")
    expect(missing.body.code).toBe("MISSING_API_KEY")
    const revoke = await call(server, "/admin/revoke-key?lang=fr", { method: "POST", headers: { "x-admin-token": server.adminToken }, body: { key_id: "no-such-key" } })
    expect(revoke.status).toBe(404)
    expect(revoke.body.message).toBe("Introuvable.")
  })

  it("names JSON fields in snake_case everywhere", async () => {
    await createKey(server, "demo")
    const camel: Array<string> = []
    const walk = (value: unknown, at: string): void => {
      if (Array.isArray(value)) return value.forEach((v, i) => walk(v, `${at}[${i}]`))
      if (typeof value !== "object" || value === null) return
      for (const [k, v] of Object.entries(value)) {
        if (/[A-Z]/.test(k)) camel.push(`${at}.${k}`)
        walk(v, `${at}.${k}`)
      }
    }
    for (const path of ["/admin/keys", "/admin/feed-status", "/admin/stress-stats", "/admin/cluster-stats", "/admin/params", "/admin/system-mode", "/health"]) {
      const r = await admin(server, "GET", path)
      expect(r.status, path).toBe(200)
      walk(r.body, path)
    }
    expect(camel).toEqual([])
  })
})

describe("503, 429 and refusals at the edge", () => {
  it("puts Retry-After on every 503", async () => {
    const { key } = await createKey(server, "associate")
    expect((await admin(server, "POST", "/admin/system-mode", { mode: "maintenance" })).status).toBe(200)
    try {
      const r = await call(server, "/price?asset=BTC", { headers: { "x-api-key": key } })
      expect(r.status).toBe(503)
      expect(r.body.code).toBe("MAINTENANCE")
      expect(Number(r.headers.get("retry-after"))).toBeGreaterThan(0)
    } finally {
      await admin(server, "POST", "/admin/system-mode", { mode: "normal" })
    }
    const unknownAsset = await call(server, "/price?asset=NOSUCHCOIN", { headers: { "x-api-key": key } })
    if (unknownAsset.status === 503) expect(unknownAsset.headers.get("retry-after")).not.toBeNull()
  })

  it("answers a readable request line whose head llhttp refuses 400 in the envelope; an unreadable line gets a bare 400", async () => {
    const out = await rawExchange("GET /price?asset=BTC HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n")
    expect(out).toMatch(/^HTTP\/1\.1 400 /)
    const body = out.slice(out.indexOf("\r\n\r\n") + 4)
    expect(decodeEnvelope(JSON.parse(body)).code).toBe("BAD_REQUEST")
    const bare = await rawExchange("GET /price?asset=BTC\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
    expect(bare).toMatch(/^HTTP\/1\.1 400 /)
    expect(bare).toMatch(/connection: close/i)
  })

  it("answers an oversized request head 431 in the envelope", async () => {
    const out = await rawExchange(`GET /price?asset=BTC HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(70_000)}\r\n\r\n`)
    expect(out).toMatch(/^HTTP\/1\.1 431 /)
    const body = out.slice(out.indexOf("\r\n\r\n") + 4)
    expect(decodeEnvelope(JSON.parse(body)).code).toBe("BAD_REQUEST")
  })
})

describe("CORS (CORS_ORIGINS)", () => {
  it("answers a listed origin's preflight 204 naming that origin, never *", async () => {
    for (const path of ["/price", "/admin/keys"]) {
      const res = await fetch(`${server.baseUrl}${path}`, {
        method: "OPTIONS",
        headers: { origin: ORIGIN, "access-control-request-method": "GET", "access-control-request-headers": "x-api-key" }
      })
      expect(res.status, path).toBe(204)
      expect(res.headers.get("access-control-allow-origin")).toBe(ORIGIN)
      expect(res.headers.get("access-control-allow-headers")).toMatch(/X-API-Key/i)
    }
  })

  it("names a listed origin on actual answers, fast path and API alike, and nothing for others", async () => {
    for (const path of ["/price?asset=BTC", "/health", "/openapi.json", "/admin/keys"]) {
      const listed = await fetch(`${server.baseUrl}${path}`, { headers: { origin: ORIGIN } })
      await listed.arrayBuffer()
      expect(listed.headers.get("access-control-allow-origin"), path).toBe(ORIGIN)
      const other = await fetch(`${server.baseUrl}${path}`, { headers: { origin: "https://evil.example.net" } })
      await other.arrayBuffer()
      expect(other.headers.get("access-control-allow-origin"), path).toBeNull()
    }
    const preflight = await fetch(`${server.baseUrl}/price`, {
      method: "OPTIONS",
      headers: { origin: "https://evil.example.net", "access-control-request-method": "GET" }
    })
    expect(preflight.headers.get("access-control-allow-origin")).toBeNull()
  })
})

describe("slow and many connections", () => {
  it("closes a connection whose request head trickles in past 10 s", async () => {
    const socket = connect(Number(new URL(server.baseUrl).port), "127.0.0.1")
    socket.on("error", () => undefined)
    const started = Date.now()
    socket.write("GET /price?asset=BTC HTTP/1.1\r\nHost: x\r\n")
    const timer = setInterval(() => socket.writable && socket.write("X-Slow: 1\r\n"), 2_000)
    const closedAfter = await new Promise<number>((resolve) => socket.on("close", () => resolve(Date.now() - started)))
    clearInterval(timer)
    expect(closedAfter).toBeGreaterThanOrEqual(9_500)
    // Before the deadline existed, a head trickled faster than the idle timeout was held forever.
    expect(closedAfter).toBeLessThan(20_000)
  }, 30_000)

  it("holds open connections to max_connections", async () => {
    expect((await admin(server, "POST", "/admin/params", { max_connections: 3 })).status).toBe(200)
    const port = Number(new URL(server.baseUrl).port)
    const sockets = Array.from({ length: 6 }, () => connect(port, "127.0.0.1").on("error", () => undefined))
    try {
      await new Promise((r) => setTimeout(r, 500))
      // The cap counts every open connection, the test client's kept-alive one included.
      const open = sockets.filter((s) => !s.destroyed && s.readyState === "open").length
      expect(open).toBeGreaterThanOrEqual(1)
      expect(open).toBeLessThanOrEqual(3)
    } finally {
      for (const s of sockets) s.destroy()
      await new Promise((r) => setTimeout(r, 200))
      expect((await admin(server, "POST", "/admin/params", { max_connections: 10_000 })).status).toBe(200)
    }
  })
})

describe("a client that hangs up", () => {
  /** Send one admin request and reset the connection `afterMs` later, without reading the answer. */
  const cutAdminRequest = (path: string, body: unknown, afterMs: number): Promise<void> =>
    new Promise((resolve) => {
      const socket = connect(Number(new URL(server.baseUrl).port), "127.0.0.1")
      const payload = JSON.stringify(body)
      socket.on("error", () => undefined)
      socket.on("close", () => resolve())
      socket.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nX-Admin-Token: ${server.adminToken}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`)
      setTimeout(() => socket.resetAndDestroy(), afterMs)
    })

  it("does not stop a revocation half way: every key revoked in the database is refused at once", async () => {
    const counters = async () => ((await admin(server, "GET", "/admin/stress-stats")).body.data as { counters: Record<string, number> }).counters
    const recordedBefore = (await counters())["usage_rows_recorded"]!
    const keys = await Promise.all(Array.from({ length: 16 }, () => createKey(server, "associate")))
    await Promise.all(keys.map((k, i) => cutAdminRequest("/admin/revoke-key", { key_id: k.key_id }, i % 4)))
    await new Promise((r) => setTimeout(r, 500))
    const listed = (await admin(server, "GET", "/admin/keys")).body.data as { keys: Array<{ key_id: string; status: string }> }
    const revoked = new Set(listed.keys.filter((k) => k.status === "revoked").map((k) => k.key_id))
    for (const k of keys.filter((k) => revoked.has(k.key_id))) {
      const r = await call(server, "/price?asset=BTC", { headers: { "x-api-key": k.key } })
      expect(r.status, `revoked key ${k.key_id}`).toBe(403)
    }
    // Every cut request is still one usage row (16 key creations, 16 cut revocations, the reads above).
    expect((await counters())["usage_rows_recorded"]! - recordedBefore).toBeGreaterThanOrEqual(32)
  }, 30_000)
})
