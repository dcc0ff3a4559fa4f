import fc from "fast-check"
import { createServer, type Server as HttpServer } from "node:http"
import { connect } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type FastHttpServer, formatResponse, makeFastHttpServer } from "../src/layers/http/fastHttp.ts"
import { originForm, type ParsedHead, parseRequestHead } from "../src/layers/http/httpHead.ts"

/** The head parsed for serving, or undefined when it is handed over or rejected. */
const served = (head: string): ParsedHead | undefined => {
  const parsed = parseRequestHead(head)
  return "problem" in parsed ? undefined : parsed
}
const verdict = (head: string): "serve" | "handOver" | "reject" => {
  const parsed = parseRequestHead(head)
  return "problem" in parsed ? parsed.problem : "serve"
}

describe("parseRequestHead", () => {
  it("reads a request line and headers", () => {
    const h = parseRequestHead("GET /price?asset=BTC HTTP/1.1\r\nHost: x\r\nX-API-Key:  k \r\nConnection: keep-alive")
    expect(h).toEqual({ method: "GET", target: "/price?asset=BTC", http10: false, rawHeaders: ["Host", "x", "X-API-Key", "k", "Connection", "keep-alive"], close: false, special: false })
    expect(served("HEAD /price HTTP/1.1\r\nHost: x")?.method).toBe("HEAD")
  })

  it("applies the keep-alive defaults of HTTP/1.0 and 1.1", () => {
    expect(served("GET / HTTP/1.1\r\nHost: x")?.close).toBe(false)
    expect(served("GET / HTTP/1.1\r\nHost: x\r\nConnection: close")?.close).toBe(true)
    expect(served("GET / HTTP/1.0")?.close).toBe(true)
    expect(served("GET / HTTP/1.0\r\nConnection: Keep-Alive")?.close).toBe(false)
  })

  it("reads Connection as llhttp does: whole comma-separated tokens; HTTP/1.0 persists on keep-alive alone", () => {
    const cases: ReadonlyArray<readonly [string, string, boolean]> = [
      ["1.1", "closed", false],
      ["1.1", "close;x", false],
      ["1.1", " Close ,", true],
      ["1.1", "x, close", true],
      ["1.1", "keep-alive, close", true],
      ["1.0", "keep-alive, close", false],
      ["1.0", "keep-alivex", true],
      ["1.0", "x,keep-alive", false]
    ]
    for (const [version, value, close] of cases) {
      expect([version, value, served(`GET / HTTP/${version}\r\nHost: x\r\nConnection: ${value}`)?.close]).toEqual([version, value, close])
    }
    expect(served("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close")?.close).toBe(true)
  })

  it("marks requests with a body, an upgrade or an expectation as not ours", () => {
    for (const h of ["Content-Length: 5", "Content-Length: 00", "Transfer-Encoding: chunked", "Upgrade: websocket", "Connection: Upgrade", "Expect: 100-continue"]) {
      expect(served(`GET / HTTP/1.1\r\nHost: x\r\n${h}`)?.special).toBe(true)
    }
    expect(served("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0")?.special).toBe(false)
  })

  it("serves an absolute-form target (as a proxy sends it) as its path and query", () => {
    const cases: ReadonlyArray<readonly [string, string | undefined]> = [
      ["http://127.0.0.1:8080/price?asset=BTC", "/price?asset=BTC"],
      ["HTTPS://lpo.example.com/health", "/health"],
      ["http://lpo.example.com", "/"],
      ["http://lpo.example.com?asset=BTC", "/?asset=BTC"],
      ["http://user:pw@[::1]:80/x", "/x"],
      ["http:///price", undefined],
      ["ftp://host/price", undefined],
      ["price", undefined],
      // llhttp refuses these in an authority; handed over so that it answers them.
      ["http://a<b/price", undefined],
      ["http://a{b/price", undefined],
      ["http://a#b", undefined]
    ]
    for (const [sent, target] of cases) expect([sent, served(`GET ${sent} HTTP/1.1\r\nHost: x`)?.target]).toEqual([sent, target])
    expect(originForm("*")).toBe("*")
    fc.assert(fc.property(fc.stringMatching(/^\/[A-Za-z0-9/?=&.]{0,30}$/), fc.stringMatching(/^[a-z0-9.-]{1,20}(:[0-9]{1,5})?$/), (path, host) => {
      expect(originForm(`http://${host}${path}`)).toBe(path)
    }))
  })

  it("rejects what llhttp rejects, and hands over the oddities llhttp accepts", () => {
    const rejected = [
      "GET / HTTP/1.1", // no Host
      "GET / HTTP/1.1\r\nbad header",
      "GET / HTTP/1.1\r\nbadheader",
      "GET / HTTP/1.1\r\n folded: x",
      "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b", // obs-fold
      "GET / HTTP/1.1\r\nna me: x",
      "GET / HTTP/1.1\r\nHost : x",
      "GET / HTTP/1.1\r\n: x",
      "GET / HTTP/1.1\r\nx: a\u0000b",
      "GET /price?asset=BTC&x=\nContent-Length:\t56 HTTP/1.1\r\nHost: x",
      "GET / HTTP/1.1\nHost: x",
      "GET / HTTP/1.1\r\nHost: x\nX: y",
      "GET / HTTP/1.1\r\nHost: x\rX: y",
      "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0",
      "GET / HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\nCONTENT-LENGTH: 0",
      "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \u000b0",
      "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\u000c",
      "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \u00a00",
      "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 0",
      "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +0",
      "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: ",
      "POST /admin HTTP/1.1\r\nHost: x\r\nX: \u0001"
    ]
    for (const head of rejected) expect([head, verdict(head)]).toEqual([head, "reject"])
    const handedOver = ["", "GET", "BROKEN", "GET /", "GET / HTTP/2", "GET / HTTP/2.0\r\nHost: x", "GET  / HTTP/1.1\r\nHost: x", "G ET / HTTP/1.1 x", "GET x HTTP/1.1\r\nHost: x", "get / HTTP/1.1\r\nHost: x", "\r\nGET / HTTP/1.1\r\nHost: x", "POST / HTTP/1.1\r\nHost: x"]
    for (const head of handedOver) expect([head, verdict(head)]).toEqual([head, "handOver"])
  })

  it("takes exactly llhttp's bytes in a target and in a header value", () => {
    for (let code = 0; code < 256; code++) {
      const c = String.fromCharCode(code)
      const inTarget = verdict(`GET /p?a=${c}x HTTP/1.1\r\nHost: x`)
      expect([code, inTarget]).toEqual([code, code === 0x20 ? "handOver" : code >= 0x21 && code <= 0x7e ? "serve" : "reject"])
      const inValue = served(`GET / HTTP/1.1\r\nHost: x\r\nX: a${c}b`)?.rawHeaders[3]
      const valueAllowed = code === 0x09 || (code >= 0x20 && code !== 0x7f)
      expect([code, inValue]).toEqual([code, valueAllowed ? `a${c}b` : undefined])
    }
  })

  it("trims only SP and HTAB around a value", () => {
    expect(served("GET / HTTP/1.1\r\nHost: x\r\nX-API-Key: \t\u00a0k\u00a0 \t")?.rawHeaders).toEqual(["Host", "x", "X-API-Key", "\u00a0k\u00a0"])
    expect(served("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \t0 ")?.special).toBe(false)
  })

  it("never throws, and what it accepts round-trips", () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => {
      const parsed = served(s)
      if (parsed !== undefined) {
        expect(["GET", "HEAD"]).toContain(parsed.method)
        expect(parsed.rawHeaders.length % 2).toBe(0)
      }
    }))
    const token = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/).filter((t) => !/^(content-length|host)$/i.test(t))
    const value = fc.stringMatching(/^[ -~]{0,40}$/).map((v) => v.trim())
    fc.assert(fc.property(fc.stringMatching(/^\/[A-Za-z0-9/?=&.]{0,30}$/), fc.array(fc.tuple(token, value), { maxLength: 8 }), (target, headers) => {
      const all: Array<[string, string]> = [["Host", "t"], ...headers]
      const head = [`GET ${target} HTTP/1.1`, ...all.map(([n, v]) => `${n}: ${v}`)].join("\r\n")
      const parsed = served(head)
      expect(parsed?.target).toBe(target)
      expect(parsed?.rawHeaders).toEqual(all.flat())
    }))
  })
})

describe("formatResponse", () => {
  it("writes status, headers, length and keep-alive", () => {
    const text = formatResponse(200, ["content-length", 2, "x-request-id", "r1"], "{}", false)
    expect(text.startsWith("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-request-id: r1\r\ndate: ")).toBe(true)
    // An idle kept-alive connection is closed at the head deadline (10 s): say so.
    expect(text.endsWith("connection: keep-alive\r\nkeep-alive: timeout=10\r\n\r\n{}")).toBe(true)
    expect(formatResponse(200, [], "", false, false, 3)).toContain("keep-alive: timeout=3\r\n")
  })

  it("drops header values that would split the response", () => {
    const text = formatResponse(200, ["x-request-id", "a\r\nset-cookie: evil=1", "content-length", 0], "", true)
    expect(text).not.toContain("evil")
    expect(text).toContain("connection: close")
  })

  it("answers HEAD with the same head (content-length included) and no body", () => {
    const get = formatResponse(200, ["content-length", 2], "{}", true)
    const head = formatResponse(200, ["content-length", 2], "{}", true, true)
    expect(head).toBe(get.slice(0, -2))
    expect(head.endsWith("\r\n\r\n")).toBe(true)
  })
})

const listen = async (fast: FastHttpServer): Promise<number> => {
  await new Promise<void>((resolve) => fast.server.listen(0, "127.0.0.1", () => resolve()))
  const address = fast.server.address()
  return typeof address === "object" && address !== null ? address.port : 0
}

/** Send raw bytes (optionally in pieces) and collect everything until the server closes or `until` matches. */
const exchangeWith = (port: number, pieces: ReadonlyArray<string>, until: (text: string) => boolean, timeoutMs = 1000): Promise<string> =>
  new Promise((resolve) => {
    let text = ""
    const socket = connect(port, "127.0.0.1", () => {
      pieces.forEach((p, i) => setTimeout(() => socket.write(Buffer.from(p, "latin1")), i * 5))
    })
    socket.on("error", () => {})
    const done = () => {
      socket.destroy()
      resolve(text)
    }
    const timer = setTimeout(done, timeoutMs)
    socket.on("data", (d: Buffer) => {
      text += d.toString("latin1")
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

describe("fast HTTP server", () => {
  let fast: FastHttpServer
  let port = 0
  const delays: Array<number> = []
  const routed: Array<string> = []

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
      rejection: (status, line) => {
        const body = JSON.stringify({ status, method: line.method, target: line.target })
        return { headers: ["content-type", "application/json", "content-length", Buffer.byteLength(body)], body }
      },
      route: (request) => {
        if (!request.target.startsWith("/fast")) return undefined
        routed.push(`${request.method} ${request.target}`)
        if (request.target.startsWith("/fast/never")) return () => {}
        const delay = request.target.includes("slow") ? 30 : request.target.includes("late") ? 300 : 0
        return (reply) => {
          const answer = () => reply(200, ["content-length", Buffer.byteLength(request.target), "x-method", request.method], request.target)
          if (delay === 0) answer()
          else {
            delays.push(delay)
            setTimeout(answer, delay)
          }
        }
      }
    })
    port = await listen(fast)
  })

  afterAll(() => {
    fast.closeAll()
    fast.server.close()
  })

  const exchange = (pieces: ReadonlyArray<string>, until: (text: string) => boolean, timeoutMs = 1000) => exchangeWith(port, pieces, until, timeoutMs)

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

  it("routes HEAD like GET and answers it with the GET head and no body", async () => {
    const text = await exchange(["HEAD /fast/h HTTP/1.1\r\nHost: t\r\n\r\nGET /fast/after HTTP/1.1\r\nHost: t\r\n\r\n"], (t) => t.includes("/fast/after"))
    expect(text.startsWith("HTTP/1.1 200 OK\r\ncontent-length: 7\r\nx-method: HEAD\r\n")).toBe(true)
    // No body after the HEAD answer: the next response starts right after its head.
    expect(bodies(text)).toEqual(["", "/fast/after"])
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

  it("answers a rejection with the caller's response when the request line could be read, else a bare 400", async () => {
    const header = await exchange(["GET /fast/x HTTP/1.1\r\nHost: t\r\nX: a\u0001b\r\n\r\n"], () => false)
    expect(header.startsWith("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n")).toBe(true)
    expect(header).toContain("connection: close")
    expect(bodies(header)).toEqual([JSON.stringify({ status: 400, method: "GET", target: "/fast/x" })])
    const big = await exchange([`GET /fast/big HTTP/1.1\r\nHost: t\r\nx: ${"a".repeat(2000)}\r\n\r\n`], () => false)
    expect(bodies(big)).toEqual([JSON.stringify({ status: 431, method: "GET", target: "/fast/big" })])
    const head = await exchange(["HEAD /fast/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"], () => false)
    expect(head.startsWith("HTTP/1.1 400")).toBe(true)
    expect(head).toContain(`content-length: ${JSON.stringify({ status: 400, method: "HEAD", target: "/fast/x" }).length}\r\n`)
    expect(head.endsWith("\r\n\r\n")).toBe(true)
    const line = await exchange(["GET /fast/\u0001 HTTP/1.1\r\nHost: t\r\n\r\n"], () => false)
    expect(line).toBe("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
  })

  it("answers a target smuggling a header behind a bare LF with one 400, as llhttp does", async () => {
    routed.length = 0
    const second = "GET /fast/second HTTP/1.1\r\nHost: t\r\nX-Pad: 123456789\r\n\r\n"
    expect(second.length).toBe(56)
    const text = await exchange([`GET /fast/price?asset=BTC&x=\nContent-Length:\t56 HTTP/1.1\r\nHost: t\r\n\r\n${second}`], () => false)
    expect(text.match(/HTTP\/1\.1 \d+/g)).toEqual(["HTTP/1.1 400"])
    expect(routed).toEqual([])
  })

  it("answers bare-LF line endings with a 400 at once rather than waiting for a CRLF", async () => {
    for (const request of ["GET /fast/lf HTTP/1.1\nHost: t\n\n", "GET /fast/lf HTTP/1.1\r\nHost: t\n\n", "GET /fast/lf HTTP/1.1\r\nHost: t\r\n\n"]) {
      const text = await exchange([request], () => false, 300)
      expect([request, text.slice(0, 12)]).toEqual([request, "HTTP/1.1 400"])
    }
  })

  it("refuses a repeated Content-Length and one padded with other than SP or HTAB", async () => {
    for (const cl of ["Content-Length: 0\r\nContent-Length: 0", "Content-Length: \u000b0", "Content-Length: 0\u00a0"]) {
      const text = await exchange([`GET /fast/cl HTTP/1.1\r\nHost: t\r\n${cl}\r\n\r\n`], () => false)
      expect([cl, text.slice(0, 12)]).toEqual([cl, "HTTP/1.1 400"])
    }
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

interface Conversation {
  readonly text: string
  /** The server closed the connection (rather than the client giving up). */
  readonly closedByServer: boolean
  /** How many steps had been sent when the conversation ended. */
  readonly stepsSent: number
}

/**
 * Send `steps` ([wait ms, bytes]: each waits after the previous one) and read until the server
 * closes, or until `timeoutMs` after the last step.
 */
const converse = (port: number, steps: ReadonlyArray<readonly [number, string]>, timeoutMs = 1500): Promise<Conversation> =>
  new Promise((resolve) => {
    let text = ""
    let stepsSent = 0
    let ended = false
    const socket = connect(port, "127.0.0.1")
    socket.on("error", () => {})
    const end = (closedByServer: boolean) => {
      if (ended) return
      ended = true
      socket.destroy()
      resolve({ text, closedByServer, stepsSent })
    }
    const next = () => {
      if (ended) return
      const step = steps[stepsSent]
      if (step === undefined) return void setTimeout(() => end(false), timeoutMs)
      setTimeout(() => {
        if (ended) return
        socket.write(Buffer.from(step[1], "latin1"))
        stepsSent++
        next()
      }, step[0])
    }
    socket.once("connect", next)
    socket.on("data", (d: Buffer) => void (text += d.toString("latin1")))
    socket.on("close", () => end(true))
  })

const trickle = (first: string, piece: string, count: number, everyMs: number): Array<readonly [number, string]> =>
  [[0, first], ...Array.from({ length: count }, () => [everyMs, piece] as const)]

describe("fast HTTP server deadlines and limits", () => {
  const HEAD_DEADLINE_MS = 300
  const BODY_DEADLINE_MS = 600
  let fast: FastHttpServer
  let port = 0
  let fallback: HttpServer

  beforeAll(async () => {
    fallback = createServer((req, res) => {
      let body = ""
      req.on("data", (c: Buffer) => void (body += c.toString()))
      req.on("end", () => {
        const answer = () => res.end(`fallback ${req.method} ${req.url} ${body}`)
        if (req.url === "/admin/slow") setTimeout(answer, 2 * HEAD_DEADLINE_MS + 100)
        else answer()
      })
    })
    fallback.on("upgrade", (_req, socket, _head) => {
      socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
      socket.on("data", (d: Buffer) => socket.write(d))
    })
    fast = makeFastHttpServer({
      fallback,
      idleTimeoutMs: 10_000, // far beyond every test here: what closes a connection is a deadline
      headDeadlineMs: HEAD_DEADLINE_MS,
      bodyDeadlineMs: BODY_DEADLINE_MS,
      route: (request) => {
        if (!request.target.startsWith("/fast")) return undefined
        const delay = request.target === "/fast/slower" ? 2 * HEAD_DEADLINE_MS + 100 : 0
        return (reply) => void setTimeout(() => reply(200, ["content-length", Buffer.byteLength(request.target)], request.target), delay)
      }
    })
    port = await listen(fast)
  })

  afterAll(() => {
    fast.closeAll()
    fast.server.close()
  })

  it("closes a connection whose head trickles in past the head deadline, though each piece is traffic", async () => {
    const talk = await converse(port, trickle("GET /fast/t HTTP/1.1\r\n", "x-a: 1\r\n", 20, 100))
    expect(talk.closedByServer).toBe(true)
    expect(talk.stepsSent).toBeLessThan(20)
    expect(talk.text.startsWith("HTTP/1.1 408")).toBe(true)
  })

  it("gives a kept-alive connection the head deadline from its previous response", async () => {
    const talk = await converse(port, [[0, "GET /fast/k HTTP/1.1\r\nHost: t\r\n\r\n"]], 3000)
    expect(talk.closedByServer).toBe(true)
    expect(bodies(talk.text)).toEqual(["/fast/k"]) // closed quietly: no 408 for an idle connection
  })

  it("starts a fresh connection's head deadline at its first byte", async () => {
    const talk = await converse(port, [[2 * HEAD_DEADLINE_MS + 100, "GET /fast/late-first-byte HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"]])
    expect(bodies(talk.text)).toEqual(["/fast/late-first-byte"])
  })

  it("closes a connection that sends nothing within firstByteTimeoutMs, so silent sockets cannot hold the connection cap", async () => {
    const fallback = createServer()
    const silentOnes = makeFastHttpServer({ fallback, idleTimeoutMs: 10_000, firstByteTimeoutMs: 200, route: () => undefined })
    const silentPort = await listen(silentOnes)
    try {
      const started = Date.now()
      const talk = await converse(silentPort, [], 3000)
      expect(talk.closedByServer).toBe(true)
      expect(Date.now() - started).toBeLessThan(2000)
    } finally {
      silentOnes.closeAll()
      silentOnes.server.close()
    }
  })

  it("does not count a slow answer against the head deadline", async () => {
    const talk = await converse(port, [[0, "GET /fast/slower HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"]])
    expect(bodies(talk.text)).toEqual(["/fast/slower"])
  })

  it("closes a handed-over connection whose next head trickles past the deadline", async () => {
    const talk = await converse(port, [[0, "POST /admin HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"], ...trickle("GET /admin HTTP/1.1\r\n", "x-a: 1\r\n", 20, 100)])
    expect(talk.text).toContain("fallback POST /admin hi")
    expect(talk.closedByServer).toBe(true)
    expect(talk.stepsSent).toBeLessThan(21)
  })

  it("closes a handed-over connection whose body trickles past the body deadline", async () => {
    const talk = await converse(port, trickle("POST /admin HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n", "a", 30, 100))
    expect(talk.closedByServer).toBe(true)
    expect(talk.stepsSent).toBeLessThan(30)
    expect(talk.text).not.toContain("fallback")
  })

  it("gives each head on a kept-alive handed-over connection a fresh deadline after the previous response", async () => {
    const post = (n: number) => `POST /admin HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\n${n}`
    const wait = HEAD_DEADLINE_MS - 100
    const talk = await converse(port, [[0, post(1)], [wait, post(2)], [wait, post(3)], [wait, post(4)]], 100)
    expect(talk.text.match(/fallback POST \/admin \d/g)).toEqual(["fallback POST /admin 1", "fallback POST /admin 2", "fallback POST /admin 3", "fallback POST /admin 4"])
  })

  it("does not count node:http's slow answer against a handed-over connection's deadlines", async () => {
    const talk = await converse(port, [[0, "GET /admin/slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"]])
    expect(talk.text).toContain("fallback GET /admin/slow")
  })

  it("leaves an upgraded connection to its new owner", async () => {
    const upgrade = "GET /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    const talk = await converse(port, [[0, upgrade], [2 * HEAD_DEADLINE_MS + 100, "ping"]], 200)
    expect(talk.text.startsWith("HTTP/1.1 101")).toBe(true)
    expect(talk.text.endsWith("ping")).toBe(true)
    expect(talk.closedByServer).toBe(false)
  })

  it("refuses connections past maxConnections, read for each new connection", async () => {
    let limit = 2
    const capped = makeFastHttpServer({
      fallback: createServer(),
      maxConnections: () => limit,
      route: (request) => (reply) => reply(200, ["content-length", Buffer.byteLength(request.target)], request.target)
    })
    const cappedPort = await listen(capped)
    try {
      const open = async (path: string) => {
        const socket = connect(cappedPort, "127.0.0.1")
        socket.on("error", () => {})
        let text = ""
        socket.on("data", (d: Buffer) => void (text += d.toString()))
        const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
        socket.write(`GET ${path} HTTP/1.1\r\nHost: t\r\n\r\n`)
        const answered = new Promise<void>((resolve) => socket.on("data", () => text.includes(path) && resolve()))
        const outcome = await Promise.race([answered.then(() => "answered" as const), closed.then(() => "closed" as const)])
        return { socket, outcome }
      }
      const first = await open("/one")
      const second = await open("/two")
      const third = await open("/three")
      expect([first.outcome, second.outcome, third.outcome]).toEqual(["answered", "answered", "closed"])
      limit = 3
      const fourth = await open("/four")
      expect(fourth.outcome).toBe("answered")
      for (const s of [first, second, fourth]) s.socket.destroy()
    } finally {
      capped.closeAll()
      capped.server.close()
    }
  })
})
