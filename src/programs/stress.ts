/**
 * Load client behind `tb stress` and `npm run bench`.
 *
 * Plain Node in the inner loop on purpose: the client shares the machine with the server under
 * test, so every microsecond it spends per request is taken from the server. HTTP speaks
 * HTTP/1.1 keep-alive over raw sockets (one request in flight per connection, like wrk); UDP keeps
 * a window of datagrams in flight on one socket. Latencies go into a fixed-size histogram.
 */
import * as dgram from "node:dgram"
import * as net from "node:net"
import { messageOf } from "../domain/errorMessage.ts"

export interface HttpStressOptions {
  /** Full URL including path and query; the host must be loopback. */
  readonly url: string
  readonly headers?: Record<string, string>
  readonly connections: number
  readonly durationMs: number
  /** Requests during warm-up are sent but not measured (default 0). */
  readonly warmupMs?: number
  readonly pipelining?: 1
  /** A request (or connect) unanswered this long counts as a timeout and its socket is replaced (default 2000). */
  readonly timeoutMs?: number
  /** Called every `progressIntervalMs` (default 500) from the start of the warm-up until the end. */
  readonly onProgress?: (progress: StressProgress) => void
  readonly progressIntervalMs?: number
}

export interface UdpStressOptions {
  readonly host: string
  readonly port: number
  /**
   * Datagram to send. A function gets a sequence number `i`; replies carrying `"rid":"<i>"` are
   * matched exactly, replies without a numeric rid are matched to the oldest datagram in flight.
   */
  readonly payload: ((i: number) => Buffer | string) | Buffer | string
  /** Datagrams in flight. */
  readonly concurrency: number
  readonly durationMs: number
  /** A datagram unanswered this long counts as a timeout and is replaced (default 1000). */
  readonly timeoutMs?: number
  readonly warmupMs?: number
  readonly onProgress?: (progress: StressProgress) => void
  readonly progressIntervalMs?: number
}

/** A run so far, for a live progress line. Counts cover the measured window only (zero while warming up). */
export interface StressProgress {
  readonly phase: "warmup" | "measure"
  /** Since the start of the phase. */
  readonly elapsedMs: number
  readonly durationMs: number
  readonly requests: number
  /** Answers that were not a success (HTTP non-2xx, UDP ok:false) plus transport errors and timeouts. */
  readonly errors: number
  /** Requests answered per second since the previous progress call. */
  readonly currentRps: number
}

export interface StressResult {
  /** Responses received during the measured window (any status). */
  readonly requests: number
  /** Transport or protocol failures (refused, reset, unparseable response). */
  readonly errors: number
  readonly timeouts: number
  /** HTTP status code, or for UDP `ok` / the reply's `code` / `reply`; sums to `requests`. */
  readonly statusCounts: Record<string, number>
  /** The first answer's text (its body for HTTP, up to 300 characters) for each status seen: what a refusal said. */
  readonly firstAnswers: Record<string, string>
  /**
   * Answers that were not a success, by code: the envelope's `code` of an HTTP 4xx/5xx
   * (`HTTP <status>` when its body has none), a UDP reply's `code`. Sums to `requests` minus the successes.
   */
  readonly errorCodes: Record<string, number>
  readonly durationMs: number
  readonly rps: number
  readonly p50Ms: number
  readonly p90Ms: number
  readonly p99Ms: number
  readonly maxMs: number
}

const LOOPBACK_HOSTS: ReadonlySet<string> = new Set(["127.0.0.1", "localhost", "::1"])

/** Load tests must only ever hit this machine: anything but loopback is refused. */
export const assertLoopback = (host: string): void => {
  const bare = host.replace(/^\[(.*)\]$/, "$1").toLowerCase()
  if (!LOOPBACK_HOSTS.has(bare)) {
    throw new Error(
      `stress: refusing target "${host}": load tests may only target loopback (127.0.0.1, localhost or ::1)`
    )
  }
}

const MAX_DURATION_MS = 3_600_000

const checkRun = (durationMs: number, warmupMs: number, timeoutMs: number): void => {
  if (!(durationMs > 0 && durationMs <= MAX_DURATION_MS)) {
    throw new Error(`stress: durationMs must be in (0, ${MAX_DURATION_MS}], got ${durationMs}`)
  }
  if (!(warmupMs >= 0 && warmupMs <= MAX_DURATION_MS)) {
    throw new Error(`stress: warmupMs must be in [0, ${MAX_DURATION_MS}], got ${warmupMs}`)
  }
  if (!(timeoutMs > 0 && timeoutMs <= 60_000)) {
    throw new Error(`stress: timeoutMs must be in (0, 60000], got ${timeoutMs}`)
  }
}

const checkCount = (name: string, n: number): void => {
  if (!(Number.isInteger(n) && n >= 1 && n <= 10_000)) {
    throw new Error(`stress: ${name} must be an integer in [1, 10000], got ${n}`)
  }
}

// ---------------------------------------------------------------------------------------------
// Latency histogram

/** Values below this many microseconds get their own bucket. */
const EXACT_BELOW_US = 128
/** Buckets per power of two above that: about 1.6 % resolution. */
const SUB_BUCKETS = 64
const SUB_BITS = 6
const MAX_US = 0x7fff_ffff
const BUCKET_COUNT = EXACT_BELOW_US + (31 - 7) * SUB_BUCKETS

const bucketOf = (us: number): number => {
  if (us < EXACT_BELOW_US) return us
  const exponent = 31 - Math.clz32(us)
  return EXACT_BELOW_US + (exponent - 7) * SUB_BUCKETS + ((us >>> (exponent - SUB_BITS)) - SUB_BUCKETS)
}

const bucketMidpointUs = (bucket: number): number => {
  if (bucket < EXACT_BELOW_US) return bucket
  const offset = bucket - EXACT_BELOW_US
  const shift = Math.floor(offset / SUB_BUCKETS) + 1
  const low = (SUB_BUCKETS + (offset % SUB_BUCKETS)) * 2 ** shift
  return low + (2 ** shift - 1) / 2
}

/** Log-linear microsecond histogram: constant memory and O(1) record whatever the request count. */
export class LatencyHistogram {
  private readonly counts = new Float64Array(BUCKET_COUNT)
  private total = 0
  private maxUs = 0

  get count(): number {
    return this.total
  }

  recordMs(ms: number): void {
    const us = ms <= 0 ? 0 : Math.min(MAX_US, Math.round(ms * 1000))
    this.counts[bucketOf(us)]! += 1
    this.total += 1
    if (us > this.maxUs) this.maxUs = us
  }

  maxMs(): number {
    return this.maxUs / 1000
  }

  /** The p-th percentile (0 < p <= 100) in ms; 0 when empty. Never above the recorded maximum. */
  percentileMs(p: number): number {
    if (this.total === 0) return 0
    const rank = Math.max(1, Math.ceil((p / 100) * this.total))
    let seen = 0
    for (let bucket = 0; bucket < BUCKET_COUNT; bucket++) {
      seen += this.counts[bucket]!
      if (seen >= rank) return Math.min(bucketMidpointUs(bucket), this.maxUs) / 1000
    }
    return this.maxUs / 1000
  }
}

// ---------------------------------------------------------------------------------------------
// Shared run bookkeeping

const ANSWER_SAMPLE_CHARS = 300

/** An HTTP response's body (the whole text if it has no header end). */
const responseBody = (response: Buffer): string => {
  const headEnd = response.indexOf("\r\n\r\n")
  return response.toString("utf8", headEnd === -1 ? 0 : headEnd + 4)
}

class RunStats {
  readonly histogram = new LatencyHistogram()
  readonly statusCounts = new Map<string, number>()
  readonly firstAnswers = new Map<string, string>()
  readonly errorCodes = new Map<string, number>()
  requests = 0
  /** Answers that were not a success (counted in errorCodes). */
  refused = 0
  errors = 0
  timeouts = 0
  /** False during warm-up and after the end: events still happen but are not counted. */
  recording = false
  private startedAt = 0
  private endedAt = 0

  start(now: number): void {
    this.recording = true
    this.startedAt = now
  }

  stop(now: number): void {
    if (this.recording) this.endedAt = now
    this.recording = false
  }

  /**
   * `answer` is read only for the first answer of each status; `errorCode` only for an answer
   * that was not a success (`success` false), so the success path parses nothing more.
   */
  response(status: string, success: boolean, latencyMs: number, answer: () => string, errorCode: () => string): void {
    if (!this.recording) return
    this.requests += 1
    if (!success) {
      this.refused += 1
      const code = errorCode()
      this.errorCodes.set(code, (this.errorCodes.get(code) ?? 0) + 1)
    }
    const seen = this.statusCounts.get(status)
    if (seen === undefined) this.firstAnswers.set(status, answer().slice(0, ANSWER_SAMPLE_CHARS))
    this.statusCounts.set(status, (seen ?? 0) + 1)
    this.histogram.recordMs(latencyMs)
  }

  error(): void {
    if (this.recording) this.errors += 1
  }

  timeout(): void {
    if (this.recording) this.timeouts += 1
  }

  result(): StressResult {
    const durationMs = Math.max(0, this.endedAt - this.startedAt)
    const h = this.histogram
    return {
      requests: this.requests,
      errors: this.errors,
      timeouts: this.timeouts,
      statusCounts: Object.fromEntries(this.statusCounts),
      firstAnswers: Object.fromEntries(this.firstAnswers),
      errorCodes: Object.fromEntries(this.errorCodes),
      durationMs,
      rps: durationMs > 0 ? (this.requests * 1000) / durationMs : 0,
      p50Ms: h.percentileMs(50),
      p90Ms: h.percentileMs(90),
      p99Ms: h.percentileMs(99),
      maxMs: h.maxMs()
    }
  }
}

/**
 * Runs warm-up then the measured window on timers; `onEnd` must release every resource.
 * With `onProgress`, reports the run so far every `intervalMs` until the end.
 */
const schedule = (
  stats: RunStats,
  warmupMs: number,
  durationMs: number,
  onEnd: () => void,
  onProgress?: (progress: StressProgress) => void,
  intervalMs = 500
): void => {
  const startedAt = performance.now()
  let measuringSince = 0
  let lastAt = startedAt
  let lastRequests = 0
  const ticker = onProgress === undefined ? undefined : setInterval(() => {
    const now = performance.now()
    const measuring = measuringSince > 0
    onProgress({
      phase: measuring ? "measure" : "warmup",
      elapsedMs: now - (measuring ? measuringSince : startedAt),
      durationMs: measuring ? durationMs : warmupMs,
      requests: stats.requests,
      errors: stats.refused + stats.errors + stats.timeouts,
      currentRps: now > lastAt ? ((stats.requests - lastRequests) * 1000) / (now - lastAt) : 0
    })
    lastAt = now
    lastRequests = stats.requests
  }, Math.max(50, intervalMs))
  setTimeout(() => {
    measuringSince = performance.now()
    lastAt = measuringSince
    stats.start(measuringSince)
    setTimeout(() => {
      stats.stop(performance.now())
      if (ticker !== undefined) clearInterval(ticker)
      onEnd()
    }, durationMs)
  }, warmupMs)
}

const CODE_FIELD = Buffer.from('"code":"')
const QUOTE = 34
const MAX_CODE_CHARS = 40

/** The value of the first `"code":"…"` at or after `from`, or undefined. */
const codeField = (buf: Buffer, from: number): string | undefined => {
  const at = buf.indexOf(CODE_FIELD, from)
  if (at < 0) return undefined
  const start = at + CODE_FIELD.length
  const end = buf.indexOf(QUOTE, start)
  return end > start && end - start <= MAX_CODE_CHARS ? buf.toString("latin1", start, end) : undefined
}

// ---------------------------------------------------------------------------------------------
// HTTP

const CRLF = Buffer.from("\r\n")
const HEADER_END = Buffer.from("\r\n\r\n")
const MAX_HEADER_BYTES = 64 * 1024
const FRAMING_HEADER = /\r\n(content-length|transfer-encoding|connection)[ \t]*:[ \t]*([^\r\n]*)/giu
const RECONNECT_DELAY_MS = 20
/** Every socket reads into this one buffer (reads are handled synchronously), saving an allocation per response. */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024)

const INCOMPLETE = 0
const INVALID = -1

interface ParsedResponse {
  readonly status: number
  /** Offset just past the response. */
  readonly end: number
  readonly close: boolean
}

/** Parses the end of a chunked body starting at `pos`: the offset past it, or a sentinel. */
const chunkedEnd = (buf: Buffer, start: number): number => {
  let pos = start
  for (;;) {
    const lineEnd = buf.indexOf(CRLF, pos)
    if (lineEnd < 0) return INCOMPLETE
    const sizeText = buf.toString("latin1", pos, lineEnd).split(";")[0]!.trim()
    if (!/^[0-9a-f]+$/iu.test(sizeText)) return INVALID
    const size = Number.parseInt(sizeText, 16)
    if (size === 0) {
      // No trailers is the common case: "0\r\n\r\n"; otherwise the trailers end with a blank line.
      if (buf.length < lineEnd + 4) return INCOMPLETE
      if (buf[lineEnd + 2] === 13 && buf[lineEnd + 3] === 10) return lineEnd + 4
      const trailersEnd = buf.indexOf(HEADER_END, lineEnd)
      return trailersEnd < 0 ? INCOMPLETE : trailersEnd + 4
    }
    pos = lineEnd + 2 + size + 2
    if (pos > buf.length) return INCOMPLETE
  }
}

/** One HTTP/1.1 response at the start of `buf`; INCOMPLETE until all of it has arrived. */
export const parseHttpResponse = (
  buf: Buffer
): ParsedResponse | typeof INCOMPLETE | typeof INVALID => {
  const headerEnd = buf.indexOf(HEADER_END)
  if (headerEnd < 0) return buf.length > MAX_HEADER_BYTES ? INVALID : INCOMPLETE
  // "HTTP/1.x NNN"
  if (buf[0] !== 72 || buf[4] !== 47 || buf[8] !== 32 || headerEnd < 12) return INVALID
  const status = (buf[9]! - 48) * 100 + (buf[10]! - 48) * 10 + (buf[11]! - 48)
  if (!(status >= 100 && status <= 599)) return INVALID
  const head = buf.toString("latin1", 0, headerEnd)
  let contentLength = -1
  let chunked = false
  let close = buf[7] === 48 // HTTP/1.0 closes unless told otherwise
  FRAMING_HEADER.lastIndex = 0
  for (let m = FRAMING_HEADER.exec(head); m !== null; m = FRAMING_HEADER.exec(head)) {
    const name = m[1]!.toLowerCase()
    const value = m[2]!.trim().toLowerCase()
    if (name === "content-length") {
      if (!/^\d+$/u.test(value)) return INVALID
      contentLength = Number(value)
    } else if (name === "transfer-encoding") {
      chunked = value.endsWith("chunked")
    } else {
      close = value === "close"
    }
  }
  const bodyStart = headerEnd + 4
  let end: number
  if (chunked) {
    end = chunkedEnd(buf, bodyStart)
    if (end <= 0) return end === INCOMPLETE ? INCOMPLETE : INVALID
  } else if (contentLength >= 0) {
    end = bodyStart + contentLength
    if (end > buf.length) return INCOMPLETE
  } else if (status < 200 || status === 204 || status === 304) {
    end = bodyStart
  } else {
    return INVALID // body delimited by connection close: not supported by a keep-alive load client
  }
  return { status, end, close }
}

interface HttpTarget {
  readonly host: string
  readonly port: number
  readonly request: Buffer
}

const httpTarget = (o: HttpStressOptions): HttpTarget => {
  const url = new URL(o.url)
  if (url.protocol !== "http:") throw new Error(`stress: only http:// URLs are supported, got ${o.url}`)
  assertLoopback(url.hostname)
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1")
  const port = url.port === "" ? 80 : Number(url.port)
  const headerLines = Object.entries(o.headers ?? {})
    .filter(([name]) => name.toLowerCase() !== "host")
    .map(([name, value]) => {
      if (/[\r\n]/u.test(name + value)) throw new Error(`stress: header ${name} contains a line break`)
      return `${name}: ${value}\r\n`
    })
    .join("")
  const request = Buffer.from(
    `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n${headerLines}\r\n`,
    "latin1"
  )
  return { host, port, request }
}

/** One keep-alive connection with at most one request in flight; replaces itself when it breaks. */
class HttpConnection {
  private socket: net.Socket | undefined
  private pending: Buffer | undefined
  private sentAt = 0
  private connectingSince = 0
  private inFlight = false
  private failed = false
  private answered = false

  constructor(
    private readonly target: HttpTarget,
    private readonly stats: RunStats,
    private readonly isRunning: () => boolean
  ) {}

  open(): void {
    this.pending = undefined
    this.inFlight = false
    this.failed = false
    this.answered = false
    this.connectingSince = performance.now()
    const socket = net.connect({
      host: this.target.host,
      port: this.target.port,
      noDelay: true,
      onread: { buffer: READ_BUFFER, callback: (n) => this.onRead(n) }
    })
    this.socket = socket
    socket.on("connect", () => {
      this.connectingSince = 0
      this.send()
    })
    socket.on("error", () => {
      this.failed = true
      this.stats.error()
    })
    socket.on("close", () => this.onClose(socket))
  }

  /** Counts what overran `timeoutMs` and replaces that socket. */
  sweep(now: number, timeoutMs: number): void {
    if (this.socket === undefined) return
    if (this.connectingSince > 0 && now - this.connectingSince > timeoutMs) {
      this.failed = true
      this.stats.error()
      this.socket.destroy()
    } else if (this.inFlight && now - this.sentAt > timeoutMs) {
      this.failed = true
      this.stats.timeout()
      this.socket.destroy()
    }
  }

  close(): void {
    this.socket?.destroy()
    this.socket = undefined
  }

  private send(): void {
    if (this.socket === undefined || !this.isRunning()) return
    this.inFlight = true
    this.sentAt = performance.now()
    this.socket.write(this.target.request)
  }

  private onRead(bytes: number): boolean {
    const now = performance.now()
    const chunk = READ_BUFFER.subarray(0, bytes)
    const buf = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk])
    this.pending = undefined
    const parsed = parseHttpResponse(buf)
    if (parsed === INCOMPLETE) {
      // The shared read buffer is overwritten by the next read: keep a copy.
      this.pending = buf === chunk ? Buffer.from(chunk) : buf
      return true
    }
    // With one request in flight, bytes after the response (or without a request) are a protocol error.
    if (parsed === INVALID || !this.inFlight || parsed.end !== buf.length) {
      this.failed = true
      this.stats.error()
      this.socket?.destroy()
      return true
    }
    this.inFlight = false
    this.answered = true
    const status = parsed.status
    this.stats.response(String(status), status < 300, now - this.sentAt, () => responseBody(buf), () =>
      (status >= 400 ? codeField(buf, buf.indexOf(HEADER_END)) : undefined) ?? `HTTP ${status}`)
    if (parsed.close) this.socket?.end()
    else this.send()
    return true
  }

  private onClose(socket: net.Socket): void {
    if (this.socket !== socket) return // already replaced or closed by the run
    this.socket = undefined
    if (!this.isRunning()) return
    if (this.inFlight && !this.failed) this.stats.error() // server hung up on an outstanding request
    // Back off briefly after a connection that never answered, so a dead target does not spin.
    if (this.answered) this.open()
    else setTimeout(() => this.isRunning() && this.socket === undefined && this.open(), RECONNECT_DELAY_MS)
  }
}

export const stressHttp = (o: HttpStressOptions): Promise<StressResult> =>
  new Promise((resolve, reject) => {
    const warmupMs = o.warmupMs ?? 0
    const timeoutMs = o.timeoutMs ?? 2_000
    let target: HttpTarget
    try {
      checkCount("connections", o.connections)
      checkRun(o.durationMs, warmupMs, timeoutMs)
      target = httpTarget(o)
    } catch (error) {
      reject(error)
      return
    }
    const stats = new RunStats()
    let running = true
    const isRunning = () => running
    const connections = Array.from(
      { length: o.connections },
      () => new HttpConnection(target, stats, isRunning)
    )
    const sweeper = setInterval(() => {
      const now = performance.now()
      for (const c of connections) c.sweep(now, timeoutMs)
    }, Math.min(100, Math.max(5, timeoutMs / 4)))
    schedule(stats, warmupMs, o.durationMs, () => {
      running = false
      clearInterval(sweeper)
      for (const c of connections) c.close()
      resolve(stats.result())
    }, o.onProgress, o.progressIntervalMs)
    for (const c of connections) c.open()
  })

// ---------------------------------------------------------------------------------------------
// UDP

const RID_FIELD = Buffer.from('"rid":"')
const OK_FIELD = Buffer.from('"ok":true')

/** The decimal rid of a reply, or -1 when it has none (or a non-numeric one). */
const replyRid = (msg: Buffer): number => {
  const at = msg.indexOf(RID_FIELD)
  if (at < 0) return -1
  let value = 0
  let digits = 0
  for (let i = at + RID_FIELD.length; i < msg.length; i++) {
    const c = msg[i]!
    if (c === QUOTE) return digits > 0 ? value : -1
    if (c < 48 || c > 57 || digits >= 15) return -1
    value = value * 10 + (c - 48)
    digits += 1
  }
  return -1
}

const replyStatus = (msg: Buffer): string => (msg.indexOf(OK_FIELD) >= 0 ? "ok" : codeField(msg, 0) ?? "reply")

export const stressUdp = (o: UdpStressOptions): Promise<StressResult> =>
  new Promise((resolve, reject) => {
    const warmupMs = o.warmupMs ?? 0
    const timeoutMs = o.timeoutMs ?? 1_000
    try {
      checkCount("concurrency", o.concurrency)
      checkRun(o.durationMs, warmupMs, timeoutMs)
      assertLoopback(o.host)
      if (!(Number.isInteger(o.port) && o.port > 0 && o.port < 65_536)) {
        throw new Error(`stress: invalid UDP port ${o.port}`)
      }
    } catch (error) {
      reject(error)
      return
    }
    const host = o.host.replace(/^\[(.*)\]$/, "$1").toLowerCase()
    const ipv6 = host.includes(":")
    const socket = dgram.createSocket(ipv6 ? "udp6" : "udp4")
    const payload = o.payload
    const fixed = typeof payload === "function" ? undefined : Buffer.from(payload)
    const stats = new RunStats()
    /** Sequence number -> send time; insertion order is send order, which the sweep relies on. */
    const inFlight = new Map<number, number>()
    let next = 0
    let running = true

    const sendOne = (): void => {
      const i = next++
      const datagram = fixed ?? payload
      const bytes = typeof datagram === "function" ? datagram(i) : datagram
      inFlight.set(i, performance.now())
      socket.send(bytes)
    }

    socket.on("message", (msg: Buffer) => {
      const now = performance.now()
      const rid = replyRid(msg)
      let sentAt: number | undefined
      if (rid >= 0) {
        sentAt = inFlight.get(rid)
        if (sentAt === undefined) return // late reply to a datagram already counted as timed out
        inFlight.delete(rid)
      } else {
        const oldest = inFlight.entries().next()
        if (oldest.done === true) return
        inFlight.delete(oldest.value[0])
        sentAt = oldest.value[1]
      }
      const status = replyStatus(msg)
      stats.response(status, status === "ok", now - sentAt, () => msg.toString("utf8"), () => status)
      if (running) sendOne()
    })
    // Send failures and ICMP unreachable surface here; the datagram itself times out and is replaced.
    socket.on("error", () => stats.error())

    const sweeper = setInterval(() => {
      const now = performance.now()
      for (const [i, sentAt] of inFlight) {
        if (now - sentAt <= timeoutMs) break
        inFlight.delete(i)
        stats.timeout()
        if (running) sendOne()
      }
    }, Math.min(50, Math.max(5, timeoutMs / 4)))

    socket.connect(o.port, host === "localhost" ? "127.0.0.1" : host, () => {
      if (!running) return
      for (let k = 0; k < o.concurrency; k++) sendOne()
    })
    schedule(stats, warmupMs, o.durationMs, () => {
      running = false
      clearInterval(sweeper)
      socket.close()
      resolve(stats.result())
    }, o.onProgress, o.progressIntervalMs)
  })

// ---------------------------------------------------------------------------------------------
// CLI: tb stress

const USAGE = `usage: tb stress [--http URL] [--udp HOST:PORT] [--key KEY] [--asset BTC]
                 [--connections 64] [--duration 10s] [--warmup 1s] [--json]
  --help, -h       print this and exit
  --http URL       HTTP target (loopback only); a bare http://host:port means /price?asset=<asset>
  --udp HOST:PORT  UDP target (loopback only), sends "v1 price <key> <asset> <rid>"
  --key KEY        API key: X-API-Key header for HTTP, the key field for UDP
  --connections N  HTTP connections / UDP datagrams in flight (default 64)
  --duration D     measured time, e.g. 500ms, 10s, 1m (default 10s)
  --warmup D       unmeasured time before it (default 1s)
  --json           print the results as JSON
On a terminal, a progress line on stderr is updated every 500 ms (never with --json or when piped).`

export const parseDurationMs = (text: string): number | undefined => {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/u.exec(text.trim())
  if (m === null) return undefined
  const value = Number(m[1])
  const unit = m[2] ?? "s"
  return unit === "ms" ? value : unit === "s" ? value * 1000 : value * 60_000
}

interface CliOptions {
  readonly http: string | undefined
  readonly udp: { readonly host: string; readonly port: number } | undefined
  readonly key: string | undefined
  readonly asset: string
  readonly connections: number
  readonly durationMs: number
  readonly warmupMs: number
  readonly json: boolean
}

const parseCli = (argv: ReadonlyArray<string>): CliOptions | string => {
  const values = new Map<string, string>()
  let json = false
  const valued = ["--http", "--udp", "--key", "--asset", "--connections", "--duration", "--warmup"]
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const eq = arg.indexOf("=")
    const [flag, inline] = eq > 0 ? [arg.slice(0, eq), arg.slice(eq + 1)] : [arg, undefined]
    if (flag === "--json") json = true
    else if (valued.includes(flag)) {
      const value = inline ?? argv[++i]
      if (value === undefined) return `${flag} needs a value`
      values.set(flag, value)
    } else return `unknown argument ${arg}`
  }
  const http = values.get("--http")
  const udpText = values.get("--udp")
  if (http === undefined && udpText === undefined) return "give --http URL and/or --udp HOST:PORT"
  let udp: CliOptions["udp"]
  if (udpText !== undefined) {
    const m = /^(.*):(\d+)$/u.exec(udpText)
    if (m === null) return `--udp wants HOST:PORT, got ${udpText}`
    udp = { host: m[1]!, port: Number(m[2]) }
  }
  const connections = Number(values.get("--connections") ?? "64")
  if (!Number.isInteger(connections) || connections < 1) return "--connections wants a positive integer"
  const durationMs = parseDurationMs(values.get("--duration") ?? "10s")
  const warmupMs = parseDurationMs(values.get("--warmup") ?? "1s")
  if (durationMs === undefined || durationMs <= 0) return "--duration wants e.g. 500ms, 10s or 1m"
  if (warmupMs === undefined) return "--warmup wants e.g. 0s, 500ms or 2s"
  const asset = values.get("--asset") ?? "BTC"
  if (!/^[A-Za-z0-9]+(\/[A-Za-z0-9]+)?$/u.test(asset)) return `invalid --asset ${asset}`
  return { http, udp, key: values.get("--key"), asset, connections, durationMs, warmupMs, json }
}

const httpUrlFor = (base: string, asset: string): string => {
  const url = new URL(base)
  if (url.pathname === "/" && url.search === "") {
    url.pathname = "/price"
    url.search = `?asset=${encodeURIComponent(asset)}`
  }
  return url.toString()
}

/** HTTP 2xx, or a UDP `ok` reply. */
const isSuccessStatus = (status: string): boolean => status === "ok" || /^2\d\d$/u.test(status)

const fmt = (n: number, digits = 2): string => n.toFixed(digits)

/** Counts in descending order, as `A: 3  B: 1`. */
const countList = (counts: Record<string, number>): string =>
  Object.entries(counts)
    .sort(([, a], [, b]) => b - a)
    .map(([name, count]) => `${name}: ${count}`)
    .join("  ")

export const formatResult = (label: string, r: StressResult): string => {
  const statuses = countList(r.statusCounts)
  const refused = countList(r.errorCodes)
  return [
    label,
    `  requests   ${r.requests} in ${fmt(r.durationMs / 1000)} s = ${Math.round(r.rps)} req/s`,
    `  latency    p50 ${fmt(r.p50Ms)} ms  p90 ${fmt(r.p90Ms)} ms  p99 ${fmt(r.p99Ms)} ms  max ${fmt(r.maxMs)} ms`,
    `  errors     ${refused === "" ? "none refused" : refused}  (transport errors ${r.errors}, timeouts ${r.timeouts})`,
    `  statuses   ${statuses === "" ? "none" : statuses}`,
    ...Object.entries(r.firstAnswers)
      .filter(([status]) => !isSuccessStatus(status))
      .map(([status, answer]) => `  first ${status}: ${answer}`)
  ].join("\n")
}

/** Thousands separated by commas, whatever the locale. */
const grouped = (n: number): string => Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/gu, ",")

/** The live progress line: `HTTP  3.5/10.0 s  requests 345,678  98,765 req/s  errors 12`. */
export const formatProgress = (label: string, p: StressProgress): string =>
  p.phase === "warmup"
    ? `${label}  warming up ${fmt(p.elapsedMs / 1000, 1)}/${fmt(p.durationMs / 1000, 1)} s`
    : `${label}  ${fmt(p.elapsedMs / 1000, 1)}/${fmt(p.durationMs / 1000, 1)} s  requests ${grouped(p.requests)}  ` +
      `${grouped(p.currentRps)} req/s  errors ${grouped(p.errors)}`

/** Where the progress line goes: a terminal, rewritten in place. */
export interface ProgressSink {
  readonly update: (line: string) => void
  /** Clears the line, so the summary that follows starts on a clean one. */
  readonly end: () => void
}

export const terminalProgress = (stream: NodeJS.WritableStream): ProgressSink => {
  let shown = false
  return {
    // \r back to the start, ESC[K erases what a longer previous line left.
    update: (line) => {
      shown = true
      stream.write(`\r${line}\u001b[K`)
    },
    end: () => {
      if (shown) stream.write("\r\u001b[K")
      shown = false
    }
  }
}

const writeStdout = (text: string) => void process.stdout.write(`${text}\n`)
const writeStderr = (text: string) => void process.stderr.write(`${text}\n`)

/**
 * `tb stress …`: returns the exit code (0 ran and got answers, or --help; 1 failed; 2 bad usage).
 * Results (and the usage asked for with --help) go to `write`, problems to `writeError`: stdout
 * and stderr by default; a caller that passes only `write` gets both in it. The live progress
 * line goes to `progress`: stderr when it is a terminal, else nowhere; never with --json.
 */
export const stressCli = async (
  argv: ReadonlyArray<string>,
  write: (text: string) => void = writeStdout,
  writeError: (text: string) => void = write === writeStdout ? writeStderr : write,
  progress: ProgressSink | undefined = process.stderr.isTTY ? terminalProgress(process.stderr) : undefined
): Promise<number> => {
  if (argv.some((arg) => arg === "--help" || arg === "-h")) {
    write(USAGE)
    return 0
  }
  const options = parseCli(argv)
  if (typeof options === "string") {
    writeError(`tb stress: ${options}\n${USAGE}`)
    return 2
  }
  const results: Record<string, StressResult> = {}
  const sink = options.json ? undefined : progress
  const progressFor = (label: string) =>
    sink === undefined ? {} : { onProgress: (p: StressProgress) => sink.update(formatProgress(label, p)) }
  try {
    if (options.http !== undefined) {
      const url = httpUrlFor(options.http, options.asset)
      results.http = await stressHttp({
        url,
        ...(options.key === undefined ? {} : { headers: { "X-API-Key": options.key } }),
        connections: options.connections,
        durationMs: options.durationMs,
        warmupMs: options.warmupMs,
        ...progressFor("HTTP")
      })
      sink?.end()
      if (!options.json) write(formatResult(`HTTP ${url} (${options.connections} connections)`, results.http))
    }
    if (options.udp !== undefined) {
      const prefix = `v1 price ${options.key ?? "none"} ${options.asset} `
      results.udp = await stressUdp({
        host: options.udp.host,
        port: options.udp.port,
        payload: (i) => Buffer.from(prefix + i, "latin1"),
        concurrency: options.connections,
        durationMs: options.durationMs,
        warmupMs: options.warmupMs,
        ...progressFor("UDP")
      })
      sink?.end()
      if (!options.json) {
        write(formatResult(`UDP ${options.udp.host}:${options.udp.port} (${options.connections} in flight)`, results.udp))
      }
    }
  } catch (error) {
    sink?.end()
    const message = messageOf(error)
    writeError(message.startsWith("stress: ") ? `tb ${message}` : `tb stress: ${message}`)
    return 1
  }
  if (options.json) write(JSON.stringify(results))
  return Object.values(results).every((r) => r.requests > 0) ? 0 : 1
}
