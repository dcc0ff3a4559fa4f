/**
 * Reading a request head as llhttp (node's own parser) reads it: what the fast path may serve
 * itself (a plain GET or HEAD), what it must hand to node:http (anything llhttp accepts that is not
 * ours), and what it refuses with a 400 (what llhttp surely refuses). Pure string work, no I/O.
 */
import { METHODS } from "node:http"

/** A request line that could be read: a known method, a target of visible ASCII, HTTP/1.x. */
export interface RequestLine {
  readonly method: string
  /** As sent, or its origin-form when it is an absolute-form http(s) target. */
  readonly target: string
}


export interface ParsedHead {
  readonly method: "GET" | "HEAD"
  readonly target: string
  readonly http10: boolean
  readonly rawHeaders: Array<string>
  readonly close: boolean
  /** A body, an upgrade or an expectation: not ours to serve. */
  readonly special: boolean
}

/** A head not served here: handed to node:http as it is, or rejected with a 400. */
export type HeadProblem =
  | { readonly problem: "handOver" }
  | { readonly problem: "reject"; readonly requestLine: RequestLine | undefined }

const HAND_OVER: HeadProblem = { problem: "handOver" }
const BARE_REJECT: HeadProblem = { problem: "reject", requestLine: undefined }
const rejectWith = (requestLine: RequestLine): HeadProblem => ({ problem: "reject", requestLine })

/**
 * Everything llhttp accepts in a head, as one pattern (tested once per request, no backtracking):
 * `method SP target SP HTTP/1.x`, then lines of `token ":" value` separated by CRLF. Targets are
 * visible ASCII (0x21-0x7E); values may hold HTAB, SP, visible ASCII and 8-bit bytes (obs-text);
 * every other byte, a bare CR or LF, an obs-fold line and a name that is not a token are
 * rejected by llhttp.
 */
const HEAD_SHAPE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP\/1\.[01](?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*)*$/
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP\/1\.[01]$/
/** A byte llhttp refuses anywhere in a request line (control bytes, TAB, DEL, 8-bit). */
const NOT_IN_REQUEST_LINE = /[^\x20-\x7e]/
const DIGITS = /^[0-9]+$/
/** The methods llhttp knows; it refuses any other. CONNECT and PRI have rules of their own. */
const PLAIN_METHODS = new Set(METHODS.filter((m) => m !== "CONNECT" && m !== "PRI"))
/** Characters llhttp refuses in the authority of an absolute-form target. */
const NOT_IN_AUTHORITY = /["#<>\\^`{|}]/

const CR = 13
const LF = 10
const SP = 32
const HTAB = 9
const isOptionalWhitespace = (c: number): boolean => c === SP || c === HTAB

/**
 * The origin-form (`/path?query`) of a request target. RFC 9112 §3.2.2: a server must accept the
 * absolute-form (`http://host:port/path?query`, what a client sends through a proxy), which is
 * served as its path and query. Undefined for anything else but `*`, and for an authority with a
 * character llhttp refuses there.
 */
export const originForm = (target: string): string | undefined => {
  if (target.startsWith("/") || target === "*") return target
  const scheme = target.slice(0, 8).toLowerCase()
  const authorityStart = scheme.startsWith("http://") ? 7 : scheme.startsWith("https://") ? 8 : -1
  if (authorityStart < 0) return undefined
  let pathStart = authorityStart
  while (pathStart < target.length && target[pathStart] !== "/" && target[pathStart] !== "?") pathStart++
  if (pathStart === authorityStart) return undefined // no host
  if (NOT_IN_AUTHORITY.test(target.slice(authorityStart, pathStart))) return undefined
  return pathStart === target.length ? "/" : target[pathStart] === "?" ? `/${target.slice(pathStart)}` : target.slice(pathStart)
}

const requestLineOf = (method: string, sent: string): RequestLine => ({ method, target: originForm(sent) ?? sent })

/** The request line at the start of `text` if it is complete (ends in CRLF) and readable. */
export const readRequestLine = (text: string): RequestLine | undefined => {
  const end = text.indexOf("\r\n")
  const shape = end === -1 ? null : REQUEST_LINE.exec(text.slice(0, end))
  if (shape === null || !PLAIN_METHODS.has(shape[1]!)) return undefined
  return requestLineOf(shape[1]!, shape[2]!)
}

/**
 * Why a head outside HEAD_SHAPE (or a partial head holding a bare CR or LF) is not served: a 400
 * where llhttp surely answers 400, else a hand-over so that llhttp decides. Off the hot path.
 */
export const classifyHead = (text: string): HeadProblem => {
  const first = text.charCodeAt(0)
  if (first === CR || first === LF) return HAND_OVER // llhttp skips empty lines before a request
  let lineEnd = 0
  while (lineEnd < text.length && text.charCodeAt(lineEnd) !== CR && text.charCodeAt(lineEnd) !== LF) lineEnd++
  const line = text.slice(0, lineEnd)
  const crlf = text.startsWith("\r\n", lineEnd)
  const shape = REQUEST_LINE.exec(line)
  if (shape === null) {
    // Not a request line llhttp reads as GET-like; only bytes it never takes there, or a line
    // ended by a bare CR or LF, are certain rejections (HTTP/0.9-style `GET /`, double spaces or
    // HTTP/2.0 are accepted by llhttp and are its to answer).
    return NOT_IN_REQUEST_LINE.test(line) || (lineEnd < text.length && !crlf) ? BARE_REJECT : HAND_OVER
  }
  const method = shape[1]!
  if (!PLAIN_METHODS.has(method)) return HAND_OVER // llhttp refuses it; its 400 is as good as ours
  // The request line is sound, so the fault is in the header lines (or a bare line break, for a
  // partial head): every such fault (bare CR/LF, obs-fold, a name that is not a token, a missing
  // colon, a control byte or DEL in a value) is a 400 from llhttp.
  return rejectWith(requestLineOf(method, shape[2]!))
}

/** Connection header tokens as llhttp reads them (comma-separated, SP/HTAB trimmed, any case). */
const CONNECTION_CLOSE = 1
const CONNECTION_KEEP_ALIVE = 2
const connectionTokens = (value: string): number => {
  const v = value.toLowerCase()
  if (v === "keep-alive") return CONNECTION_KEEP_ALIVE
  if (v === "close") return CONNECTION_CLOSE
  let flags = 0
  for (const token of v.split(",")) {
    const t = token.replace(/^[ \t]+|[ \t]+$/g, "")
    if (t === "close") flags |= CONNECTION_CLOSE
    else if (t === "keep-alive") flags |= CONNECTION_KEEP_ALIVE
  }
  return flags
}

/** Parse a request head (without the final CRLFCRLF): a GET or HEAD to serve, or why not. */
export const parseRequestHead = (head: string): ParsedHead | HeadProblem => {
  if (!HEAD_SHAPE.test(head)) return classifyHead(head)
  // HEAD_SHAPE holds: `method SP target SP HTTP/1.x`, single spaces, header lines well formed.
  const method = head.startsWith("GET ") ? "GET" : head.startsWith("HEAD ") ? "HEAD" : undefined
  if (method === undefined) return HAND_OVER
  const firstEnd = head.indexOf("\r\n")
  const lineEnd = firstEnd === -1 ? head.length : firstEnd
  const http10 = head.charCodeAt(lineEnd - 1) === 48 // "HTTP/1.0"
  const sent = head.slice(method.length + 1, lineEnd - 9)
  const target = originForm(sent)
  if (target === undefined) return HAND_OVER
  const rawHeaders: Array<string> = []
  let connection = 0
  let special = false
  let host = false
  let contentLength = false
  for (let start = firstEnd + 2; firstEnd !== -1 && start <= head.length;) {
    const nextEnd = head.indexOf("\r\n", start)
    const end = nextEnd === -1 ? head.length : nextEnd
    const colon = head.indexOf(":", start)
    const name = head.slice(start, colon)
    // Only SP and HTAB are optional whitespace around a value (not VT, FF or NBSP, as trim() would).
    let valueStart = colon + 1
    let valueEnd = end
    while (valueStart < valueEnd && isOptionalWhitespace(head.charCodeAt(valueStart))) valueStart++
    while (valueEnd > valueStart && isOptionalWhitespace(head.charCodeAt(valueEnd - 1))) valueEnd--
    const value = head.slice(valueStart, valueEnd)
    start = end + 2
    rawHeaders.push(name, value)
    switch (name.length) {
      case 10:
        if (name.toLowerCase() === "connection") {
          connection |= connectionTokens(value)
          if (value.toLowerCase().includes("upgrade")) special = true
        }
        break
      case 14:
        if (name.toLowerCase() === "content-length") {
          // llhttp: digits only, and one Content-Length (a repeated one is refused even if equal).
          if (contentLength || !DIGITS.test(value)) return rejectWith(requestLineOf(method, sent))
          contentLength = true
          if (value !== "0") special = true
        }
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
  if (!host && !http10) return rejectWith(requestLineOf(method, sent))
  // llhttp: HTTP/1.1 persists unless a `close` token; HTTP/1.0 only with a `keep-alive` token.
  const close = http10 ? (connection & CONNECTION_KEEP_ALIVE) === 0 : (connection & CONNECTION_CLOSE) !== 0
  return { method, target, http10, rawHeaders, close, special }
}
