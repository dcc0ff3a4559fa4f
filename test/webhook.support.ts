/**
 * Webhook test receivers on loopback (HTTP, HTTPS with a self-signed certificate made here, UDP),
 * a price source the test moves by hand (PriceSubscription), and an in-memory WebhookStore for the
 * engine's own tests.
 */
import { Effect, Latch } from "effect"
import { execFileSync } from "node:child_process"
import { createSocket } from "node:dgram"
import { mkdtempSync, readFileSync } from "node:fs"
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http"
import { createServer as createHttpsServer } from "node:https"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { PriceEvent, PriceSubscription, WatchResult } from "../src/services/PriceCache.ts"
import type { AttemptOutcome, Webhook, WebhookStore } from "../src/services/Webhooks.ts"
import type { WebhookStatus } from "../src/domain/webhook.ts"

export interface Received {
  readonly headers: IncomingHttpHeaders
  readonly body: string
  readonly at: number
}

export interface Receiver {
  readonly url: string
  readonly port: number
  readonly received: Array<Received>
  /** Status to answer for the next requests (shifted per request; the last one stays). */
  answers: Array<number>
  /** Headers sent with every answer. */
  answerHeaders: Record<string, string>
  /** Most requests open at once. */
  maxInFlight: number
  /** Never answer (a dead endpoint that accepts and stalls). */
  hang: boolean
  readonly waitFor: (n: number, ms?: number) => Promise<void>
  readonly close: () => Promise<void>
}

let certificate: { readonly key: string; readonly cert: string } | undefined
/** A self-signed certificate for 127.0.0.1 and localhost (made once per test file). */
export const selfSigned = () => {
  if (certificate !== undefined) return certificate
  const dir = mkdtempSync(join(tmpdir(), "tb-webhook-tls-"))
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")
  ], { stdio: "ignore" })
  certificate = { key: readFileSync(join(dir, "key.pem"), "utf8"), cert: readFileSync(join(dir, "cert.pem"), "utf8") }
  return certificate
}

export const receiver = (options: { readonly tls?: boolean } = {}): Promise<Receiver> =>
  new Promise((resolve) => {
    const received: Array<Received> = []
    let inFlight = 0
    const waiters: Array<() => void> = []
    const held: Array<ServerResponse> = []
    const r: Receiver = {
      url: "",
      port: 0,
      received,
      answers: [200],
      answerHeaders: {},
      maxInFlight: 0,
      hang: false,
      waitFor: (n, ms = 10_000) =>
        new Promise((done, fail) => {
          const deadline = Date.now() + ms
          const check = () => {
            if (received.length >= n) return done()
            if (Date.now() > deadline) return fail(new Error(`receiver: ${received.length} of ${n} deliveries after ${ms} ms`))
            setTimeout(check, 10)
          }
          check()
        }),
      close: () =>
        new Promise((done) => {
          for (const res of held) res.destroy()
          server.closeAllConnections()
          server.close(() => done())
        })
    }
    const handle = (req: IncomingMessage, res: ServerResponse) => {
      inFlight++
      r.maxInFlight = Math.max(r.maxInFlight, inFlight)
      let body = ""
      req.on("data", (c: Buffer) => void (body += c.toString()))
      req.on("end", () => {
        received.push({ headers: req.headers, body, at: Date.now() })
        for (const w of waiters.splice(0)) w()
        if (r.hang) {
          held.push(res)
          return
        }
        const status = r.answers.length > 1 ? r.answers.shift()! : r.answers[0]!
        // Answer a moment later, so overlapping deliveries (if any) would show in maxInFlight.
        setTimeout(() => {
          inFlight--
          res.writeHead(status, { "content-type": "text/plain", ...r.answerHeaders }).end("ok")
        }, 2)
      })
    }
    const server = options.tls === true ? createHttpsServer(selfSigned(), handle) : createHttpServer(handle)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      Object.assign(r, { port, url: `${options.tls === true ? "https" : "http"}://127.0.0.1:${port}/hook` })
      resolve(r)
    })
  })

export interface UdpReceiver {
  readonly port: number
  readonly datagrams: Array<string>
  readonly close: () => void
}

export const udpReceiver = (): Promise<UdpReceiver> =>
  new Promise((resolve) => {
    const socket = createSocket("udp4")
    const datagrams: Array<string> = []
    socket.on("message", (m) => void datagrams.push(m.toString()))
    socket.bind(0, "127.0.0.1", () => resolve({ port: socket.address().port, datagrams, close: () => socket.close() }))
  })

/** A price source moved by hand: `set` publishes a consensus change to the watchers. */
export const handPrices = () => {
  const state = new Map<string, PriceEvent>()
  const pending = new Map<string, PriceEvent>()
  const watched = new Set<string>()
  /** Keys no market trades: `watch` answers UnknownAsset and does not watch them (as PriceCache). */
  const unknown = new Set<string>()
  const ready = Latch.makeUnsafe(false)
  const key = (asset: string, quote: string) => `${asset}/${quote}`
  const subscription: PriceSubscription = {
    watch: (keys) =>
      keys.map((k): WatchResult => {
        if (unknown.has(key(k.asset, k.quote))) return { _tag: "UnknownAsset", asset: k.asset, quote: k.quote }
        watched.add(key(k.asset, k.quote))
        return state.get(key(k.asset, k.quote)) ?? { _tag: "Stale", asset: k.asset, quote: k.quote, ts: undefined, at: Date.now() }
      }),
    unwatch: (keys) => {
      for (const k of keys) watched.delete(key(k.asset, k.quote))
    },
    size: () => watched.size,
    take: Effect.gen(function*() {
      while (true) {
        yield* ready.await
        ready.closeUnsafe()
        const out = [...pending.values()]
        pending.clear()
        if (out.length > 0) return out
      }
    }),
    poll: () => {
      const out = [...pending.values()]
      pending.clear()
      return out
    }
  }
  return {
    subscribe: Effect.succeed(subscription),
    watched,
    unknown,
    set: (asset: string, quote: string, price: number, ts = Date.now()) => {
      const e: PriceEvent = { _tag: "Price", asset, quote, price, ts, sources: 3, at: Date.now() }
      state.set(key(asset, quote), e)
      if (watched.has(key(asset, quote))) {
        pending.set(key(asset, quote), e)
        ready.openUnsafe()
      }
    },
    /** No fresh source left for the key. */
    stale: (asset: string, quote: string) => {
      const e: PriceEvent = { _tag: "Stale", asset, quote, ts: undefined, at: Date.now() }
      state.set(key(asset, quote), e)
      if (watched.has(key(asset, quote))) {
        pending.set(key(asset, quote), e)
        ready.openUnsafe()
      }
    }
  }
}

/** An in-memory WebhookStore: what the engine writes (status changes, outcomes) kept for the test to read. */
export const memoryStore = (webhooks: Array<Webhook>) => {
  const statuses: Array<{ id: string; status: WebhookStatus; reason: string | undefined }> = []
  const outcomes: Array<{ id: string; outcome: AttemptOutcome }> = []
  const notYet = () => Effect.die(new Error("not used by the engine"))
  const store: WebhookStore["Service"] = {
    byKey: notYet,
    byId: (id) => Effect.succeed(webhooks.find((w) => w.id === id)),
    configure: notYet,
    setAssets: notYet,
    setStatus: (id, status, reason) =>
      Effect.sync(() => {
        statuses.push({ id, status, reason })
        const i = webhooks.findIndex((w) => w.id === id)
        if (i !== -1) webhooks[i] = { ...webhooks[i]!, status, disabledReason: reason, version: webhooks[i]!.version + 1 }
      }),
    remove: notYet,
    active: Effect.sync(() => webhooks.filter((w) => w.status === "active")),
    recordOutcome: (id, outcome) => Effect.sync(() => void outcomes.push({ id, outcome })),
    counts: () => Effect.succeed({ deliveries: 0, failures: 0 })
  }
  return { store, statuses, outcomes }
}

/** A webhook as the store would hand it over. */
export const webhookOf = (fields: Partial<Webhook> & Pick<Webhook, "id">): Webhook => ({
  apiKeyId: "00000000-0000-4000-8000-000000000001", url: undefined, udp: undefined, assets: [{ asset: "BTC", quote: "USD" }],
  deviationBps: 50, heartbeatS: 60, status: "active", disabledReason: undefined, secrets: ["whsec_" + Buffer.alloc(32, 7).toString("base64")],
  lastSeq: 0, lastDeliveryAt: undefined, lastStatus: undefined, lastLatencyMs: undefined, consecutiveFailures: 0, failingSince: undefined, version: 1,
  ...fields
})
