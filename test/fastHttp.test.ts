import fc from "fast-check"
import { createServer } from "node:http"
import { connect } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { formatResponse, type FastHttpServer, makeFastHttpServer, originForm, parseRequestHead } from "../src/http/fastHttp.ts"

describe("parseRequestHead", () => {
  it("reads a request line and headers", () => {
    const h = parseRequestHead("GET /price?asset=BTC HTTP/1.1\r\nHost: x\r\nX-API-Key:  k \r\nConnection: keep-alive")
    expect(h).toEqual({ method: "GET", target: "/price?asset=BTC", http10: false, rawHeaders: ["Host", "x", "X-API-Key", "k", "Connection", "keep-alive"], close: false, special: false })
  })

  it("applies the keep-alive defaults of HTTP/1.0 and 1.1", () => {
    expect(parseRequestHead("GET / HTTP/1.1\r\nHost: x")?.close).toBe(false)
    expect(parseRequestHead("GET / HTTP/1.1\r\nHost: x\r\nConnection: close")?.close).toBe(true)
    expect(parseRequestHead("GET / HTTP/1.0")?.close).toBe(true)
    expect(parseRequestHead("GET / HTTP/1.0\r\nConnection: Keep-Alive")?.close).toBe(false)
  })

  it("marks requests with a body, an upgrade or an expectation as not ours", () => {
    for (const h of ["Content-Length: 5", "Transfer-Encoding: chunked", "Upgrade: websocket", "Connection: Upgrade", "Expect: 100-continue"]) {
      expect(parseRequestHead(`GET / HTTP/1.1\r\nHost: x\r\n${h}`)?.special).toBe(true)
    }
    expect(parseRequestHead("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0")?.special).toBe(false)
  })

  it("serves an absolute-form target (as a proxy sends it) as its path and query", () => {
    const cases: ReadonlyArray<readonly [string, string | undefined]> = [
      ["http://127.0.0.1:8080/price?asset=BTC", "/price?asset=BTC"],
      ["HTTPS://lpo.example.com/health", "/health"],
      ["http://lpo.example.com", "/"],
      ["http://lpo.example.com?asset=BTC", "/?asset=BTC"],
      ["http:///price", undefined],
      ["ftp://host/price", undefined],
      ["price", undefined]
    ]
    for (const [sent, target] of cases) expect([sent, parseRequestHead(`GET ${sent} HTTP/1.1\r\nHost: x`)?.target]).toEqual([sent, target])
    expect(originForm("*")).toBe("*")
    fc.assert(fc.property(fc.stringMatching(/^\/[A-Za-z0-9/?=&.]{0,30}$/), fc.stringMatching(/^[a-z0-9.-]{1,20}(:[0-9]{1,5})?$/), (path, host) => {
      expect(originForm(`http://${host}${path}`)).toBe(path)
    }))
  })

  it("rejects malformed heads", () => {
    for (const head of ["GET / HTTP/1.1", "", "GET", "GET /", "GET / HTTP/2", "GET  / HTTP/1.1", "G ET / HTTP/1.1 x", "GET x HTTP/1.1", "GET / HTTP/1.1\r\nbad header", "GET / HTTP/1.1\r\n folded: x", "GET / HTTP/1.1\r\nna me: x", "GET / HTTP/1.1\r\nx: a\u0000b"]) {
      expect(parseRequestHead(head)).toBeUndefined()
    }
  })

  it("never throws, and what it accepts round-trips", () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => {
      const parsed = parseRequestHead(s)
      if (parsed !== undefined) {
        expect(parsed.method).toMatch(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/)
        expect(parsed.rawHeaders.length % 2).toBe(0)
      }
    }))
    const token = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/)
    const value = fc.stringMatching(/^[ -~]{0,40}$/).map((v) => v.trim())
    fc.assert(fc.property(fc.stringMatching(/^\/[A-Za-z0-9/?=&.]{0,30}$/), fc.array(fc.tuple(token, value), { maxLength: 8 }), (target, headers) => {
      const all: Array<[string, string]> = [["Host", "t"], ...headers]
      const head = [`GET ${target} HTTP/1.1`, ...all.map(([n, v]) => `${n}: ${v}`)].join("\r\n")
      const parsed = parseRequestHead(head)
      expect(parsed?.target).toBe(target)
      expect(parsed?.rawHeaders).toEqual(all.flat())
    }))
  })
})

describe("formatResponse", () => {
  it("writes status, headers, length and keep-alive", () => {
    const text = formatResponse(200, ["content-length", 2, "x-request-id", "r1"], "{}", false)
    expect(text.startsWith("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-request-id: r1\r\ndate: ")).toBe(true)
    expect(text.endsWith("connection: keep-alive\r\nkeep-alive: timeout=65\r\n\r\n{}")).toBe(true)
  })

  it("drops header values that would split the response", () => {
    const text = formatResponse(200, ["x-request-id", "a\r\nset-cookie: evil=1", "content-length", 0], "", true)
    expect(text).not.toContain("evil")
    expect(text).toContain("connection: close")
  })
})

describe("fast HTTP server", () => {
  let fast: FastHttpServer
  let port = 0
  const delays: Array<number> = []

  beforeAll(async () => {
    const fallback = createServer((req, res) => {
      let body = ""
      req.on("data", (c: Buffer) => void (body += c.toString()))
      req.on("end", () => res.end(`fallback ${req.method} ${req.url} ${body}`))
    })
    fast = makeFastHttpServer({
      fallback,
      maxHeaderBytes: 1024,
      idleTimeoutMs: 400,
      route: (request) => {
        if (!request.target.startsWith("/fast")) return undefined
        if (request.target.startsWith("/fast/never")) return () => {}
        const delay = request.target.includes("slow") ? 30 : request.target.includes("late") ? 300 : 0
        return (reply) => {
          const answer = () => reply(200, ["content-length", Buffer.byteLength(request.target)], request.target)
          if (delay === 0) answer()
          else {
            delays.push(delay)
            setTimeout(answer, delay)
          }
        }
      }
    })
    await new Promise<void>((resolve) => fast.server.listen(0, "127.0.0.1", () => resolve()))
    const address = fast.server.address()
    port = typeof address === "object" && address !== null ? address.port : 0
  })

  afterAll(() => {
    fast.closeAll()
    fast.server.close()
  })

  /** Send raw bytes (optionally in pieces) and collect everything until the server closes or `until` matches. */
  const exchange = (pieces: ReadonlyArray<string>, until: (text: string) => boolean, timeoutMs = 1000): Promise<string> =>
    new Promise((resolve) => {
      let text = ""
      const socket = connect(port, "127.0.0.1", () => {
        pieces.forEach((p, i) => setTimeout(() => socket.write(p), i * 5))
      })
      const done = () => {
        socket.destroy()
        resolve(text)
      }
      const timer = setTimeout(done, timeoutMs)
      socket.on("data", (d: Buffer) => {
        text += d.toString()
        if (until(text)) {
          clearTimeout(timer)
          done()
        }
      })
      socket.on("close", () => {
        clearTimeout(timer)
        resolve(text)
      })
    })

  const bodies = (text: string) => text.split(/HTTP\/1\.1 \d+ [^\r]*\r\n(?:[^\r]+\r\n)*\r\n/).slice(1)

  it("answers pipelined requests in order, even when an earlier one answers late", async () => {
    const text = await exchange(
      ["GET /fast/slow HTTP/1.1\r\nHost: t\r\n\r\nGET /fast/1 HTTP/1.1\r\nHost: t\r\n\r\nGET /fast/2 HTTP/1.1\r\nHost: t\r\n\r\n"],
      (t) => bodies(t).length >= 3 && bodies(t)[2]!.startsWith("/fast/2")
    )
    expect(bodies(text)).toEqual(["/fast/slow", "/fast/1", "/fast/2"])
  })

  it("routes an absolute-form request (as sent through a proxy) by its path", async () => {
    const text = await exchange([`GET http://127.0.0.1:${port}/fast/absolute?x=1 HTTP/1.1\r\nHost: t\r\n\r\n`], (t) => t.includes("/fast/absolute"))
    expect(bodies(text)).toEqual(["/fast/absolute?x=1"])
  })

  it("reassembles a request head split across packets", async () => {
    const text = await exchange(["GE", "T /fast/split HT", "TP/1.1\r\nHost: x\r", "\n\r\n"], (t) => t.includes("/fast/split"))
    expect(bodies(text)).toEqual(["/fast/split"])
  })

  it("hands other requests, with their body and what follows, to node:http on the same connection", async () => {
    const text = await exchange(
      ["GET /fast/a HTTP/1.1\r\nHost: t\r\n\r\nPOST /admin HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhel", "lo", "GET /fast/b HTTP/1.1\r\nHost: t\r\n\r\n"],
      (t) => t.includes("fallback GET /fast/b")
    )
    expect(text).toContain("/fast/a")
    expect(text).toContain("fallback POST /admin hello")
    expect(text).toContain("fallback GET /fast/b")
  })

  it("closes after the response when asked, and for HTTP/1.0 without keep-alive", async () => {
    for (const req of ["GET /fast/c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", "GET /fast/d HTTP/1.0\r\n\r\n"]) {
      const text = await exchange([req], () => false)
      expect(text).toContain("connection: close")
      expect(bodies(text)).toHaveLength(1)
    }
  })

  it("refuses malformed and oversized heads, then closes", async () => {
    const bad = await exchange(["BROKEN\r\n\r\n"], () => false)
    expect(bad.startsWith("HTTP/1.1 400")).toBe(true)
    const big = await exchange([`GET /fast HTTP/1.1\r\nHost: t\r\nx: ${"a".repeat(2000)}\r\n\r\n`], () => false)
    expect(big.startsWith("HTTP/1.1 431")).toBe(true)
  })

  it("survives arbitrary bytes", async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 600 }), async (bytes) => {
      await exchange([Buffer.from(bytes).toString("latin1")], () => false, 60)
    }), { numRuns: 40 })
    const text = await exchange(["GET /fast/alive HTTP/1.1\r\nHost: t\r\n\r\n"], (t) => t.includes("/fast/alive"))
    expect(bodies(text)).toEqual(["/fast/alive"])
  })

  it("closes a handed-over connection that goes quiet (node:http's own timers do not run for it)", async () => {
    const started = Date.now()
    const text = await exchange(["POST /admin HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhal"], () => false, 3000)
    expect(text).toBe("")
    expect(Date.now() - started).toBeLessThan(2500)
  })

  it("stops reading a client that pipelines without waiting for answers", async () => {
    const socket = connect(port, "127.0.0.1")
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()))
    const request = "GET /fast/never HTTP/1.1\r\nHost: t\r\n\r\n"
    const chunk = request.repeat(Math.ceil(1_000_000 / request.length))
    for (let i = 0; i < 32; i++) socket.write(chunk) // ~32 MB: more than loopback buffers hold
    await new Promise((r) => setTimeout(r, 300))
    // The server read at most a little past its limit; the rest waits in the client's buffer.
    expect(socket.writableLength).toBeGreaterThan(10_000_000)
    socket.destroy()
  })

  it("does not count a reply that arrives after the client left", async () => {
    // Start from no requests in flight (an earlier test's connections may still be closing).
    for (let i = 0; i < 100 && fast.inFlight() !== 0; i++) await new Promise((r) => setTimeout(r, 20))
    expect(fast.inFlight()).toBe(0)
    const socket = connect(port, "127.0.0.1", () => socket.write("GET /fast/late HTTP/1.1\r\nHost: t\r\n\r\n"))
    // Leave once the request is surely being handled, and well before its (300 ms) reply.
    await new Promise((r) => setTimeout(r, 50))
    expect(fast.inFlight()).toBe(1)
    socket.destroy()
    await new Promise((r) => setTimeout(r, 450))
    expect(fast.inFlight()).toBe(0)
  })
})
