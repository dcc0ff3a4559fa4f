/**
 * Webhook deliveries per second to a loopback HTTP receiver (a child process answering 204),
 * against a bare HTTP client loop sending the same bodies over the same kind of keep-alive agent.
 * Both sides run `webhooks` endpoints, one request in flight per endpoint (the engine's rule).
 *
 * The engine side is the real delivery engine (src/programs/webhook/deliveryEngine.ts): seq from
 * the cache (in-process), Standard Webhooks signing, the SSRF-guarded sender, one usage row per
 * attempt (a counting sink here: the usage pipeline is measured elsewhere), deviation checks on
 * every price change. Each endpoint watches an asset of its own, which the price source moves by
 * 0.1 % after each delivery attempt of it, so every endpoint is due again as soon as it is free. Rounds alternate baseline and engine; figures are medians.
 *
 *   npm run build && node dist/bench/webhookDelivery.js [--webhooks 50] [--seconds 5] [--rounds 3] [--json]
 */
import { Context, Effect, Latch, Layer } from "effect"
import { spawn } from "node:child_process"
import { Agent, request } from "node:http"
import { pathToFileURL } from "node:url"
import { median } from "../src/domain/consensus.ts"
import { newSigningSecret, priceUpdateBody, secretKeyBytes, standardSignature } from "../src/domain/webhook.ts"
import { makeMemoryCache } from "../src/layers/CacheMemory.ts"
import { makeHttpSender, makeUdpSender } from "../src/layers/webhooks/webhookNet.ts"
import { makeDeliveryEngine } from "../src/programs/webhook/deliveryEngine.ts"
import { Params } from "../src/services/Params.ts"
import type { PriceEvent, PriceSubscription } from "../src/services/PriceCache.ts"
import { ZERO_USAGE_STATS } from "../src/services/UsageSink.ts"
import type { Webhook, WebhookStore } from "../src/services/Webhooks.ts"
import type { Benchmark, BenchSettings } from "./run.ts"

export interface WebhookBenchResult {
  readonly webhooks: number
  readonly bareRate: number
  readonly engineRate: number
  readonly ratio: number
  readonly rounds: number
}

const RECEIVER = `
const http = require("node:http")
const server = http.createServer((req, res) => { req.resume(); req.on("end", () => { res.writeHead(204); res.end() }) })
server.keepAliveTimeout = 60000
server.listen(0, "127.0.0.1", () => process.stdout.write(String(server.address().port) + "\\n"))
`

const startReceiver = () =>
  new Promise<{ readonly port: number; readonly stop: () => void }>((resolve, reject) => {
    const child = spawn(process.execPath, ["-e", RECEIVER], { stdio: ["ignore", "pipe", "inherit"] })
    child.once("error", reject)
    child.stdout.once("data", (d: Buffer) => resolve({ port: Number(d.toString().trim()), stop: () => void child.kill("SIGKILL") }))
  })

/** The baseline: `endpoints` sequential loops POSTing a price body with the same headers, keep-alive. */
const bareLoop = async (port: number, endpoints: number, ms: number): Promise<number> => {
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity })
  const key = secretKeyBytes(newSigningSecret())
  let done = 0
  let counting = false
  const stopAt = Date.now() + ms
  const post = (i: number, seq: number) =>
    new Promise<void>((resolve) => {
      const now = Date.now()
      const body = priceUpdateBody({ webhookId: `bare-${i}`, seq, asset: "BTC", quote: "USD", price: 97_000 + seq, ts: now, now, reason: "deviation" })
      const ts = Math.floor(now / 1000)
      const payload = Buffer.from(body)
      const req = request({
        host: "127.0.0.1", port, path: `/hook/${i}`, method: "POST", agent,
        headers: {
          "webhook-id": `msg_${i}_${seq}`, "webhook-timestamp": String(ts), "webhook-signature": standardSignature([key], `msg_${i}_${seq}`, ts, body),
          "content-type": "application/json", "content-length": String(payload.length)
        }
      }, (res) => {
        res.resume()
        res.on("end", () => {
          if (counting) done++
          resolve()
        })
      })
      req.on("error", () => resolve())
      req.end(payload)
    })
  const loops = Array.from({ length: endpoints }, async (_, i) => {
    for (let seq = 1; Date.now() < stopAt; seq++) await post(i, seq)
  })
  // Count after a short warm-up (connections open), as for the engine.
  const warm = Math.min(500, ms / 5)
  await new Promise((r) => setTimeout(r, warm))
  counting = true
  const started = Date.now()
  await Promise.all(loops)
  agent.destroy()
  return done / ((Date.now() - started) / 1000)
}

/**
 * Prices of which an asset moves by 0.1 % right after each delivery attempt of it (`move`, called
 * by the usage sink), so every endpoint is due again as soon as it is free: one event per
 * delivery, as a busy feed would give, and no spinning.
 */
const movingPrices = () => {
  const watched = new Map<string, { asset: string; quote: string }>()
  const prices = new Map<string, number>()
  const moved = new Set<string>()
  const ready = Latch.makeUnsafe(false)
  const eventOf = (key: string, k: { asset: string; quote: string }): PriceEvent => {
    const price = (prices.get(key) ?? 97_000) * 1.001
    prices.set(key, price)
    const at = Date.now()
    return { _tag: "Price", asset: k.asset, quote: k.quote, price, ts: at, sources: 3, at }
  }
  const pending = (): ReadonlyArray<PriceEvent> => {
    const out: Array<PriceEvent> = []
    for (const key of moved) {
      const k = watched.get(key)
      if (k !== undefined) out.push(eventOf(key, k))
    }
    moved.clear()
    return out
  }
  const subscription: PriceSubscription = {
    watch: (keys) => keys.map((k) => {
      watched.set(`${k.asset}/${k.quote}`, k)
      return eventOf(`${k.asset}/${k.quote}`, k)
    }),
    unwatch: (keys) => {
      for (const k of keys) watched.delete(`${k.asset}/${k.quote}`)
    },
    size: () => watched.size,
    take: ready.await.pipe(Effect.andThen(Effect.sync(() => {
      ready.closeUnsafe()
      return pending()
    }))),
    poll: pending
  }
  return {
    subscription,
    move: (asset: string, quote: string) => {
      moved.add(`${asset}/${quote}`)
      ready.openUnsafe()
    }
  }
}

/** The engine delivering to `endpoints` webhooks for `ms`: deliveries per second (attempts answered 2xx). */
const engineRun = (port: number, endpoints: number, ms: number) =>
  Effect.gen(function*() {
    const webhooks: Array<Webhook> = Array.from({ length: endpoints }, (_, i) => ({
      id: `bench-${i}`, apiKeyId: "00000000-0000-4000-8000-000000000001", url: `http://127.0.0.1:${port}/hook/${i}`, udp: undefined,
      assets: [{ asset: `A${i}`, quote: "USD" }], deviationBps: 1, heartbeatS: 3600, status: "active", disabledReason: undefined,
      secrets: [newSigningSecret()], lastSeq: 0, lastDeliveryAt: undefined, lastStatus: undefined, lastLatencyMs: undefined,
      consecutiveFailures: 0, failingSince: undefined, version: 1
    }))
    const store: WebhookStore["Service"] = {
      byKey: () => Effect.succeed(undefined), byId: () => Effect.succeed(undefined), configure: () => Effect.die("unused"), setAssets: () => Effect.succeed(undefined),
      setStatus: () => Effect.void, remove: () => Effect.succeed(false), active: Effect.succeed(webhooks), recordOutcome: () => Effect.void,
      counts: () => Effect.succeed({ deliveries: 0, failures: 0 })
    }
    let ok = 0
    let counting = false
    const sender = { allowPrivate: true }
    const http = makeHttpSender(sender)
    const udp = makeUdpSender(sender)
    const prices = movingPrices()
    const params = Context.get(yield* Layer.build(ParamsLiveDefaults), Params)
    const engine = yield* makeDeliveryEngine({
      store, cache: makeMemoryCache(), params, http, udp, subscribe: Effect.succeed(prices.subscription),
      usage: {
        record: (f) => {
          if (counting && f.status !== undefined && f.status >= 200 && f.status < 300) ok++
          prices.move(f.asset ?? "", f.quote ?? "")
        },
        stats: () => ZERO_USAGE_STATS
      }
    })
    for (const w of webhooks) yield* engine.upsert(w)
    yield* Effect.sleep(Math.min(500, ms / 5))
    counting = true
    const started = Date.now()
    const stop = Latch.makeUnsafe(false)
    setTimeout(() => stop.openUnsafe(), ms).unref()
    yield* stop.await
    const rate = ok / ((Date.now() - started) / 1000)
    counting = false
    for (const w of webhooks) yield* engine.stop(w.id)
    http.close()
    udp.close()
    return rate
  }).pipe(Effect.scoped)

/** Params with the defaults only (no database): what the engine reads is webhook_disable_after_h. */
const ParamsLiveDefaults = Layer.succeed(Params, Params.of({
  current: () => { throw new Error("unused") },
  int: () => 24,
  bool: () => false,
  list: Effect.succeed([]),
  profiles: Effect.succeed({}),
  set: () => Effect.die("unused"),
  applyProfile: () => Effect.die("unused"),
  refresh: Effect.void
}))

export const measureWebhookDelivery = async (options: { readonly webhooks: number; readonly ms: number; readonly rounds: number }): Promise<WebhookBenchResult> => {
  const receiver = await startReceiver()
  try {
    const bare: Array<number> = []
    const engine: Array<number> = []
    for (let r = 0; r < options.rounds; r++) {
      bare.push(await bareLoop(receiver.port, options.webhooks, options.ms))
      engine.push(await Effect.runPromise(engineRun(receiver.port, options.webhooks, options.ms)))
    }
    const bareRate = median(bare)
    const engineRate = median(engine)
    return { webhooks: options.webhooks, bareRate, engineRate, ratio: engineRate / bareRate, rounds: options.rounds }
  } finally {
    receiver.stop()
  }
}

export const webhookDeliveryBenchmark: Benchmark = {
  name: "webhook delivery: deliveries per second to a loopback HTTP receiver",
  run: async (settings: BenchSettings) => {
    const r = await measureWebhookDelivery({ webhooks: 50, ms: settings.durationMs, rounds: settings.rounds })
    const group = "webhook delivery (50 endpoints, loopback)"
    return {
      rows: [
        { group, subject: "bare HTTP client loop", rate: r.bareRate, unit: "deliveries/s" },
        { group, subject: "webhook delivery engine", rate: r.engineRate, unit: "deliveries/s", ratio: r.ratio, note: "signed, seq, usage row per attempt" }
      ],
      checks: [{ name: "webhook deliveries ≥ 0.5× a bare HTTP client loop", pass: r.ratio >= 0.5, detail: `${r.ratio.toFixed(2)}×` }]
    }
  }
}

const argValue = (flag: string, fallback: number): number => {
  const at = process.argv.indexOf(flag)
  const value = at >= 0 ? Number(process.argv[at + 1]) : fallback
  return Number.isFinite(value) && value > 0 ? value : fallback
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = await measureWebhookDelivery({ webhooks: argValue("--webhooks", 50), ms: argValue("--seconds", 5) * 1000, rounds: argValue("--rounds", 3) })
  if (process.argv.includes("--json")) console.log(JSON.stringify(result))
  else {
    console.log(`webhook delivery, ${result.webhooks} endpoints, ${result.rounds} alternating rounds (medians):`)
    console.log(`  bare HTTP client loop   ${result.bareRate.toFixed(0)} deliveries/s`)
    console.log(`  webhook delivery engine ${result.engineRate.toFixed(0)} deliveries/s  (${result.ratio.toFixed(2)}×; goal ≥ 0.5×)`)
  }
  process.exit(0)
}
