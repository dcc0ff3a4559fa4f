/**
 * The webhook delivery engine against receivers on loopback (HTTP, HTTPS with a self-signed
 * certificate, UDP; WEBHOOK_ALLOW_PRIVATE=true), under a price source moved by hand: deviation
 * and heartbeat triggers (TestClock), Standard Webhooks signatures checked by the `standardwebhooks`
 * package, retries keeping seq and webhook-id with the newest price, 410, auto-disable, rotation,
 * per-endpoint order and a dead endpoint beside a live one, usage rows per attempt.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { createHmac } from "node:crypto"
import { Webhook as StandardWebhook } from "standardwebhooks"
import type { UsageFacts } from "../src/domain/usageChunk.ts"
import { makeMemoryCache } from "../src/layers/CacheMemory.ts"
import { makeHttpSender, makeUdpSender } from "../src/layers/webhooks/webhookNet.ts"
import { makeDeliveryEngine } from "../src/programs/webhook/deliveryEngine.ts"
import { Params } from "../src/services/Params.ts"
import { ZERO_USAGE_STATS } from "../src/services/UsageSink.ts"
import type { Webhook } from "../src/services/Webhooks.ts"
import { testParams } from "./support/params.ts"
import { handPrices, memoryStore, receiver, selfSigned, udpReceiver, webhookOf } from "./webhook.support.ts"

const SECRET = "whsec_" + Buffer.alloc(32, 7).toString("base64")
const NEW_SECRET = "whsec_" + Buffer.alloc(32, 9).toString("base64")

/** Wait in real time (the receivers answer in real time, whatever TestClock says). */
const realWait = (ms: number) => Effect.promise(() => new Promise((r) => setTimeout(r, ms)))
const until = (what: string, check: () => boolean, ms = 5_000) =>
  Effect.promise(async () => {
    const deadline = Date.now() + ms
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 5))
    }
  })

const setup = (webhooks: Array<Webhook>, params: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const prices = handPrices()
    const { store, statuses, outcomes } = memoryStore(webhooks)
    const rows: Array<UsageFacts> = []
    const sender = { allowPrivate: true, ca: selfSigned().cert }
    const http = makeHttpSender(sender)
    const udp = makeUdpSender(sender)
    yield* Effect.addFinalizer(() => Effect.sync(() => (http.close(), udp.close())))
    const paramsCtx = yield* Layer.build(testParams(params))
    const engine = yield* makeDeliveryEngine({
      store, cache: makeMemoryCache(), usage: { record: (f) => void rows.push(f), stats: () => ZERO_USAGE_STATS },
      params: Context.get(paramsCtx, Params), subscribe: prices.subscribe, http, udp
    })
    for (const w of webhooks) yield* engine.upsert(w)
    return { prices, engine, rows, statuses, outcomes }
  })

const bodyOf = (r: { readonly body: string }) => JSON.parse(r.body) as Record<string, unknown>
const verify = (secret: string, r: { readonly headers: Record<string, string | Array<string> | undefined>; readonly body: string }) =>
  new StandardWebhook(secret).verify(r.body, {
    "webhook-id": String(r.headers["webhook-id"]), "webhook-timestamp": String(r.headers["webhook-timestamp"]), "webhook-signature": String(r.headers["webhook-signature"])
  })

describe("webhook delivery", () => {
  it.effect("deviation and heartbeat: first price at once, a move of deviation_bps, then the heartbeat (TestClock); signatures verify", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const rx = yield* Effect.acquireRelease(Effect.promise(() => receiver()), (r) => Effect.promise(r.close))
      const { prices, rows } = yield* setup([webhookOf({ id: "wh-1", url: rx.url, deviationBps: 50, heartbeatS: 60 })])
      prices.set("BTC", "USD", 100_000)
      yield* Effect.promise(() => rx.waitFor(1))
      assert.deepInclude(bodyOf(rx.received[0]!), { type: "price.update", webhook_id: "wh-1", seq: 1, asset: "BTC", quote: "USD", price: 100_000, reason: "heartbeat" })
      // 30 bps: not due.
      prices.set("BTC", "USD", 100_300)
      yield* realWait(150)
      assert.strictEqual(rx.received.length, 1)
      // 60 bps from the last delivered price: due at once.
      prices.set("BTC", "USD", 100_600)
      yield* Effect.promise(() => rx.waitFor(2))
      assert.deepInclude(bodyOf(rx.received[1]!), { seq: 2, price: 100_600, reason: "deviation" })
      // Heartbeat: 60 s after the last delivery, not before.
      yield* TestClock.adjust("59 seconds")
      yield* realWait(150)
      assert.strictEqual(rx.received.length, 2)
      yield* TestClock.adjust("1 second")
      yield* Effect.promise(() => rx.waitFor(3))
      assert.deepInclude(bodyOf(rx.received[2]!), { seq: 3, price: 100_600, reason: "heartbeat" })
      for (const r of rx.received) assert.deepStrictEqual(verify(SECRET, r), JSON.parse(r.body))
      // A signature made with another secret is refused by the same verifier.
      assert.throws(() => verify(NEW_SECRET, rx.received[0]!))
      yield* until("3 usage rows", () => rows.length >= 3)
      assert.deepStrictEqual(rows.map((r) => [r.service, r.protocol, r.endpoint, r.status, r.code]), Array.from({ length: 3 }, () => ["WEBHOOK", "http", "price.update", 200, "OK"]))
    }))

  it.effect("no heartbeat while the asset has no fresh price; the next fresh price is delivered at once", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const rx = yield* Effect.acquireRelease(Effect.promise(() => receiver()), (r) => Effect.promise(r.close))
      const { prices, rows } = yield* setup([webhookOf({ id: "wh-stale", url: rx.url, heartbeatS: 10 })])
      prices.set("BTC", "USD", 100)
      yield* until("first delivery", () => rows.length === 1)
      prices.stale("BTC", "USD")
      yield* realWait(50)
      yield* TestClock.adjust("35 seconds")
      yield* realWait(150)
      assert.strictEqual(rx.received.length, 1)
      prices.set("BTC", "USD", 100)
      yield* Effect.promise(() => rx.waitFor(2))
      assert.deepInclude(bodyOf(rx.received[1]!), { seq: 2, reason: "heartbeat" })
    }))

  it.live("an asset no market trades yet is asked for again at the next sweep, and delivered once it trades", () =>
    Effect.gen(function*() {
      const rx = yield* Effect.acquireRelease(Effect.promise(() => receiver()), (r) => Effect.promise(r.close))
      const webhook = webhookOf({ id: "wh-new", url: rx.url, assets: [{ asset: "NEWCOIN", quote: "USD" }] })
      const prices = handPrices()
      prices.unknown.add("NEWCOIN/USD")
      const { store } = memoryStore([webhook])
      const http = makeHttpSender({ allowPrivate: true })
      const udp = makeUdpSender({ allowPrivate: true })
      yield* Effect.addFinalizer(() => Effect.sync(() => (http.close(), udp.close())))
      const engine = yield* makeDeliveryEngine({
        store, cache: makeMemoryCache(), usage: { record: () => {}, stats: () => ZERO_USAGE_STATS },
        params: Context.get(yield* Layer.build(testParams({})), Params), subscribe: prices.subscribe, http, udp
      })
      yield* engine.upsert(webhook)
      prices.set("NEWCOIN", "USD", 1.5)
      yield* realWait(100)
      assert.strictEqual(rx.received.length, 0)
      // The asset map now has it; the lease sweep hands the same webhook over again.
      prices.unknown.delete("NEWCOIN/USD")
      yield* engine.upsert(webhook)
      yield* Effect.promise(() => rx.waitFor(1))
      assert.deepInclude(bodyOf(rx.received[0]!), { asset: "NEWCOIN", price: 1.5, seq: 1 })
    }), 20_000)

  it.effect("a failed delivery is retried after 5 s and 30 s with the same seq and webhook-id and the newest price", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const rx = yield* Effect.acquireRelease(Effect.promise(() => receiver()), (r) => Effect.promise(r.close))
      rx.answers = [500, 503, 200]
      const { prices, rows, outcomes } = yield* setup([webhookOf({ id: "wh-2", url: rx.url })])
      prices.set("BTC", "USD", 50_000)
      yield* until("first attempt answered", () => rows.length === 1)
      yield* realWait(20)
      prices.set("BTC", "USD", 50_010)
      yield* TestClock.adjust("4999 millis")
      yield* realWait(100)
      assert.strictEqual(rx.received.length, 1)
      yield* TestClock.adjust("1 millis")
      yield* until("second attempt answered", () => rows.length === 2)
      yield* realWait(20)
      yield* TestClock.adjust("29 seconds")
      yield* realWait(100)
      assert.strictEqual(rx.received.length, 2)
      yield* TestClock.adjust("1 second")
      yield* Effect.promise(() => rx.waitFor(3))
      const ids = rx.received.map((r) => r.headers["webhook-id"])
      assert.strictEqual(new Set(ids).size, 1)
      assert.deepStrictEqual(rx.received.map((r) => bodyOf(r)["seq"]), [1, 1, 1])
      assert.deepStrictEqual(rx.received.map((r) => bodyOf(r)["price"]), [50_000, 50_010, 50_010])
      // Each attempt a new timestamp, each signature valid.
      for (const r of rx.received) verify(SECRET, r)
      yield* until("third attempt answered", () => rows.length === 3)
      assert.deepStrictEqual(rows.map((r) => r.status), [500, 503, 200])
      assert.deepStrictEqual(rows.map((r) => r.code), ["SYSTEM_BUSY", "SYSTEM_BUSY", "OK"])
      assert.strictEqual(new Set(rows.map((r) => r.requestId)).size, 1)
      // The next price gets the next seq.
      prices.set("BTC", "USD", 51_000)
      yield* Effect.promise(() => rx.waitFor(4))
      assert.strictEqual(bodyOf(rx.received[3]!)["seq"], 2)
      yield* realWait(1_100)
      assert.isAbove(outcomes.length, 0)
    }))

  it.effect("a 429 with Retry-After waits as asked (longer than the 5 s step)", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const rx = yield* Effect.acquireRelease(Effect.promise(() => receiver()), (r) => Effect.promise(r.close))
      rx.answers = [429, 200]
      rx.answerHeaders = { "retry-after": "60" }
      const { prices, rows } = yield* setup([webhookOf({ id: "wh-429", url: rx.url })])
      prices.set("BTC", "USD", 10)
      yield* until("first attempt answered", () => rows.length === 1)
      yield* realWait(20)
      yield* TestClock.adjust("59 seconds")
      yield* realWait(150)
      assert.strictEqual(rx.received.length, 1)
      yield* TestClock.adjust("1 second")
      yield* Effect.promise(() => rx.waitFor(2))
      assert.deepStrictEqual(rx.received.map((r) => bodyOf(r)["seq"]), [1, 1])
    }))

  it.effect("410 Gone disables the webhook at once", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const rx = yield* Effect.acquireRelease(Effect.promise(() => receiver()), (r) => Effect.promise(r.close))
      rx.answers = [410]
      const { prices, statuses, engine } = yield* setup([webhookOf({ id: "wh-3", url: rx.url })])
      prices.set("BTC", "USD", 1_000)
      yield* Effect.promise(() => rx.waitFor(1))
      yield* until("disabled", () => statuses.length > 0)
      assert.deepStrictEqual(statuses, [{ id: "wh-3", status: "disabled", reason: "the receiver answered 410 Gone" }])
      yield* until("stopped", () => engine.owned().length === 0)
      yield* TestClock.adjust("1 hour")
      prices.set("BTC", "USD", 2_000)
      yield* realWait(150)
      assert.strictEqual(rx.received.length, 1)
    }))

  it.effect("a webhook failing every attempt for webhook_disable_after_h is disabled with the reason", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const rx = yield* Effect.acquireRelease(Effect.promise(() => receiver()), (r) => Effect.promise(r.close))
      rx.answers = [502]
      const { prices, statuses, rows } = yield* setup([webhookOf({ id: "wh-4", url: rx.url })], { webhook_disable_after_h: "1" })
      prices.set("BTC", "USD", 1_000)
      // Attempts at 0, 5 s, 35 s, 2 min 35 s, 12 min 35 s, 42 min 35 s, 72 min 35 s: the last is past 1 h.
      const waits = [5_000, 30_000, 120_000, 600_000, 1_800_000, 1_800_000]
      for (const [i, ms] of waits.entries()) {
        yield* until(`attempt ${i + 1} answered`, () => rows.length === i + 1)
        yield* realWait(20)
        assert.deepStrictEqual(statuses, [])
        yield* TestClock.adjust(ms)
      }
      yield* until("disabled", () => statuses.length > 0)
      assert.strictEqual(rx.received.length, 7)
      assert.strictEqual(statuses[0]!.status, "disabled")
      assert.match(statuses[0]!.reason ?? "", /every delivery attempt failed for 1 h \(last: HTTP 502\)/)
      assert.strictEqual(rows.length, 7)
      yield* TestClock.adjust("1 hour")
      yield* realWait(100)
      assert.strictEqual(rx.received.length, 7)
    }))

  it.effect("secret rotation: during the overlap every delivery carries both signatures, each valid", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const rx = yield* Effect.acquireRelease(Effect.promise(() => receiver({ tls: true })), (r) => Effect.promise(r.close))
      const { prices } = yield* setup([webhookOf({ id: "wh-5", url: rx.url, secrets: [NEW_SECRET, SECRET] })])
      prices.set("ETH", "USD", 3_000)
      prices.set("BTC", "USD", 90_000)
      yield* Effect.promise(() => rx.waitFor(1))
      const r = rx.received[0]!
      assert.strictEqual(String(r.headers["webhook-signature"]).split(" ").length, 2)
      assert.deepStrictEqual(verify(NEW_SECRET, r), JSON.parse(r.body))
      assert.deepStrictEqual(verify(SECRET, r), JSON.parse(r.body))
    }), { timeout: 20_000 })

  it.live("per endpoint one delivery at a time with seq rising by one in order; a dead endpoint does not delay another", () =>
    Effect.gen(function*() {
      const live = yield* Effect.acquireRelease(Effect.promise(() => receiver()), (r) => Effect.promise(r.close))
      const dead = yield* Effect.acquireRelease(Effect.promise(() => receiver()), (r) => Effect.promise(r.close))
      dead.hang = true
      const assets = ["BTC", "ETH", "SOL"].map((asset) => ({ asset, quote: "USD" }))
      const { prices } = yield* setup([
        webhookOf({ id: "wh-dead", url: dead.url, assets, deviationBps: 1 }),
        webhookOf({ id: "wh-live", url: live.url, assets, deviationBps: 1 })
      ])
      let p = 100
      const started = Date.now()
      for (let i = 0; i < 60; i++) {
        for (const a of assets) prices.set(a.asset, "USD", (p *= 1.001))
        yield* realWait(2)
      }
      yield* Effect.promise(() => live.waitFor(30))
      yield* realWait(100)
      const seqs = live.received.map((r) => bodyOf(r)["seq"] as number)
      assert.deepStrictEqual(seqs, seqs.map((_, i) => i + 1))
      assert.strictEqual(live.maxInFlight, 1)
      // The dead endpoint got its first delivery and holds it; the live one went on regardless.
      assert.strictEqual(dead.received.length, 1)
      assert.isBelow(Date.now() - started, 5_000)
    }), 20_000)

  it.live("UDP: one datagram per delivery, `v1 <base64 HMAC-SHA256 of {webhook_id}.{json}> <json>`, beside HTTPS", () =>
    Effect.gen(function*() {
      const rx = yield* Effect.acquireRelease(Effect.promise(() => receiver({ tls: true })), (r) => Effect.promise(r.close))
      const udp = yield* Effect.acquireRelease(Effect.promise(() => udpReceiver()), (u) => Effect.sync(u.close))
      const { prices, rows } = yield* setup([
        webhookOf({ id: "wh-udp", udp: `127.0.0.1:${udp.port}` }),
        webhookOf({ id: "wh-both", url: rx.url, udp: `127.0.0.1:${udp.port}`, assets: [{ asset: "ETH", quote: "USDT" }] })
      ])
      prices.set("BTC", "USD", 77_000)
      prices.set("ETH", "USDT", 3_100)
      yield* until("two datagrams", () => udp.datagrams.length >= 2)
      yield* Effect.promise(() => rx.waitFor(1))
      for (const d of udp.datagrams) {
        const [version, signature, ...rest] = d.split(" ")
        const json = rest.join(" ")
        const body = JSON.parse(json) as Record<string, unknown>
        assert.strictEqual(version, "v1")
        const expected = createHmac("sha256", Buffer.from(SECRET.slice(6), "base64")).update(`${String(body["webhook_id"])}.${json}`).digest("base64")
        assert.strictEqual(signature, expected)
        assert.strictEqual(body["seq"], 1)
      }
      assert.deepStrictEqual(udp.datagrams.map((d) => (JSON.parse(d.split(" ").slice(2).join(" ")) as Record<string, unknown>)["asset"]).sort(), ["BTC", "ETH"])
      // The HTTPS delivery of the same seq carries the same body.
      assert.deepInclude(bodyOf(rx.received[0]!), { webhook_id: "wh-both", seq: 1, asset: "ETH", quote: "USDT", price: 3_100 })
      yield* until("rows", () => rows.length >= 3)
      assert.deepStrictEqual(rows.map((r) => r.protocol).sort(), ["http", "udp", "udp"])
    }), 20_000)
})
