/**
 * The steps of `tb demo`, each over the real wire a subscriber's own client would use: HTTP with
 * fetch, a UDP datagram in the LPO's request format, the partner stream over WebSocket (`ws`),
 * and the report server's HTTP API. Each step answers a StepResult, never throws: a refusal the
 * key's tier explains (LRS_NOT_ENABLED, STREAM_NOT_ENABLED) is `skipped`, anything else that did
 * not work is `failed` with what to do next.
 */
import * as dgram from "node:dgram"
import { existsSync } from "node:fs"
import { join, resolve } from "node:path"
import { WebSocket } from "ws"
import { formatUdpRequest } from "../../domain/udpCodec.ts"
import type { DemoTargets } from "./targets.ts"

export const STEP_NAMES = ["key", "price", "prices", "udp", "stream", "report"] as const
export type StepName = (typeof STEP_NAMES)[number]
export type StepStatus = "ok" | "skipped" | "failed" | "not_run"

export interface StepResult {
  readonly step: StepName
  readonly status: StepStatus
  /** One line: what happened. */
  readonly summary: string
  /** More lines for people: sources, a table. */
  readonly details: ReadonlyArray<string>
  /** The envelope or reply code of a refusal, or UNREACHABLE / TIMEOUT / NO_KEY; null when it worked. */
  readonly code: string | null
  /** What to do about it, or where to go from here. */
  readonly next: ReadonlyArray<string>
  /** The same request by hand, with `$KEY` standing for the key. */
  readonly try: string | null
  readonly ms: number
  /** What the server answered (the envelope's `data`, the reply, the stream messages). */
  readonly data: unknown
}

export interface DemoContext {
  readonly targets: DemoTargets
  readonly key: string | undefined
  /** Where a server started here keeps its admin token (DATA_DIR, default ./data). */
  readonly dataDir: string
  /** When the demo started: the report asks for the rows from here on. */
  readonly startedAt: number
}

const HTTP_TIMEOUT_MS = 5_000
const UDP_TIMEOUT_MS = 2_000
const STREAM_TIMEOUT_MS = 6_000
/** How long the stream step listens after the snapshot. */
const STREAM_LISTEN_MS = 1_500
/** Usage rows are written in batches (usage_flush_ms, 250 by default): let this run's arrive before the report. */
const REPORT_SETTLE_MS = 1_000
export const DEMO_ASSETS = ["BTC", "ETH", "SOL"] as const

/** Codes that mean the key itself is not usable: every later step would be refused the same way. */
const KEY_CODES: ReadonlySet<string> = new Set(["NO_KEY", "MISSING_API_KEY", "INVALID_API_KEY", "KEY_REVOKED", "KEY_EXPIRED"])

/** A failed step whose cause stops the steps after it (no server, no usable key). */
export const stopsTheRest = (r: StepResult): boolean =>
  r.status === "failed" && (KEY_CODES.has(r.code ?? "") || (r.step === "key" && r.code === "UNREACHABLE"))

// ---------------------------------------------------------------------------------------------
// Wire helpers

interface Envelope {
  readonly success: boolean
  readonly code: string
  readonly message: string
  readonly data: Record<string, unknown> | null
  readonly version?: string
}

type HttpAnswer =
  | { readonly _tag: "answer"; readonly status: number; readonly envelope: Envelope | undefined; readonly headers: Headers; readonly text: string }
  | { readonly _tag: "unreachable"; readonly reason: string }

/** fetch's failure reason: the socket error code (ECONNREFUSED: nothing listens), else the message. */
const reasonOf = (error: unknown): string => {
  if (error instanceof Error && error.name === "TimeoutError") return `no answer within ${HTTP_TIMEOUT_MS / 1000} s`
  const cause = error instanceof Error ? error.cause : undefined
  if (typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string") return cause.code
  if (cause instanceof Error) return cause.message
  // Socket errors (dgram) carry their code on the error itself.
  if (error instanceof Error && "code" in error && typeof error.code === "string") return error.code
  return error instanceof Error ? error.message : String(error)
}

const isEnvelope = (value: unknown): value is Envelope =>
  typeof value === "object" && value !== null && "success" in value && "code" in value && "data" in value

const httpGet = async (url: string, key: string | undefined): Promise<HttpAnswer> => {
  try {
    const res = await fetch(url, {
      headers: key === undefined ? {} : { "x-api-key": key },
      signal: AbortSignal.timeout(HTTP_TIMEOUT_MS)
    })
    const text = await res.text()
    let envelope: Envelope | undefined
    try {
      const parsed: unknown = JSON.parse(text)
      envelope = isEnvelope(parsed) ? parsed : undefined
    } catch {
      envelope = undefined
    }
    return { _tag: "answer", status: res.status, envelope, headers: res.headers, text }
  } catch (error) {
    return { _tag: "unreachable", reason: reasonOf(error) }
  }
}

/** `tb_AbCdEfG…`: enough to recognise a key, never the key. */
export const keyPrefix = (key: string): string => `${key.slice(0, 10)}…`

const money = (n: unknown): string =>
  typeof n === "number" && Number.isFinite(n)
    ? n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: n < 1 ? 6 : 2 })
    : String(n)

const limitText = (n: unknown): string => (n === null ? "unlimited" : typeof n === "number" ? n.toLocaleString("en-US") : String(n))

const shellQuote = (s: string): string => `"${s.replace(/(["\\$`])/gu, "\\$1")}"`

const curl = (url: string, extra = ""): string => `curl -s${extra} ${shellQuote(url)} -H "X-API-Key: $KEY"`

const elapsed = (since: number): number => Math.round(performance.now() - since)

interface Outcome {
  readonly status: StepStatus
  readonly summary: string
  readonly details?: ReadonlyArray<string>
  readonly code?: string | null
  readonly next?: ReadonlyArray<string>
  readonly data?: unknown
}

const result = (step: StepName, started: number, tryIt: string | null, o: Outcome): StepResult => ({
  step,
  status: o.status,
  summary: o.summary,
  details: o.details ?? [],
  code: o.code ?? null,
  next: o.next ?? [],
  try: tryIt,
  ms: elapsed(started),
  data: o.data ?? null
})

export const notRun = (step: StepName, because: string): StepResult => ({
  step, status: "not_run", summary: `not run: ${because}`, details: [], code: null, next: [], try: null, ms: 0, data: null
})

// ---------------------------------------------------------------------------------------------
// What to do next

const howToGetAKey = (ctx: DemoContext): ReadonlyArray<string> => {
  const tokenFile = join(ctx.dataDir, "admin-token")
  const tokenHere = existsSync(resolve(tokenFile))
  return [
    "Give the demo an API key: npx tb demo --key tb_…",
    "A subscription (listener, associate, partner) sends you one by e-mail; on your own server, make one with the admin token" +
      (tokenHere ? ` (found here: ${tokenFile}):` : " (the server writes it to DATA_DIR/admin-token at its first start, unless ADMIN_TOKEN is set):"),
    "  npx tb keys create --tier demo        (same storage as the server: run it where `npm start` runs)",
    `  curl -s -X POST ${shellQuote(`${ctx.targets.lpo}/admin/keys`)} -H "X-Admin-Token: $(cat ${tokenFile})" -d '{"tier":"demo"}'`,
    "A demo key shows prices and UDP; partner keys also the stream, associate and partner keys the reports (tb keys create --tier partner)."
  ]
}

const serverDown = (ctx: DemoContext, reason: string): ReadonlyArray<string> => [
  `Nothing answers at ${ctx.targets.lpo} (${reason}).`,
  "Start the server from the repository with `npm start` (without internet: `FEEDS=simulated npm start`) and run the demo again.",
  ctx.targets.urlGiven
    ? "Check the --url you gave: the LPO's HTTP base URL, e.g. http://127.0.0.1:8080."
    : "If it listens elsewhere: --url http://HOST:PORT, or the same LPO_HTTP_PORT / LPO_UDP_PORT / LRS_HTTP_PORT the server was started with."
]

const checkout = (ctx: DemoContext, plan: string) => `${ctx.targets.lpo}/checkout?plan=${plan}`

/** What to do about a refusal code, for any step. */
const nextFor = (ctx: DemoContext, code: string, retryAfter: string | null): ReadonlyArray<string> => {
  switch (code) {
    case "NO_KEY":
      return howToGetAKey(ctx)
    case "MISSING_API_KEY":
    case "INVALID_API_KEY":
      return ["The server does not know this key: check it was copied whole (it starts with tb_) and belongs to this server.", ...howToGetAKey(ctx).slice(1)]
    case "KEY_REVOKED":
      return ["This key was revoked. Ask for a new one, or make one:", ...howToGetAKey(ctx).slice(2)]
    case "KEY_EXPIRED":
      return ["This key has expired. Renew the subscription, or make a new key:", ...howToGetAKey(ctx).slice(2)]
    case "RATE_LIMITED":
      return [`The key's rate limit is used up for the moment: wait ${retryAfter ?? "a few"} s and run the demo again.`]
    case "QUOTA_EXCEEDED":
      return [`The key has used this month's quota; it resets on the 1st (UTC). More with a larger tier: ${checkout(ctx, "associate")}`]
    case "NO_FRESH_PRICE":
      return [
        "The server has no fresh price yet: its exchange feeds are still connecting, or it cannot reach them.",
        "Wait a few seconds and run the demo again; without internet, start the server with `FEEDS=simulated npm start`."
      ]
    case "MAINTENANCE":
      return ["The server is in maintenance mode (POST /admin/system-mode); try again when it is back."]
    case "SYSTEM_BUSY":
      return ["The server is shedding load right now; try again in a moment."]
    case "LRS_NOT_ENABLED":
      return [
        "Reports come with associate and partner keys, and with listener keys that have the LRS add-on" +
          ` (${checkout(ctx, "lrs-addon")}; on your own server: npx tb keys create --tier associate).`
      ]
    case "STREAM_NOT_ENABLED":
      return [`The partner stream comes with partner keys (${checkout(ctx, "partner")}; on your own server: npx tb keys create --tier partner).`]
    default:
      return []
  }
}

/** A refused HTTP answer: skipped when the tier explains it, else failed. */
const refused = (ctx: DemoContext, what: string, answer: Extract<HttpAnswer, { _tag: "answer" }>, skipOn: ReadonlyArray<string> = []): Outcome => {
  const code = answer.envelope?.code ?? `HTTP_${answer.status}`
  const message = answer.envelope?.message ?? answer.text.slice(0, 120)
  const skipped = skipOn.includes(code)
  return {
    status: skipped ? "skipped" : "failed",
    summary: skipped ? `${message} (${code})` : `${what} refused: ${message} (${code}, HTTP ${answer.status})`,
    code,
    next: nextFor(ctx, code, answer.headers.get("retry-after")),
    data: answer.envelope ?? null
  }
}

// ---------------------------------------------------------------------------------------------
// The steps

/** Key: the server is up (GET /health, no key needed) and the key is accepted (GET /reports/key describes it). */
export const keyStep = async (ctx: DemoContext): Promise<StepResult> => {
  const started = performance.now()
  const tryIt = curl(`${ctx.targets.lrs}/reports/key`)
  const health = await httpGet(`${ctx.targets.lpo}/health`, undefined)
  const noKey = ctx.key === undefined
  if (health._tag === "unreachable") {
    return result("key", started, null, {
      status: "failed",
      summary: `the server does not answer at ${ctx.targets.lpo} (${health.reason})`,
      code: "UNREACHABLE",
      next: [...serverDown(ctx, health.reason), ...(noKey ? ["", ...howToGetAKey(ctx)] : [])]
    })
  }
  if (health.envelope === undefined) {
    return result("key", started, null, {
      status: "failed",
      summary: `something answers at ${ctx.targets.lpo}/health, but not the Trinity Beast LPO (HTTP ${health.status})`,
      code: "NOT_LPO",
      next: serverDown(ctx, `HTTP ${health.status} without the API envelope`).slice(1)
    })
  }
  const probe = health.envelope.data as { feeds?: { connected?: number; total?: number }; prices?: { fresh_assets?: number } } | null
  const server = `LPO ${health.envelope.version ?? "?"}, ${probe?.feeds?.connected ?? "?"}/${probe?.feeds?.total ?? "?"} feeds connected, ` +
    `${probe?.prices?.fresh_assets ?? "?"} fresh prices`
  if (ctx.key === undefined) {
    return result("key", started, null, {
      status: "failed", summary: `no --key given (the server is up: ${server})`, code: "NO_KEY", next: howToGetAKey(ctx), data: { health: probe }
    })
  }
  const prefix = keyPrefix(ctx.key)
  const info = await httpGet(`${ctx.targets.lrs}/reports/key`, ctx.key)
  if (info._tag === "unreachable") {
    return result("key", started, tryIt, {
      status: "ok",
      summary: `server up (${server}); the key is checked by the next step (no report server at ${ctx.targets.lrs} to describe it: ${info.reason})`,
      data: { health: probe }
    })
  }
  const code = info.envelope?.code ?? `HTTP_${info.status}`
  if (KEY_CODES.has(code)) {
    return result("key", started, tryIt, { ...refused(ctx, `key ${prefix}`, info), summary: `${prefix} refused: ${info.envelope?.message ?? ""} (${code})` })
  }
  if (info.status === 200 && info.envelope?.data != null) {
    const d = info.envelope.data as {
      tier?: string
      limits?: { requests_per_second?: number; burst?: number; partner_ws?: boolean; webhook_assets?: number }
      queries?: { used?: number; limit?: number | null; left?: number | null }
      reports?: { used?: number; limit?: number | null; left?: number | null }
      month_resets_at?: string
    }
    return result("key", started, tryIt, {
      status: "ok",
      summary: `${prefix} accepted: tier ${d.tier ?? "?"} (${server})`,
      details: [
        `limits: ${limitText(d.limits?.requests_per_second)} req/s, burst ${limitText(d.limits?.burst)}; ` +
          `stream ${d.limits?.partner_ws === true ? "yes" : "no"}; reports yes`,
        `this month: ${limitText(d.queries?.used)} queries used of ${limitText(d.queries?.limit)}, ` +
          `${limitText(d.reports?.used)} reports of ${limitText(d.reports?.limit)} (resets ${d.month_resets_at ?? "on the 1st"})`
      ],
      data: { health: probe, key: d }
    })
  }
  // LRS_NOT_ENABLED (a valid key without reports), or anything else: the key is not refused as such.
  return result("key", started, null, {
    status: "ok",
    summary: `${prefix} accepted (${server})`,
    details: code === "LRS_NOT_ENABLED" ? ["its tier has no reports, so the report server cannot describe it; the price steps show what it can do"] : [`/reports/key answered ${code}`],
    data: { health: probe }
  })
}

interface PriceData {
  readonly asset: string
  readonly quote: string
  readonly price: number
  readonly method: string
  readonly sources: ReadonlyArray<{ readonly exchange: string; readonly price: number; readonly age_ms: number }>
  readonly spread_bps: number
  readonly age_ms: number
  readonly stale: boolean
}

const priceLine = (p: PriceData): string =>
  `${p.asset}/${p.quote} ${money(p.price)}: ${p.method} of ${p.sources.length} source${p.sources.length === 1 ? "" : "s"}, ` +
  `spread ${p.spread_bps.toFixed(1)} bps, ${p.age_ms} ms old${p.stale ? " (stale)" : ""}`

export const priceStep = async (ctx: DemoContext, key: string): Promise<StepResult> => {
  const started = performance.now()
  const url = `${ctx.targets.lpo}/price?asset=BTC`
  const tryIt = curl(url)
  const answer = await httpGet(url, key)
  if (answer._tag === "unreachable") {
    return result("price", started, tryIt, { status: "failed", summary: `no answer from ${url} (${answer.reason})`, code: "UNREACHABLE", next: serverDown(ctx, answer.reason) })
  }
  if (answer.status !== 200 || answer.envelope?.data == null) return result("price", started, tryIt, refused(ctx, "GET /price", answer))
  const p = answer.envelope.data as unknown as PriceData
  const width = Math.max(...p.sources.map((s) => s.exchange.length))
  return result("price", started, tryIt, {
    status: "ok",
    summary: priceLine(p),
    details: p.sources.map((s) => `${s.exchange.padEnd(width)}  ${money(s.price).padStart(12)}  ${s.age_ms} ms old`),
    data: p
  })
}

export const pricesStep = async (ctx: DemoContext, key: string): Promise<StepResult> => {
  const started = performance.now()
  const url = `${ctx.targets.lpo}/prices?assets=${DEMO_ASSETS.join(",")}`
  const tryIt = curl(url)
  const answer = await httpGet(url, key)
  if (answer._tag === "unreachable") {
    return result("prices", started, tryIt, { status: "failed", summary: `no answer from ${url} (${answer.reason})`, code: "UNREACHABLE", next: serverDown(ctx, answer.reason) })
  }
  if (answer.status !== 200 || answer.envelope?.data == null) return result("prices", started, tryIt, refused(ctx, "GET /prices", answer))
  const d = answer.envelope.data as unknown as { prices: ReadonlyArray<PriceData>; missing: ReadonlyArray<string> }
  return result("prices", started, tryIt, {
    status: "ok",
    summary: `${d.prices.length} of ${DEMO_ASSETS.length} prices in one request (it counts as ${DEMO_ASSETS.length} queries)` +
      (d.missing.length > 0 ? `; no fresh price for ${d.missing.join(", ")}` : ""),
    details: d.prices.map(priceLine),
    data: d
  })
}

/** One datagram out, one back: the reply, or undefined after `timeoutMs`. */
const udpExchange = (host: string, port: number, payload: string, timeoutMs: number): Promise<{ readonly reply: string; readonly ms: number } | { readonly error: string } | undefined> =>
  new Promise((done) => {
    const socket = dgram.createSocket(host.includes(":") ? "udp6" : "udp4")
    const sentAt = performance.now()
    const finish = (value: { readonly reply: string; readonly ms: number } | { readonly error: string } | undefined) => {
      clearTimeout(timer)
      socket.close()
      done(value)
    }
    const timer = setTimeout(() => finish(undefined), timeoutMs)
    socket.once("message", (msg) => finish({ reply: msg.toString("utf8"), ms: performance.now() - sentAt }))
    // ICMP port unreachable on a connected socket, or a name that does not resolve.
    socket.once("error", (error) => finish({ error: reasonOf(error) }))
    socket.connect(port, host, () => socket.send(payload))
  })

export const udpStep = async (ctx: DemoContext, key: string): Promise<StepResult> => {
  const started = performance.now()
  const { udpHost, lpoUdpPort } = ctx.targets
  const request = formatUdpRequest({ _tag: "price", apiKey: key, asset: "BTC", quote: "USD", rid: "demo1" })
  const shown = request.replace(key, "$KEY")
  const tryIt = `exec 3<>/dev/udp/${udpHost}/${lpoUdpPort}; printf "${shown}" >&3; timeout 1 cat <&3; exec 3>&-`
  const answer = await udpExchange(udpHost, lpoUdpPort, request, UDP_TIMEOUT_MS)
  const noReply = (why: string): StepResult =>
    result("udp", started, tryIt, {
      status: "failed",
      summary: `no reply to "${shown}" from ${udpHost}:${lpoUdpPort} (${why})`,
      code: "TIMEOUT",
      next: [
        `The LPO answers UDP on LPO_UDP_PORT (${lpoUdpPort} here) in the modes ALL (npm start), APP_SERVER and APP_REPORT_SERVER; ` +
          "set LPO_UDP_PORT to the server's if it differs, and check no firewall drops UDP.",
        "A datagram with a key the server does not know gets no reply (against amplification)."
      ]
    })
  if (answer === undefined) return noReply(`nothing within ${UDP_TIMEOUT_MS / 1000} s`)
  if ("error" in answer) return noReply(answer.error)
  let reply: { ok?: boolean; code?: string; asset?: string; quote?: string; price?: number; age_ms?: number; source?: string }
  try {
    reply = JSON.parse(answer.reply) as typeof reply
  } catch {
    return result("udp", started, tryIt, { status: "failed", summary: `a reply that is not JSON: ${answer.reply.slice(0, 80)}`, code: "BAD_REPLY" })
  }
  if (reply.ok !== true) {
    const code = reply.code ?? "BAD_REPLY"
    return result("udp", started, tryIt, { status: "failed", summary: `refused over UDP: ${code}`, code, next: nextFor(ctx, code, null), data: reply })
  }
  return result("udp", started, tryIt, {
    status: "ok",
    summary: `${reply.asset}/${reply.quote} ${money(reply.price)} (${reply.source}, ${reply.age_ms} ms old) in ${answer.ms.toFixed(1)} ms: one datagram each way`,
    details: [`sent: ${shown}`, `got:  ${answer.reply}`],
    data: reply
  })
}

interface StreamMessage {
  readonly type: string
  readonly seq: number
  readonly [field: string]: unknown
}

type StreamOutcome =
  | { readonly _tag: "messages"; readonly messages: ReadonlyArray<StreamMessage> }
  | { readonly _tag: "refused"; readonly status: number; readonly body: string }
  | { readonly _tag: "error"; readonly reason: string }

/** Subscribes over /ws and collects messages: the answer, the snapshot, then STREAM_LISTEN_MS of updates. */
const streamSession = (url: string, key: string, assets: ReadonlyArray<string>): Promise<StreamOutcome> =>
  new Promise((done) => {
    const ws = new WebSocket(url, { headers: { "x-api-key": key }, handshakeTimeout: HTTP_TIMEOUT_MS })
    const messages: Array<StreamMessage> = []
    let prices = 0
    let settled = false
    const finish = (outcome: StreamOutcome) => {
      if (settled) return
      settled = true
      clearTimeout(deadline)
      if (ws.readyState === WebSocket.OPEN) ws.close(1000)
      else ws.terminate()
      done(outcome)
    }
    const deadline = setTimeout(() => finish(messages.length > 0 ? { _tag: "messages", messages } : { _tag: "error", reason: `no message within ${STREAM_TIMEOUT_MS / 1000} s` }), STREAM_TIMEOUT_MS)
    ws.on("open", () => ws.send(JSON.stringify({ type: "subscribe", assets })))
    ws.on("message", (data) => {
      let m: StreamMessage
      try {
        m = JSON.parse(String(data)) as StreamMessage
      } catch {
        return
      }
      messages.push(m)
      if (m.type === "response" && m["status"] === "error") return finish({ _tag: "messages", messages })
      // The answer is followed by one price_update or stale per asset (the snapshot); then listen a little for live updates.
      if (m.type === "price_update" || m.type === "stale") prices += 1
      if (prices === assets.length) setTimeout(() => finish({ _tag: "messages", messages }), STREAM_LISTEN_MS)
    })
    ws.on("unexpected-response", (_req, res) => {
      let body = ""
      res.on("data", (d: Buffer) => void (body += d.toString()))
      res.on("end", () => finish({ _tag: "refused", status: res.statusCode ?? 0, body }))
    })
    ws.on("error", (error) => finish({ _tag: "error", reason: reasonOf(error) }))
    ws.on("close", (code) => finish(messages.length > 0 ? { _tag: "messages", messages } : { _tag: "error", reason: `closed with code ${code}` }))
  })

export const streamStep = async (ctx: DemoContext, key: string): Promise<StepResult> => {
  const started = performance.now()
  const assets = ["BTC", "ETH"]
  const url = `${ctx.targets.lpo.replace(/^http/u, "ws")}/ws`
  const tryIt = curl(`${ctx.targets.lpo}/stream?assets=${assets.join(",")}`, "N")
  const outcome = await streamSession(url, key, assets)
  if (outcome._tag === "error") {
    return result("stream", started, tryIt, { status: "failed", summary: `no stream from ${url} (${outcome.reason})`, code: "UNREACHABLE" })
  }
  if (outcome._tag === "refused") {
    let envelope: Envelope | undefined
    try {
      const parsed: unknown = JSON.parse(outcome.body)
      envelope = isEnvelope(parsed) ? parsed : undefined
    } catch {
      envelope = undefined
    }
    return result("stream", started, tryIt, refused(ctx, "the stream", { _tag: "answer", status: outcome.status, envelope, headers: new Headers(), text: outcome.body }, ["STREAM_NOT_ENABLED"]))
  }
  const messages = outcome.messages
  const first = messages[0]
  if (first?.type === "response" && first["status"] === "error") {
    const code = String(first["code"])
    // The tier's answer may also come inside the socket: then it is the same skip as a 403 at the upgrade.
    const skipped = code === "STREAM_NOT_ENABLED"
    return result("stream", started, tryIt, {
      status: skipped ? "skipped" : "failed",
      summary: skipped ? `${String(first["message"])} (${code})` : `subscribe refused: ${String(first["message"])} (${code})`,
      code, next: nextFor(ctx, code, null), data: messages
    })
  }
  const updates = messages.filter((m) => m.type === "price_update")
  const latest = new Map<string, StreamMessage>()
  for (const m of messages) if (m.type === "price_update" || m.type === "stale") latest.set(String(m["asset"]), m)
  const gaps = messages.some((m, i) => m.seq !== i + 1)
  return result("stream", started, tryIt, {
    status: "ok",
    summary: `subscribed to ${assets.join(", ")} over WebSocket: ${messages.length} messages (${updates.length} price updates) in ` +
      `${(elapsed(started) / 1000).toFixed(1)} s, seq 1..${messages.at(-1)?.seq ?? 0}${gaps ? " WITH GAPS" : " without gaps"}`,
    details: [...latest.values()].map((m) => m.type === "stale" ? `${String(m["asset"])} stale` : `${String(m["asset"])}/${String(m["quote"])} ${money(m["price"])}`),
    data: messages
  })
}

export const reportStep = async (ctx: DemoContext, key: string): Promise<StepResult> => {
  const started = performance.now()
  await new Promise((r) => setTimeout(r, REPORT_SETTLE_MS))
  const from = new Date(ctx.startedAt - 1_000).toISOString()
  const url = `${ctx.targets.lrs}/reports/summary?group_by=endpoint&from=${encodeURIComponent(from)}`
  const tryIt = `${curl(`${ctx.targets.lrs}/reports/summary?group_by=endpoint&format=text`)}   (UDP: v1 summary $KEY on port ${ctx.targets.lrsUdpPort})`
  const answer = await httpGet(url, key)
  if (answer._tag === "unreachable") {
    return result("report", started, tryIt, {
      status: "failed",
      summary: `the report server does not answer at ${ctx.targets.lrs} (${answer.reason})`,
      code: "UNREACHABLE",
      next: [
        "The report server runs in the modes ALL (the default of `npm start`), APP_REPORT_SERVER and REPORT_SERVER, on LRS_HTTP_PORT (9090);",
        "set LRS_HTTP_PORT to the server's if it differs."
      ]
    })
  }
  if (answer.status !== 200 || answer.envelope?.data == null) return result("report", started, tryIt, refused(ctx, "GET /reports/summary", answer, ["LRS_NOT_ENABLED"]))
  const d = answer.envelope.data as { groups?: ReadonlyArray<{ group: string; requests: number; errors: number; p50_us: number | null }>; data_through?: string }
  const groups = d.groups ?? []
  const total = groups.reduce((n, g) => n + g.requests, 0)
  // The LPO logs UDP requests under the endpoint "price", HTTP ones under their path.
  const endpoint = (group: string) => (group === "price" ? "price (UDP)" : group)
  const width = Math.max(8, ...groups.map((g) => endpoint(g.group).length))
  return result("report", started, tryIt, {
    status: "ok",
    summary: total === 0
      ? "no rows of this run stored yet (usage rows are written in batches; through a queue it takes longer): ask again in a few seconds"
      : `this run's requests as the report server has them: ${total} rows through ${d.data_through ?? "now"}`,
    details: total === 0 ? [] : [
      `${"endpoint".padEnd(width)}  requests  errors  p50`,
      ...groups.map((g) => `${endpoint(g.group).padEnd(width)}  ${String(g.requests).padStart(8)}  ${String(g.errors).padStart(6)}  ${g.p50_us === null ? "-" : `${g.p50_us} µs`}`)
    ],
    next: ["Your usage rows, newest first: " + curl(`${ctx.targets.lrs}/reports/usage?page_size=10`), "Every answer and error code: docs/api.md, or /docs on the server."],
    data: d
  })
}
