import { subscribe } from "node:diagnostics_channel"
import { IncomingMessage, type Server as HttpServer, STATUS_CODES } from "node:http"
import { createServer, type Server as NetServer, type Socket } from "node:net"
import { Duplex } from "node:stream"
import { type KeyHashMemo, newKeyHashMemo } from "../../domain/apiKey.ts"
import { classifyHead, type HeadProblem, type ParsedHead, parseRequestHead, readRequestLine, type RequestLine } from "./httpHead.ts"

/**
 * A minimal HTTP/1.1 server for the price hot path, on raw sockets.
 *
 * Why: node:http builds an IncomingMessage, a ServerResponse and their streams for every request;
 * that alone costs about as much as everything a price answer does (bench/README.md, "Measurements
 * behind design choices").
 *
 * Scope, deliberately small: GET and HEAD requests without a body whose route the caller claims.
 * Anything else (another method, a body, an upgrade, a route the caller does not claim, a head this
 * parser is not sure of) is handed, with the bytes already read, to a node:http server on the same
 * connection, which then owns it for good. Keep-alive and pipelining follow RFC 9112: responses in
 * request order, HTTP/1.1 persistent unless `Connection: close`, HTTP/1.0 only with
 * `Connection: keep-alive`.
 *
 * Parsing rule: node's own parser (llhttp, strict mode) is the reference. A head is served here
 * only when llhttp would read it as the same request; what llhttp surely rejects is answered 400
 * here; anything else unusual is handed over so that llhttp decides (./httpHead.ts, whose character
 * classes were read off llhttp in Node 24 byte by byte; test/fastHttp.llhttp.test.ts keeps checking them).
 */

export interface FastRequest {
  readonly method: "GET" | "HEAD"
  /** Request target: path and query (an absolute-form target as its origin-form). */
  readonly target: string
  /** Header names and values as sent: [name, value, name, value, …]. */
  readonly rawHeaders: ReadonlyArray<string>
  readonly clientIp: string
  /** performance.now() when the request head was complete. */
  readonly startedAt: number
  /** The connection's last API key and its hash (see KeyHashMemo), shared by its requests. */
  readonly keyMemo: KeyHashMemo
}

/** Write one response: status, headers as [name, value, …], body. For HEAD the body is not sent. */
export type Reply = (status: number, headers: ReadonlyArray<string | number>, body: string) => void

/** A handler for the request, or undefined to leave the connection to the fallback server. */
export type FastRoute = (request: FastRequest) => ((reply: Reply) => void) | undefined

export interface RejectionResponse {
  /** Header names and values, as for Reply (content-length included). */
  readonly headers: ReadonlyArray<string | number>
  readonly body: string
}

export interface FastHttpOptions {
  readonly route: FastRoute
  readonly fallback: HttpServer
  /** Largest request head accepted (request line + headers). Default 16 KiB. */
  readonly maxHeaderBytes?: number
  /** A connection with no traffic at all for this long is closed. Default 65 s. */
  readonly idleTimeoutMs?: number
  /**
   * A connection that has sent no byte for this long since it was accepted is closed, so silent
   * sockets cannot hold the `maxConnections` places. Default: idleTimeoutMs.
   */
  readonly firstByteTimeoutMs?: number
  /**
   * A request head must be complete within this long of the connection's first byte, or of the
   * previous response on a kept-alive connection, else the connection is closed (408 first when
   * part of a head was received). Also the keep-alive timeout advertised in responses, since an
   * idle kept-alive connection is closed after it. Both paths, handed-over connections included.
   * Default 10 s.
   */
  readonly headDeadlineMs?: number
  /** A request body must be complete within this long of its head, else the connection is closed. Default 30 s. */
  readonly bodyDeadlineMs?: number
  /**
   * Open connections allowed on this listener (handed-over ones included), read for each new
   * connection. Default unlimited.
   */
  readonly maxConnections?: () => number
  /**
   * The response to a request rejected here (400: llhttp would reject it too; 431: head larger
   * than maxHeaderBytes) when its request line could be read; undefined keeps the bare answer.
   * The connection is closed after it either way. Without a readable request line the answer is a
   * bare 400 (or 431) and close.
   */
  readonly rejection?: (status: 400 | 431, requestLine: RequestLine) => RejectionResponse | undefined
}

export interface FastHttpServer {
  readonly server: NetServer
  /** Requests whose response has not been written yet. */
  readonly inFlight: () => number
  /** Shutdown: close idle connections now, the others right after their current response. */
  readonly drain: () => void
  /** Shutdown, last step: destroy every connection still open, handed over ones included. */
  readonly closeAll: () => void
}

const FORBIDDEN_IN_VALUE = /[\0\r\n]/
/** A CR not followed by LF (a CR at the very end may still be), or an LF not preceded by CR. */
const BARE_LINE_BREAK = /\r(?!\n|$)|(?<!\r)\n/g

let dateSecond = -1
let dateText = ""
const httpDate = (): string => {
  const now = Date.now()
  const second = Math.floor(now / 1000)
  if (second !== dateSecond) {
    dateSecond = second
    dateText = new Date(now).toUTCString()
  }
  return dateText
}

const statusLines = new Map<number, string>()
const statusLine = (status: number): string => {
  const line = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Unknown"}\r\n`
  if (STATUS_CODES[status] !== undefined) statusLines.set(status, line)
  return line
}

const DEFAULT_HEAD_DEADLINE_MS = 10_000
let keepAliveTailSeconds = -1
let keepAliveTailText = ""
const keepAliveTail = (seconds: number): string => {
  if (seconds !== keepAliveTailSeconds) {
    keepAliveTailSeconds = seconds
    keepAliveTailText = `connection: keep-alive\r\nkeep-alive: timeout=${seconds}\r\n\r\n`
  }
  return keepAliveTailText
}

/**
 * Serialise one response. Header values containing CR/LF are dropped (no response splitting).
 * `omitBody` (the answer to a HEAD): the same head, content-length included, without the body.
 */
export const formatResponse = (
  status: number,
  headers: ReadonlyArray<string | number>,
  body: string,
  close: boolean,
  omitBody = false,
  keepAliveSeconds = DEFAULT_HEAD_DEADLINE_MS / 1000
): string => {
  let out = statusLines.get(status) ?? statusLine(status)
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const value = headers[i + 1]!
    if (typeof value === "number" || !FORBIDDEN_IN_VALUE.test(value)) out += `${headers[i]}: ${value}\r\n`
  }
  out += `date: ${httpDate()}\r\n`
  out += close ? "connection: close\r\n\r\n" : keepAliveTail(keepAliveSeconds)
  return omitBody ? out : out + body
}

const BAD_REQUEST = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
const HEAD_TOO_LARGE = "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
const REQUEST_TIMEOUT = "HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

/** A deadline not running (a fresh connection before its first byte, a request being served). */
const NO_DEADLINE = -1
/** A deadline running since about now: the next sweep writes its start time (no clock read per request). */
const UNSTAMPED = -2

/** A connection given to node:http, watched for the head and body deadlines node does not apply to it. */
interface HandedOver {
  readonly socket: Socket
  /** What node:http sees as the socket; node sets and clears its `parser`. */
  readonly duplex: Duplex
  /** Waiting for a request head since then (when no request or response is open). */
  headSince: number
  /** The newest request, until its body has been read to the end. */
  request: IncomingMessage | undefined
  bodySince: number
  /** Requests whose response has not finished. */
  openResponses: number
}

/**
 * node:http's own head and request timeouts do not run for connections given to it with
 * `emit("connection")`: they are checked by a timer that `listen()` starts, for connections it
 * registered when they arrived (lib/_http_server.js, setupConnectionsTracking on 'listening'), and
 * the fallback server never listens. So handed-over connections are timed here, from node:http's
 * diagnostics channels: unlike the 'request' event they also report requests that go to
 * 'checkContinue' or are answered by node itself (missing Host), and adding listeners for them
 * would change node's behaviour.
 */
const handedOverByDuplex = new WeakMap<object, HandedOver>()
let watchingFallbacks = false
const watchFallbackRequests = (): void => {
  if (watchingFallbacks) return
  watchingFallbacks = true
  const handedOverOf = (message: unknown): HandedOver | undefined => {
    if (typeof message !== "object" || message === null || !("socket" in message)) return undefined
    const socket = message.socket
    return typeof socket === "object" && socket !== null ? handedOverByDuplex.get(socket) : undefined
  }
  subscribe("http.server.request.start", (message) => {
    const handed = handedOverOf(message)
    if (handed === undefined || typeof message !== "object" || message === null || !("request" in message)) return
    if (!(message.request instanceof IncomingMessage)) return
    handed.request = message.request
    handed.bodySince = UNSTAMPED
    handed.openResponses++
    handed.headSince = NO_DEADLINE
  })
  subscribe("http.server.response.finish", (message) => {
    const handed = handedOverOf(message)
    if (handed === undefined) return
    handed.openResponses--
    if (handed.openResponses === 0) handed.headSince = UNSTAMPED
  })
}

/** Give a connection, with the bytes already read, to a node:http server for good. */
const handOver = (socket: Socket, buffered: Buffer | undefined, fallback: HttpServer): Duplex => {
  const duplex = new Duplex({
    read: () => void socket.resume(),
    write: (chunk: Buffer, _encoding, callback) => void socket.write(chunk, callback),
    final: (callback) => {
      socket.end()
      callback()
    },
    destroy: (error, callback) => {
      socket.destroy()
      callback(error)
    }
  })
  // node:http reads the peer address from the connection.
  Object.defineProperty(duplex, "remoteAddress", { get: () => socket.remoteAddress })
  Object.defineProperty(duplex, "remotePort", { get: () => socket.remotePort })
  if (buffered !== undefined && buffered.length > 0) duplex.push(buffered)
  const onData = (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause()
  }
  const onEnd = () => duplex.push(null)
  const onClose = () => duplex.destroy()
  socket.on("data", onData)
  socket.on("end", onEnd)
  socket.on("close", onClose)
  wrapped.set(duplex, {
    socket,
    detach: () => {
      socket.off("data", onData)
      socket.off("end", onEnd)
      socket.off("close", onClose)
    }
  })
  fallback.emit("connection", duplex)
  return duplex
}

const wrapped = new WeakMap<Duplex, { readonly socket: Socket; readonly detach: () => void }>()

/**
 * The connection itself, for an upgrade node:http has let go of (a WebSocket): the wrapper is
 * detached, so the upgraded protocol writes to the socket directly (the wrapper passes one chunk
 * per write and would cost a system call per message). `head` (the bytes node:http read past the
 * request) comes back with anything the wrapper still held behind it. Undefined for a socket this
 * server did not hand over (the caller keeps what it has).
 */
export const takeUpgradedSocket = (duplex: Duplex, head: Buffer): { readonly socket: Socket; readonly head: Buffer } | undefined => {
  const entry = wrapped.get(duplex)
  if (entry === undefined) return undefined
  wrapped.delete(duplex)
  entry.detach()
  const held: Array<Buffer> = [head]
  for (let chunk: unknown = duplex.read(); chunk !== null; chunk = duplex.read()) if (Buffer.isBuffer(chunk)) held.push(chunk)
  // Reading resumes with whoever takes the socket now (it was paused if the wrapper filled up).
  entry.socket.resume()
  return { socket: entry.socket, head: held.length === 1 ? head : Buffer.concat(held) }
}

/** node:http let go of the connection (an upgrade or CONNECT took it): no longer ours to time. */
const detachedFromHttp = (duplex: Duplex): boolean => !("parser" in duplex) || duplex.parser === null || duplex.parser === undefined

export const makeFastHttpServer = (options: FastHttpOptions): FastHttpServer => {
  const maxHeaderBytes = options.maxHeaderBytes ?? 16 * 1024
  // Pipelined bytes held while a response is pending; past this, stop reading the socket.
  const maxPendingBytes = 4 * maxHeaderBytes
  const idleTimeoutMs = options.idleTimeoutMs ?? 65_000
  const firstByteTimeoutMs = options.firstByteTimeoutMs ?? idleTimeoutMs
  const headDeadlineMs = options.headDeadlineMs ?? DEFAULT_HEAD_DEADLINE_MS
  const bodyDeadlineMs = options.bodyDeadlineMs ?? 30_000
  const keepAliveSeconds = Math.floor(headDeadlineMs / 1000)
  const maxConnections = options.maxConnections ?? (() => Infinity)
  // Deadlines are checked by one sweep per listener rather than a timer per request; a deadline
  // closes its connection between its limit and its limit plus two sweep periods.
  const sweepEveryMs = Math.max(5, Math.min(500, Math.floor(Math.min(headDeadlineMs, bodyDeadlineMs) / 10)))
  interface Connection {
    readonly socket: Socket
    busy: boolean
    /** No more requests are read (closing, handed over, or closed). */
    done: boolean
    /** Waiting for the socket's write buffer to drain before reading on. */
    waitingDrain: boolean
    /** Unparsed bytes as a latin1 string (one char per byte, lossless): finding the end of a head is an inlined string search. */
    buffered: string | undefined
    /** How far `buffered` has been searched for a bare CR or LF (partial heads only). */
    scanned: number
    /** The head deadline's start (performance.now()), NO_DEADLINE or UNSTAMPED. */
    headSince: number
    readonly keyMemo: KeyHashMemo
  }
  const connections = new Set<Connection>()
  const handedOver = new Set<HandedOver>()
  const sockets = new Set<Socket>()
  let draining = false
  let busyCount = 0

  let sweepTimer: ReturnType<typeof setInterval> | undefined
  const sweep = () => {
    const now = performance.now()
    for (const conn of connections) {
      // A request being served, or a client not reading its answers, is not waiting for a head.
      if (conn.busy || conn.waitingDrain || conn.headSince === NO_DEADLINE) continue
      if (conn.headSince === UNSTAMPED) conn.headSince = now
      else if (now - conn.headSince >= headDeadlineMs) {
        // Part of a head received: say why (as node:http does); an idle kept-alive connection just closes.
        if (!conn.done && conn.buffered !== undefined) conn.socket.write(REQUEST_TIMEOUT)
        conn.socket.destroy()
      }
    }
    for (const handed of handedOver) {
      if (detachedFromHttp(handed.duplex)) {
        handedOver.delete(handed)
        continue
      }
      if (handed.request !== undefined) {
        if (!handed.request.complete) {
          if (handed.bodySince === UNSTAMPED) handed.bodySince = now
          else if (now - handed.bodySince >= bodyDeadlineMs) handed.socket.destroy()
          continue
        }
        handed.request = undefined
      }
      if (handed.openResponses > 0 || handed.headSince === NO_DEADLINE) continue
      if (handed.headSince === UNSTAMPED) handed.headSince = now
      else if (now - handed.headSince >= headDeadlineMs) handed.socket.destroy()
    }
    if (connections.size === 0 && handedOver.size === 0) {
      clearInterval(sweepTimer)
      sweepTimer = undefined
    }
  }
  const startSweep = () => {
    if (sweepTimer !== undefined) return
    sweepTimer = setInterval(sweep, sweepEveryMs)
    sweepTimer.unref()
  }

  const onConnection = (socket: Socket) => {
    // Past the cap the connection is destroyed at once rather than answered 503: a reliable 503
    // needs the socket kept open until the client has read it (closing with its request unread
    // sends a reset that can discard the answer), which is what the cap exists to avoid.
    if (sockets.size >= maxConnections()) {
      socket.destroy()
      return
    }
    socket.setNoDelay(true)
    // Kept for the connection's whole life, handed over or not: node:http's own timers never run
    // for connections it did not accept itself. Any traffic resets it; the head and body
    // deadlines (the sweep) are what bound a client that trickles.
    socket.setTimeout(firstByteTimeoutMs, () => socket.destroy())
    if (firstByteTimeoutMs !== idleTimeoutMs) socket.once("data", () => void socket.setTimeout(idleTimeoutMs))
    socket.on("error", () => socket.destroy())
    const conn: Connection = {
      socket, busy: false, done: false, waitingDrain: false, buffered: undefined, scanned: 0, headSince: NO_DEADLINE, keyMemo: newKeyHashMemo()
    }
    connections.add(conn)
    sockets.add(socket)
    startSweep()
    socket.once("close", () => {
      sockets.delete(socket)
      connections.delete(conn)
      conn.done = true
      if (conn.busy) {
        conn.busy = false
        busyCount--
      }
    })

    const stopReading = () => {
      conn.done = true
      conn.buffered = undefined
      conn.headSince = UNSTAMPED // a client that never closes its side is cut off at the head deadline
      socket.removeListener("data", onData)
    }
    const finish = (last?: string) => {
      stopReading()
      if (last === undefined) socket.end()
      else socket.end(last)
    }
    const reject = (status: 400 | 431, requestLine: RequestLine | undefined) => {
      const custom = requestLine === undefined ? undefined : options.rejection?.(status, requestLine)
      if (custom === undefined || requestLine === undefined) return finish(status === 400 ? BAD_REQUEST : HEAD_TOO_LARGE)
      finish(formatResponse(status, custom.headers, custom.body, true, requestLine.method === "HEAD"))
    }
    const giveToFallback = (buffer: string) => {
      const headSince = conn.headSince
      stopReading()
      connections.delete(conn)
      watchFallbackRequests()
      const duplex = handOver(socket, Buffer.from(buffer, "latin1"), options.fallback)
      const handed: HandedOver = { socket, duplex, headSince, request: undefined, bodySince: NO_DEADLINE, openResponses: 0 }
      handedOverByDuplex.set(duplex, handed)
      handedOver.add(handed)
      socket.once("close", () => handedOver.delete(handed))
    }

    const serve = (): void => {
      while (!conn.busy && !conn.done && !conn.waitingDrain && conn.buffered !== undefined) {
        const buffer = conn.buffered
        const end = buffer.indexOf("\r\n\r\n")
        let head: ParsedHead | HeadProblem
        if (end === -1) {
          if (buffer.length > maxHeaderBytes) return reject(431, readRequestLine(buffer))
          // llhttp answers a bare CR or LF at once; waiting for a CRLFCRLF that never comes would hang.
          BARE_LINE_BREAK.lastIndex = conn.scanned
          if (!BARE_LINE_BREAK.test(buffer)) {
            conn.scanned = Math.max(0, buffer.length - 1)
            break
          }
          head = classifyHead(buffer)
        } else if (end > maxHeaderBytes) return reject(431, readRequestLine(buffer))
        else head = parseRequestHead(buffer.slice(0, end))
        if ("problem" in head) {
          if (head.problem === "reject") return reject(400, head.requestLine)
          return giveToFallback(buffer)
        }
        const handler = head.special
          ? undefined
          : options.route({ method: head.method, target: head.target, rawHeaders: head.rawHeaders, clientIp: socket.remoteAddress ?? "", startedAt: performance.now(), keyMemo: conn.keyMemo })
        if (handler === undefined) return giveToFallback(buffer)
        conn.buffered = end + 4 === buffer.length ? undefined : buffer.slice(end + 4)
        conn.scanned = 0
        conn.busy = true
        busyCount++
        let sync = true
        const omitBody = head.method === "HEAD"
        const close = head.close
        handler((status, headers, body) => {
          if (!conn.busy) return // a second reply, or one after the connection closed
          conn.busy = false
          busyCount--
          conn.headSince = UNSTAMPED // the next head is due within the deadline of this response
          const closing = close || draining
          const flushed = socket.write(formatResponse(status, headers, body, closing, omitBody, keepAliveSeconds))
          if (closing) return finish()
          if (!flushed) {
            // The client is not reading its answers: read no more requests until it does.
            conn.waitingDrain = true
            socket.once("drain", () => {
              conn.waitingDrain = false
              conn.headSince = UNSTAMPED
              serve()
            })
          }
          if (!sync) serve()
        })
        sync = false
      }
      if (conn.done) return
      if (conn.waitingDrain || (conn.buffered?.length ?? 0) > maxPendingBytes) socket.pause()
      else socket.resume()
      if (draining && !conn.busy && conn.buffered === undefined) finish()
    }

    const onData = (chunk: Buffer) => {
      if (conn.done) return // closing (a drain, a refusal): what the client still sends is not kept
      const text = chunk.toString("latin1")
      conn.buffered = conn.buffered === undefined ? text : conn.buffered + text
      if (conn.headSince === NO_DEADLINE) conn.headSince = UNSTAMPED // the connection's first byte
      serve()
    }
    socket.on("data", onData)
  }

  const server = createServer({ noDelay: true }, onConnection)
  return {
    server,
    inFlight: () => busyCount,
    drain: () => {
      draining = true
      for (const conn of connections) {
        if (conn.busy) continue
        conn.done = true
        conn.buffered = undefined
        conn.headSince = UNSTAMPED
        conn.socket.end()
      }
    },
    closeAll: () => {
      for (const socket of sockets) socket.destroy()
    }
  }
}
