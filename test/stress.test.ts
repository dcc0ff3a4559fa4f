import * as dgram from "node:dgram"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { spawn } from "node:child_process"
import { join } from "node:path"
import {
  LatencyHistogram,
  parseHttpResponse,
  formatProgress,
  formatResult,
  type ProgressSink,
  stressCli,
  stressHttp,
  stressUdp,
  type StressResult
} from "../src/programs/stress.ts"

const RUN_MS = 500

const listenHttp = (handler: http.RequestListener): Promise<http.Server> =>
  new Promise((resolve) => {
    const server = http.createServer(handler)
    server.listen(0, "127.0.0.1", () => resolve(server))
  })

const bindUdp = (onMessage: (socket: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo) => void): Promise<dgram.Socket> =>
  new Promise((resolve) => {
    const socket = dgram.createSocket("udp4")
    socket.on("message", (msg, rinfo) => onMessage(socket, msg, rinfo))
    socket.bind(0, "127.0.0.1", () => resolve(socket))
  })

const portOf = (server: http.Server): number => (server.address() as AddressInfo).port

const expectConsistent = (r: StressResult): void => {
  const statusSum = Object.values(r.statusCounts).reduce((a, b) => a + b, 0)
  expect(statusSum).toBe(r.requests)
  expect(r.p50Ms).toBeLessThanOrEqual(r.p90Ms)
  expect(r.p90Ms).toBeLessThanOrEqual(r.p99Ms)
  expect(r.p99Ms).toBeLessThanOrEqual(r.maxMs)
  expect(r.durationMs).toBeGreaterThanOrEqual(RUN_MS - 20)
  expect(r.durationMs).toBeLessThan(RUN_MS + 500)
  expect(r.rps).toBeCloseTo((r.requests * 1000) / r.durationMs, 6)
}

describe("stressHttp", () => {
  let alternating: http.Server
  let chunked: http.Server
  const seenKeys = new Set<string | undefined>()

  beforeAll(async () => {
    let n = 0
    // Every third request is rate limited, so both statuses show up in one run.
    alternating = await listenHttp((req, res) => {
      seenKeys.add(req.headers["x-api-key"] as string | undefined)
      const limited = n++ % 3 === 2
      const body = JSON.stringify(limited ? { success: false, code: "RATE_LIMITED" } : { success: true })
      res.writeHead(limited ? 429 : 200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) })
      res.end(body)
    })
    // No Content-Length: node answers with Transfer-Encoding: chunked.
    chunked = await listenHttp((_req, res) => {
      res.writeHead(200, { "Content-Type": "text/plain" })
      res.write("first part,")
      res.end("second part")
    })
  })

  afterAll(() => {
    alternating.closeAllConnections()
    alternating.close()
    chunked.closeAllConnections()
    chunked.close()
  })

  it("counts 200 and 429 answers consistently", async () => {
    const r = await stressHttp({
      url: `http://127.0.0.1:${portOf(alternating)}/price?asset=BTC`,
      headers: { "X-API-Key": "test-key" },
      connections: 4,
      durationMs: RUN_MS,
      warmupMs: 50
    })
    expect(r.requests).toBeGreaterThan(100)
    expect(r.statusCounts["200"]).toBeGreaterThan(0)
    expect(r.statusCounts["429"]).toBeGreaterThan(0)
    // The body after the head, not the head itself.
    expect(r.firstAnswers).toEqual({ "200": '{"success":true}', "429": '{"success":false,"code":"RATE_LIMITED"}' })
    // Refusals by the envelope's code, and only refusals.
    expect(r.errorCodes).toEqual({ RATE_LIMITED: r.statusCounts["429"] })
    expect(r.errors).toBe(0)
    expect(r.timeouts).toBe(0)
    expect(seenKeys).toEqual(new Set(["test-key"]))
    expectConsistent(r)
  })

  it("reads chunked bodies", async () => {
    const r = await stressHttp({ url: `http://localhost:${portOf(chunked)}/`, connections: 2, durationMs: RUN_MS })
    expect(r.requests).toBeGreaterThan(50)
    expect(r.statusCounts).toEqual({ "200": r.requests })
    expect(r.errorCodes).toEqual({})
    expect(r.errors).toBe(0)
    expectConsistent(r)
  })

  it("names a refusal without an envelope code by its HTTP status", async () => {
    const plain = await listenHttp((_req, res) => {
      res.writeHead(503, { "Content-Length": 4 })
      res.end("busy")
    })
    try {
      const r = await stressHttp({ url: `http://127.0.0.1:${portOf(plain)}/`, connections: 2, durationMs: RUN_MS })
      expect(r.requests).toBeGreaterThan(10)
      expect(r.errorCodes).toEqual({ "HTTP 503": r.requests })
    } finally {
      plain.closeAllConnections()
      plain.close()
    }
  })

  it("reports progress while it runs: warm-up first, then counts rising", async () => {
    const seen: Array<{ phase: string; requests: number; currentRps: number }> = []
    const r = await stressHttp({
      url: `http://127.0.0.1:${portOf(chunked)}/`, connections: 2, durationMs: 600, warmupMs: 200,
      progressIntervalMs: 100, onProgress: (p) => seen.push(p)
    })
    expect(seen.length).toBeGreaterThanOrEqual(5)
    expect(seen[0]!.phase).toBe("warmup")
    const measured = seen.filter((p) => p.phase === "measure")
    expect(measured.length).toBeGreaterThanOrEqual(3)
    expect(measured.at(-1)!.requests).toBeGreaterThan(0)
    expect(measured.at(-1)!.requests).toBeLessThanOrEqual(r.requests)
    expect(measured.some((p) => p.currentRps > 0)).toBe(true)
  })

  it("counts a refused target as errors and still stops on time", async () => {
    const closed = await listenHttp(() => {})
    const port = portOf(closed)
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    const r = await stressHttp({ url: `http://127.0.0.1:${port}/`, connections: 2, durationMs: RUN_MS })
    expect(r.requests).toBe(0)
    expect(r.errors).toBeGreaterThan(0)
    expect(r.statusCounts).toEqual({})
  })

  it("counts a server that never answers as timeouts", async () => {
    const silent = await listenHttp(() => {})
    try {
      const r = await stressHttp({ url: `http://127.0.0.1:${portOf(silent)}/`, connections: 3, durationMs: RUN_MS, timeoutMs: 100 })
      expect(r.requests).toBe(0)
      expect(r.timeouts).toBeGreaterThanOrEqual(3)
    } finally {
      silent.closeAllConnections()
      silent.close()
    }
  })

  it("refuses targets that are not loopback", async () => {
    for (const url of ["http://10.0.0.1:8080/price", "http://example.com/", "http://127.0.0.2/", "http://[::2]/"]) {
      await expect(stressHttp({ url, connections: 1, durationMs: 100 })).rejects.toThrow(/loopback|refusing/)
    }
    await expect(stressHttp({ url: "http://[::1]:1/", connections: 0, durationMs: 100 })).rejects.toThrow(/connections/)
  })
})

describe("formatResult", () => {
  const r: StressResult = {
    requests: 10, errors: 2, timeouts: 1, statusCounts: { "200": 6, "404": 1, "429": 3 },
    firstAnswers: { "200": '{"success":true}', "404": '{"code":"UNKNOWN_ASSET"}', "429": '{"code":"RATE_LIMITED"}' },
    errorCodes: { UNKNOWN_ASSET: 1, RATE_LIMITED: 3 },
    durationMs: 2000, rps: 5, p50Ms: 1.234, p90Ms: 2.5, p99Ms: 7, maxMs: 12.25
  }

  it("shows what the first refusal of each kind said, and not the successes", () => {
    const text = formatResult("HTTP", r)
    expect(text).toContain('first 404: {"code":"UNKNOWN_ASSET"}')
    expect(text).not.toContain("first 200")
  })

  it("summarises requests/s, p50/p90/p99/max and errors by code, most frequent first", () => {
    const text = formatResult("HTTP", r)
    expect(text).toContain("10 in 2.00 s = 5 req/s")
    expect(text).toContain("p50 1.23 ms  p90 2.50 ms  p99 7.00 ms  max 12.25 ms")
    expect(text).toContain("errors     RATE_LIMITED: 3  UNKNOWN_ASSET: 1  (transport errors 2, timeouts 1)")
    expect(formatResult("UDP", { ...r, errorCodes: {} })).toContain("errors     none refused  (transport errors 2, timeouts 1)")
  })
})

describe("formatProgress", () => {
  it("shows elapsed time, requests so far, the current rate and errors on one short line", () => {
    const line = formatProgress("HTTP", { phase: "measure", elapsedMs: 3_450, durationMs: 10_000, requests: 1_234_567, errors: 12, currentRps: 98_765.4 })
    expect(line).toBe("HTTP  3.5/10.0 s  requests 1,234,567  98,765 req/s  errors 12")
    expect(line.length).toBeLessThan(80)
    expect(formatProgress("UDP", { phase: "warmup", elapsedMs: 500, durationMs: 1_000, requests: 0, errors: 0, currentRps: 0 }))
      .toBe("UDP  warming up 0.5/1.0 s")
  })
})

describe("stressUdp", () => {
  let echo: dgram.Socket
  let silent: dgram.Socket
  let constant: dgram.Socket

  beforeAll(async () => {
    // Replies like the LPO: echoes the rid, every fifth one rate limited.
    let n = 0
    echo = await bindUdp((socket, msg, rinfo) => {
      const [, , , , rid] = msg.toString("latin1").split(" ")
      const reply = n++ % 5 === 4 ? { ok: false, rid, code: "RATE_LIMITED" } : { ok: true, rid, asset: "BTC" }
      socket.send(JSON.stringify(reply), rinfo.port, rinfo.address)
    })
    silent = await bindUdp(() => {})
    // A baseline-style server: the same reply whatever was asked, so replies match by order.
    constant = await bindUdp((socket, _msg, rinfo) => socket.send('{"ok":true}', rinfo.port, rinfo.address))
  })

  afterAll(() => {
    echo.close()
    silent.close()
    constant.close()
  })

  it("matches replies by rid and counts their codes", async () => {
    const r = await stressUdp({
      host: "127.0.0.1",
      port: echo.address().port,
      payload: (i) => Buffer.from(`v1 price key BTC ${i}`),
      concurrency: 8,
      durationMs: RUN_MS,
      warmupMs: 50
    })
    expect(r.requests).toBeGreaterThan(100)
    expect(r.statusCounts["ok"]).toBeGreaterThan(0)
    expect(r.statusCounts["RATE_LIMITED"]).toBeGreaterThan(0)
    expect(JSON.parse(r.firstAnswers["RATE_LIMITED"] ?? "")).toMatchObject({ ok: false, code: "RATE_LIMITED" })
    expect(Object.keys(r.firstAnswers).sort()).toEqual(["RATE_LIMITED", "ok"])
    expect(r.errorCodes).toEqual({ RATE_LIMITED: r.statusCounts["RATE_LIMITED"] })
    expect(r.timeouts).toBe(0)
    expectConsistent(r)
  })

  it("matches replies without a rid in order", async () => {
    const r = await stressUdp({ host: "localhost", port: constant.address().port, payload: "ping", concurrency: 4, durationMs: RUN_MS })
    expect(r.requests).toBeGreaterThan(100)
    expect(r.statusCounts).toEqual({ ok: r.requests })
    expectConsistent(r)
  })

  it("counts timeouts when the server never answers", async () => {
    const r = await stressUdp({
      host: "127.0.0.1",
      port: silent.address().port,
      payload: (i) => `v1 price key BTC ${i}`,
      concurrency: 4,
      durationMs: RUN_MS,
      timeoutMs: 100
    })
    expect(r.requests).toBe(0)
    expect(r.statusCounts).toEqual({})
    // 4 in flight, each replaced after 100 ms (+ up to 25 ms sweep delay) within 500 ms: several rounds.
    expect(r.timeouts).toBeGreaterThanOrEqual(8)
    expect(r.p99Ms).toBe(0)
  })

  it("refuses targets that are not loopback", async () => {
    for (const host of ["8.8.8.8", "192.168.1.1", "example.com", "0.0.0.0"]) {
      await expect(stressUdp({ host, port: 2679, payload: "x", concurrency: 1, durationMs: 100 })).rejects.toThrow(/loopback/)
    }
  })
})

describe("stressCli", () => {
  it("prints JSON results for an HTTP target", async () => {
    const server = await listenHttp((_req, res) => res.end("ok"))
    const out: Array<string> = []
    try {
      const code = await stressCli(
        ["--http", `http://127.0.0.1:${portOf(server)}/price?asset=ETH`, "--connections", "2", "--duration", "300ms", "--warmup", "0s", "--json"],
        (line) => out.push(line)
      )
      expect(code).toBe(0)
      const parsed = JSON.parse(out.join("\n")) as { http: StressResult }
      expect(parsed.http.requests).toBeGreaterThan(0)
      expect(parsed.http.statusCounts["200"]).toBe(parsed.http.requests)
    } finally {
      server.closeAllConnections()
      server.close()
    }
  })

  it("rewrites a progress line on a terminal while it runs, and clears it before the summary; none with --json", async () => {
    const server = await listenHttp((_req, res) => res.end("ok"))
    const events: Array<string> = []
    const sink: ProgressSink = { update: (line) => events.push(`update ${line}`), end: () => events.push("end") }
    try {
      const args = ["--http", `http://127.0.0.1:${portOf(server)}/`, "--connections", "2", "--duration", "1200ms", "--warmup", "0s"]
      expect(await stressCli(args, (line) => events.push(`out ${line.split("\n")[0]}`), undefined, sink)).toBe(0)
      const updates = events.filter((e) => e.startsWith("update HTTP "))
      expect(updates.length).toBeGreaterThanOrEqual(2)
      expect(updates.at(-1)).toMatch(/requests [\d,]+ {2}[\d,]+ req\/s {2}errors 0$/)
      // The line is cleared, then the summary printed.
      expect(events.slice(-2)).toEqual(["end", "out HTTP http://127.0.0.1:" + portOf(server) + "/price?asset=BTC (2 connections)"])

      events.length = 0
      expect(await stressCli([...args.slice(0, 5), "300ms", "--json"], (line) => events.push(`out ${line}`), undefined, sink)).toBe(0)
      expect(events.filter((e) => !e.startsWith("out "))).toEqual([])
    } finally {
      server.closeAllConnections()
      server.close()
    }
  })

  it("piped (the built CLI, stderr not a terminal): no progress line, no control characters", async () => {
    const server = await listenHttp((_req, res) => res.end("ok"))
    try {
      const cli = join(import.meta.dirname, "..", "dist", "src", "programs", "cli.js")
      const child = spawn(process.execPath, [cli, "stress", "--http", `http://127.0.0.1:${portOf(server)}/`, "--connections", "2", "--duration", "1200ms", "--warmup", "0s"],
        { stdio: ["ignore", "pipe", "pipe"] })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (d: Buffer) => void (stdout += d.toString()))
      child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()))
      const code = await new Promise<number | null>((resolve) => child.on("exit", resolve))
      expect(code).toBe(0)
      expect(stdout).toMatch(/req\/s/)
      expect(stdout + stderr).not.toContain("\r")
      expect(stdout + stderr).not.toContain("\u001b")
      expect(stderr).not.toMatch(/warming up|requests [\d,]+ {2}/)
    } finally {
      server.closeAllConnections()
      server.close()
    }
  }, 15_000)

  it("rejects bad usage and non-loopback targets with distinct exit codes", async () => {
    const out: Array<string> = []
    expect(await stressCli([], (l) => out.push(l))).toBe(2)
    expect(await stressCli(["--http", "http://127.0.0.1:1/", "--duration", "soon"], (l) => out.push(l))).toBe(2)
    expect(await stressCli(["--udp", "10.1.2.3:2679", "--duration", "100ms"], (l) => out.push(l))).toBe(1)
    expect(out.join("\n")).toMatch(/refusing target "10\.1\.2\.3"/)
  })
})

describe("parseHttpResponse", () => {
  const parse = (text: string) => parseHttpResponse(Buffer.from(text, "latin1"))

  it("frames Content-Length, chunked and bodiless answers", () => {
    expect(parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")).toEqual({ status: 200, end: 40, close: false })
    expect(parse("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nhi")).toBe(0)
    expect(parse("HTTP/1.1 429 Too Many\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")).toMatchObject({ status: 429, close: true })
    const chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    expect(parse(chunked)).toEqual({ status: 200, end: chunked.length, close: false })
    expect(parse(chunked.slice(0, -2))).toBe(0)
    expect(parse("HTTP/1.1 204 No Content\r\n\r\n")).toMatchObject({ status: 204, end: 27 })
    expect(parse("HTTP/1.1 200 OK\r\n\r\nbody until close")).toBe(-1)
    expect(parse("SSH-2.0-OpenSSH\r\n\r\n")).toBe(-1)
  })
})

describe("LatencyHistogram", () => {
  it("reports percentiles within the bucket resolution of the exact ones", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 5_000_000 }), { minLength: 1, maxLength: 300 }), fc.constantFrom(50, 90, 99, 100), (us, p) => {
        const h = new LatencyHistogram()
        for (const v of us) h.recordMs(v / 1000)
        const sorted = [...us].sort((a, b) => a - b)
        const exactUs = sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!
        const reportedUs = h.percentileMs(p) * 1000
        expect(h.count).toBe(us.length)
        expect(Math.abs(reportedUs - exactUs)).toBeLessThanOrEqual(Math.max(0.5, exactUs / 64))
        expect(h.percentileMs(p)).toBeLessThanOrEqual(sorted[sorted.length - 1]! / 1000)
        expect(h.maxMs()).toBe(sorted[sorted.length - 1]! / 1000)
      })
    )
  })
})
