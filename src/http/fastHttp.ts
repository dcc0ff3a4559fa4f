import { type Server as HttpServer, STATUS_CODES } from "node:http"
import { createServer, type Server as NetServer, type Socket } from "node:net"
import { Duplex } from "node:stream"
import { type KeyHashMemo, newKeyHashMemo } from "../domain/apiKey.ts"

/**
 * A minimal HTTP/1.1 server for the price hot path, on raw sockets.
 *
 * Why: node:http builds an IncomingMessage, a ServerResponse and their streams for every request;
 * on this machine that alone costs about as much as everything a price answer does (measured: a
 * raw `net` responder answers ~1.8× the requests of a bare node:http one at the same CPU).
 *
 * Scope, deliberately small: GET requests without a body whose route the caller claims. Anything
 * else (another method, a body, an upgrade, a route the caller does not claim) is handed, with the
 * bytes already read, to a node:http server on the same connection, which then owns it for good.
 * Keep-alive and pipelining follow RFC 9112: responses in request order, HTTP/1.1 persistent unless
 * `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
 */

export interface FastRequest {
  readonly method: string
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

/** Write one response: status, headers as [name, value, …], body. */
export type Reply = (status: number, headers: ReadonlyArray<string | number>, body: string) => void

/** A handler for the request, or undefined to leave the connection to the fallback server. */
export type FastRoute = (request: FastRequest) => ((reply: Reply) => void) | undefined

export interface FastHttpOptions {
  readonly route: FastRoute
  readonly fallback: HttpServer
  /** Largest request head accepted (request line + headers). */
  readonly maxHeaderBytes?: number
  /** A connection with no traffic for this long is closed. */
  readonly idleTimeoutMs?: number
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

interface ParsedHead {
  readonly method: string
  readonly target: string
  readonly http10: boolean
  readonly rawHeaders: Array<string>
  readonly close: boolean
  /** A body, an upgrade or an expectation: not ours to serve. */
  readonly special: boolean
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const FORBIDDEN_IN_VALUE = /[\0\r\n]/

/**
 * The origin-form (`/path?query`) of a request target. RFC 9112 §3.2.2: a server must accept the
 * absolute-form (`http://host:port/path?query`, what a client sends through a proxy), which is
 * served as its path and query. Undefined for anything else but `*`.
 */
export const originForm = (target: string): string | undefined => {
  if (target.startsWith("/") || target === "*") return target
  const scheme = target.slice(0, 8).toLowerCase()
  const authorityStart = scheme.startsWith("http://") ? 7 : scheme.startsWith("https://") ? 8 : -1
  if (authorityStart < 0) return undefined
  let pathStart = authorityStart
  while (pathStart < target.length && target[pathStart] !== "/" && target[pathStart] !== "?") pathStart++
  if (pathStart === authorityStart) return undefined // no host
  return pathStart === target.length ? "/" : target[pathStart] === "?" ? `/${target.slice(pathStart)}` : target.slice(pathStart)
}

/** Parse a request head (without the final CRLFCRLF). Undefined when it is not valid HTTP/1.x. */
export const parseRequestHead = (head: string): ParsedHead | undefined => {
  // Lines found with indexOf rather than split: no array of lines per request.
  const firstEnd = head.indexOf("\r\n")
  const requestLine = firstEnd === -1 ? head : head.slice(0, firstEnd)
  const firstSpace = requestLine.indexOf(" ")
  const lastSpace = requestLine.lastIndexOf(" ")
  if (firstSpace <= 0 || lastSpace === firstSpace) return undefined
  const method = requestLine.slice(0, firstSpace)
  const sent = requestLine.slice(firstSpace + 1, lastSpace)
  const version = requestLine.slice(lastSpace + 1)
  const target = sent.includes(" ") ? undefined : originForm(sent)
  if (!TOKEN.test(method) || target === undefined) return undefined
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") return undefined
  const rawHeaders: Array<string> = []
  let close = version === "HTTP/1.0"
  let special = false
  let host = false
  for (let start = firstEnd + 2; firstEnd !== -1 && start <= head.length;) {
    const lineEnd = head.indexOf("\r\n", start)
    const end = lineEnd === -1 ? head.length : lineEnd
    const colon = head.indexOf(":", start)
    // Also rejects obsolete line folding (a line starting with space) and a line without a colon.
    if (colon <= start || colon >= end) return undefined
    const name = head.slice(start, colon)
    if (!TOKEN.test(name)) return undefined
    const value = head.slice(colon + 1, end).trim()
    if (FORBIDDEN_IN_VALUE.test(value)) return undefined
    start = end + 2
    rawHeaders.push(name, value)
    switch (name.length) {
      case 10:
        if (name.toLowerCase() === "connection") {
          const v = value.toLowerCase()
          if (v.includes("close")) close = true
          else if (v.includes("keep-alive")) close = false
          if (v.includes("upgrade")) special = true
        }
        break
      case 14:
        if (name.toLowerCase() === "content-length" && value !== "0") special = true
        break
      case 17:
        if (name.toLowerCase() === "transfer-encoding") special = true
        break
      case 6:
        if (name.toLowerCase() === "expect") special = true
        break
      case 7:
        if (name.toLowerCase() === "upgrade") special = true
        break
      case 4:
        if (name.toLowerCase() === "host") host = true
        break
    }
  }
  // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400 (as node:http does).
  if (!host && version === "HTTP/1.1") return undefined
  return { method, target, http10: version === "HTTP/1.0", rawHeaders, close, special }
}

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

/** Serialise one response. Header values containing CR/LF are dropped (no response splitting). */
export const formatResponse = (status: number, headers: ReadonlyArray<string | number>, body: string, close: boolean): string => {
  let out = statusLines.get(status) ?? statusLine(status)
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const value = headers[i + 1]!
    if (typeof value === "number" || !FORBIDDEN_IN_VALUE.test(value)) out += `${headers[i]}: ${value}\r\n`
  }
  out += `date: ${httpDate()}\r\n`
  out += close ? "connection: close\r\n\r\n" : "connection: keep-alive\r\nkeep-alive: timeout=65\r\n\r\n"
  return out + body
}

const BAD_REQUEST = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
const HEAD_TOO_LARGE = "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

/** Give a connection, with the bytes already read, to a node:http server for good. */
const handOver = (socket: Socket, buffered: Buffer | undefined, fallback: HttpServer) => {
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
  socket.on("data", (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause()
  })
  socket.on("end", () => duplex.push(null))
  socket.on("close", () => duplex.destroy())
  fallback.emit("connection", duplex)
}

export const makeFastHttpServer = (options: FastHttpOptions): FastHttpServer => {
  const maxHeaderBytes = options.maxHeaderBytes ?? 16 * 1024
  // Pipelined bytes held while a response is pending; past this, stop reading the socket.
  const maxPendingBytes = 4 * maxHeaderBytes
  const idleTimeoutMs = options.idleTimeoutMs ?? 65_000
  interface Connection {
    readonly socket: Socket
    busy: boolean
    /** No more requests are read (closing, handed over, or closed). */
    done: boolean
    /** Waiting for the socket's write buffer to drain before reading on. */
    waitingDrain: boolean
    /** Unparsed bytes as a latin1 string (one char per byte, lossless): finding the end of a head is an inlined string search. */
    buffered: string | undefined
    readonly keyMemo: KeyHashMemo
  }
  const connections = new Set<Connection>()
  const sockets = new Set<Socket>()
  let draining = false
  let busyCount = 0

  const onConnection = (socket: Socket) => {
    socket.setNoDelay(true)
    // Kept for the connection's whole life, handed over or not: node:http's own timers never run
    // for connections it did not accept itself. Any traffic resets it.
    socket.setTimeout(idleTimeoutMs, () => socket.destroy())
    socket.on("error", () => socket.destroy())
    const conn: Connection = { socket, busy: false, done: false, waitingDrain: false, buffered: undefined, keyMemo: newKeyHashMemo() }
    connections.add(conn)
    sockets.add(socket)
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
      socket.removeListener("data", onData)
    }
    const finish = (last?: string) => {
      stopReading()
      if (last === undefined) socket.end()
      else socket.end(last)
    }

    const serve = (): void => {
      while (!conn.busy && !conn.done && !conn.waitingDrain && conn.buffered !== undefined) {
        const buffer = conn.buffered
        const end = buffer.indexOf("\r\n\r\n")
        if (end === -1 ? buffer.length > maxHeaderBytes : end > maxHeaderBytes) return finish(HEAD_TOO_LARGE)
        if (end === -1) break
        const head = parseRequestHead(buffer.slice(0, end))
        if (head === undefined) return finish(BAD_REQUEST)
        const handler = head.special || head.method !== "GET"
          ? undefined
          : options.route({ method: head.method, target: head.target, rawHeaders: head.rawHeaders, clientIp: socket.remoteAddress ?? "", startedAt: performance.now(), keyMemo: conn.keyMemo })
        if (handler === undefined) {
          stopReading()
          connections.delete(conn)
          handOver(socket, Buffer.from(buffer, "latin1"), options.fallback)
          return
        }
        conn.buffered = end + 4 === buffer.length ? undefined : buffer.slice(end + 4)
        conn.busy = true
        busyCount++
        let sync = true
        handler((status, headers, body) => {
          if (!conn.busy) return // a second reply, or one after the connection closed
          conn.busy = false
          busyCount--
          const close = head.close || draining
          const flushed = socket.write(formatResponse(status, headers, body, close))
          if (close) return finish()
          if (!flushed) {
            // The client is not reading its answers: read no more requests until it does.
            conn.waitingDrain = true
            socket.once("drain", () => {
              conn.waitingDrain = false
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
      const text = chunk.toString("latin1")
      conn.buffered = conn.buffered === undefined ? text : conn.buffered + text
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
        conn.socket.end()
      }
    },
    closeAll: () => {
      for (const socket of sockets) socket.destroy()
    }
  }
}
