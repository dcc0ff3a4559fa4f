import fc from "fast-check"
import { subscribe, unsubscribe } from "node:diagnostics_channel"
import { createServer, IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http"
import { connect, type Server as NetServer } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type FastHttpServer, makeFastHttpServer } from "../src/layers/http/fastHttp.ts"
import { originForm } from "../src/layers/http/httpHead.ts"

/**
 * Differential test of the fast path against node's own parser (llhttp): the same bytes go to a
 * plain node:http server and to the fast server (whose fallback is node:http too), and the requests
 * each side parsed are compared. The fast path may serve, reject or hand over, but never answer
 * differently: every request it serves itself is one llhttp parsed, in the same order, and the
 * requests it hands over continue that sequence exactly. Seeded like every property test (fixed
 * under CI, see test/support/propertySeed.ts).
 */

const CASES = 300

/** A request as both sides name it: method and origin-form target; marked when node:http refuses it itself. */
const requestName = (req: IncomingMessage): string =>
  `${req.httpVersion === "1.1" && req.headers.host === undefined ? "REFUSED " : ""}${req.method} ${originForm(req.url ?? "") ?? req.url}`

/**
 * Record every request llhttp parsed on `server`, from node's diagnostics channel: unlike the
 * 'request' event it also reports those node:http refuses itself (an HTTP/1.1 request without
 * Host is answered 400 and `Connection: close`, though node still parses what was pipelined after it).
 */
const recordParsed = (server: HttpServer, log: Array<string>): (() => void) => {
  const record = (message: unknown) => {
    if (typeof message !== "object" || message === null || !("server" in message) || message.server !== server) return
    if ("request" in message && message.request instanceof IncomingMessage) log.push(requestName(message.request))
  }
  subscribe("http.server.request.start", record)
  return () => void unsubscribe("http.server.request.start", record)
}

/** Read the body, answer. */
const answer = (req: IncomingMessage, res: ServerResponse) => {
  req.resume()
  res.end("ok")
}

/** Nothing parsed after a request node:http refused itself is answered (it closes): cut there. */
const answerable = (log: ReadonlyArray<string>): ReadonlyArray<string> => {
  const refused = log.findIndex((name) => name.startsWith("REFUSED "))
  return refused === -1 ? log : log.slice(0, refused)
}

const listen = async (server: NetServer | HttpServer): Promise<number> => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
  const address = server.address()
  return typeof address === "object" && address !== null ? address.port : 0
}

/** Send the bytes and half-close; resolve once the server has closed too (every side does, on FIN). */
const deliver = (port: number, bytes: string): Promise<"closed" | "timeout"> =>
  new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1", () => socket.end(Buffer.from(bytes, "latin1")))
    socket.on("error", () => {})
    socket.resume()
    const timer = setTimeout(() => {
      socket.destroy()
      resolve("timeout")
    }, 3000)
    socket.on("close", () => {
      clearTimeout(timer)
      resolve("closed")
    })
  })

// Bytes that llhttp treats specially somewhere in a head: controls, TAB, CR, LF, SP, DEL, 8-bit, NBSP.
const ODD_BYTES = ["\x00", "\x01", "\x08", "\t", "\n", "\x0b", "\x0c", "\r", "\x1f", " ", "\x7f", "\x80", "\xa0", "\xff", ":", ",", "/"]

// Weighted towards requests the fast path serves, so that pipelines of served requests are common.
const methodArb = fc.constantFrom("GET", "GET", "GET", "GET", "GET", "HEAD", "HEAD", "POST", "OPTIONS", "get")
const targetArb = fc.constantFrom("/price?asset=BTC", "/price?asset=BTC", "/price", "/price/ETH?quote=USDT", "http://h:1/price?x=1", "http://a<b/price", "/other", "*", "/price?asset=BTC&x=")
const versionArb = fc.constantFrom("HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0")
const headerArb: fc.Arbitrary<readonly [string, string]> = fc.oneof(
  { weight: 4, arbitrary: fc.constant(["X-API-Key", "k1"] as const) },
  { weight: 2, arbitrary: fc.constantFrom("keep-alive", "close", "closed", "keep-alive, close", "Upgrade", "x, close").map((v) => ["Connection", v] as const) },
  { weight: 3, arbitrary: fc.constantFrom("0", "0", "00", " 0 ", "\t0", "\x0b0", "0\x0c", "\xa00", "3", "0, 0", "+0", "").map((v) => ["Content-Length", v] as const) },
  { weight: 1, arbitrary: fc.constantFrom("chunked", "identity").map((v) => ["Transfer-Encoding", v] as const) },
  { weight: 1, arbitrary: fc.constant(["Expect", "100-continue"] as const) },
  { weight: 1, arbitrary: fc.constant(["Upgrade", "websocket"] as const) },
  { weight: 1, arbitrary: fc.constant(["Host", "again"] as const) }
)
const requestArb = fc
  .record({
    method: methodArb,
    target: targetArb,
    version: versionArb,
    host: fc.integer({ min: 0, max: 19 }).map((n) => n > 0), // mostly with Host
    headers: fc.array(headerArb, { maxLength: 3 }),
    body: fc.constantFrom("", "", "", "", "abc", "0\r\n\r\n")
  })
  .map(({ method, target, version, host, headers, body }) =>
    `${method} ${target} ${version}\r\n${host ? "Host: h\r\n" : ""}${headers.map(([n, v]) => `${n}: ${v}\r\n`).join("")}\r\n${body}`)

type Mutation =
  | { readonly kind: "insert"; readonly at: number; readonly byte: string }
  | { readonly kind: "lineBreak"; readonly nth: number; readonly with: string }
  | { readonly kind: "allLf" }
  | { readonly kind: "fold"; readonly nth: number }
  | { readonly kind: "duplicateLine"; readonly nth: number }
const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), byte: fc.constantFrom(...ODD_BYTES) }),
  fc.record({ kind: fc.constant("lineBreak" as const), nth: fc.nat(), with: fc.constantFrom("\n", "\r", "\r\r\n", "\n\r", "\r\n\n") }),
  fc.constant({ kind: "allLf" as const }),
  fc.record({ kind: fc.constant("fold" as const), nth: fc.nat() }),
  fc.record({ kind: fc.constant("duplicateLine" as const), nth: fc.nat() })
)

/** Positions of the CRLFs in `text`. */
const lineBreaks = (text: string): Array<number> => {
  const at: Array<number> = []
  for (let i = text.indexOf("\r\n"); i !== -1; i = text.indexOf("\r\n", i + 2)) at.push(i)
  return at
}

const mutate = (text: string, mutation: Mutation): string => {
  const breaks = lineBreaks(text)
  const pick = (nth: number) => breaks[nth % Math.max(1, breaks.length)]
  switch (mutation.kind) {
    case "insert": {
      // Mostly inside the first head, where the parsers differ; sometimes anywhere.
      const firstHeadEnd = text.indexOf("\r\n\r\n")
      const span = firstHeadEnd === -1 || mutation.at % 4 === 0 ? text.length : firstHeadEnd
      const at = mutation.at % (span + 1)
      return text.slice(0, at) + mutation.byte + text.slice(at)
    }
    case "lineBreak": {
      const at = pick(mutation.nth)
      return at === undefined ? text : text.slice(0, at) + mutation.with + text.slice(at + 2)
    }
    case "allLf":
      return text.replaceAll("\r\n", "\n")
    case "fold": {
      const at = pick(mutation.nth)
      return at === undefined ? text : `${text.slice(0, at)}\r\n folded${text.slice(at)}`
    }
    case "duplicateLine": {
      const at = pick(mutation.nth)
      if (at === undefined) return text
      const start = text.lastIndexOf("\r\n", at - 1)
      const line = text.slice(start === -1 ? 0 : start + 2, at)
      return `${text.slice(0, at)}\r\n${line}${text.slice(at)}`
    }
  }
}

/** The smuggling case from the issue, and the bare-LF ones: kept in every run. */
const PINNED: ReadonlyArray<string> = [
  `GET /price?asset=BTC&x=\nContent-Length:\t56 HTTP/1.1\r\nHost: h\r\n\r\n${"GET /price?asset=ETH HTTP/1.1\r\nHost: h\r\nX-Pad: 12345678\r\n\r\n"}`,
  "GET /price HTTP/1.1\nHost: h\n\n",
  "GET /price HTTP/1.1\r\nHost: h\r\n\nGET /price?asset=2 HTTP/1.1\r\nHost: h\r\n\r\n",
  "GET /price HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\nGET /price?asset=2 HTTP/1.1\r\nHost: h\r\n\r\n",
  "GET /price HTTP/1.1\r\nHost: h\r\nContent-Length: \x0b0\r\n\r\n",
  "GET /price HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\nGET /price?asset=2 HTTP/1.1\r\nHost: h\r\n\r\n",
  "GET /price HTTP/1.1\r\nHost: h\r\n\r\n\r\nGET /price?asset=2 HTTP/1.1\r\nHost: h\r\n\r\n",
  "GET /price HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\nGET /price?asset=2 HTTP/1.1\r\nHost: h\r\n\r\n",
  "GET /price HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\nGET /price?asset=2 HTTP/1.1\r\nHost: h\r\n\r\n",
  "HEAD /price HTTP/1.1\r\nHost: h\r\n\r\nGET /price?asset=2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
]

describe("fast path against llhttp", () => {
  const plainLog: Array<string> = []
  const fastLog: Array<string> = []
  const fallbackLog: Array<string> = []
  let plain: HttpServer
  let fast: FastHttpServer
  let plainPort = 0
  let fastPort = 0
  const stopRecording: Array<() => void> = []

  beforeAll(async () => {
    plain = createServer(answer)
    const fallback = createServer(answer)
    stopRecording.push(recordParsed(plain, plainLog), recordParsed(fallback, fallbackLog))
    fast = makeFastHttpServer({
      fallback,
      route: (request) => {
        if (!request.target.startsWith("/price")) return undefined
        fastLog.push(`${request.method} ${request.target}`)
        return (reply) => reply(200, ["content-length", 2], "ok")
      }
    })
    plainPort = await listen(plain)
    fastPort = await listen(fast.server)
  })

  afterAll(() => {
    for (const stop of stopRecording) stop()
    fast.closeAll()
    fast.server.close()
    plain.closeAllConnections()
    plain.close()
  })

  /** What each side parsed from the bytes. */
  const compare = async (bytes: string) => {
    plainLog.length = 0
    fastLog.length = 0
    fallbackLog.length = 0
    const [plainEnd, fastEnd] = await Promise.all([deliver(plainPort, bytes), deliver(fastPort, bytes)])
    return { bytes, plainEnd, fastEnd, llhttp: [...plainLog], fast: [...fastLog], handedOver: [...fallbackLog] }
  }

  const expectSameRequests = (seen: Awaited<ReturnType<typeof compare>>) => {
    // What the fast path served itself is what llhttp parsed first, in order.
    expect({ bytes: seen.bytes, served: seen.fast }).toEqual({ bytes: seen.bytes, served: seen.llhttp.slice(0, seen.fast.length) })
    // And node:http, given the rest, parsed the rest: together exactly llhttp's requests (so
    // whatever llhttp rejects was rejected or handed over, never served), up to a request node
    // refuses itself (the fast path refuses it too, with a 400, and both close).
    const together = answerable([...seen.fast, ...seen.handedOver])
    expect({ bytes: seen.bytes, requests: together }).toEqual({ bytes: seen.bytes, requests: answerable(seen.llhttp) })
    expect([seen.plainEnd, seen.fastEnd]).toEqual(["closed", "closed"])
  }

  it("parses the pinned cases as llhttp does", async () => {
    for (const bytes of PINNED) expectSameRequests(await compare(bytes))
    // The smuggling case: llhttp answers one 400 and serves nothing.
    expect((await compare(PINNED[0]!)).llhttp).toEqual([])
  })

  it("serves, rejects or hands over generated requests exactly as llhttp parses them", async () => {
    const caseArb = fc
      .tuple(fc.array(requestArb, { minLength: 1, maxLength: 3 }), fc.boolean(), fc.array(mutationArb, { maxLength: 2 }))
      .map(([requests, blankLines, mutations]) => mutations.reduce(mutate, requests.join(blankLines ? "\r\n" : "")))
    await fc.assert(fc.asyncProperty(caseArb, async (bytes) => expectSameRequests(await compare(bytes))), { numRuns: CASES })
  })
})
