/**
 * The `webhooks` rows (real PostgreSQL): one webhook per key, secrets generated `whsec_` + base64
 * and kept only sealed (a dump alone holds no secret; another key cannot open it), configure again
 * keeps the secret, a changed target needs verifying again, rotation keeps the old secret beside
 * the new one until its 24 h end, delivery facts folded into the row.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { randomBytes } from "node:crypto"
import { ROTATION_OVERLAP_MS } from "../src/domain/webhook.ts"
import { migrate } from "../src/layers/migrations/index.ts"
import { makeWebhookStore } from "../src/layers/webhooks/WebhookStoreLive.ts"
import type { WebhookSettings } from "../src/services/Webhooks.ts"
import { freshPgLayer } from "./support/services.ts"

const settings = (s: Partial<WebhookSettings> = {}): WebhookSettings => ({
  url: "https://receiver.example/hook", udp: undefined, assets: [{ asset: "BTC", quote: "USD" }, { asset: "ETH", quote: "USDT" }],
  deviationBps: 50, heartbeatS: 60, rotateSecret: false, ...s
})

const newKey = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ id: string }>`INSERT INTO api_keys (key_hash, key_prefix, tier) VALUES (${randomBytes(16).toString("hex")}, 'tb_test', 'associate') RETURNING id::text AS id`
  return rows[0]!.id
})

describe("WebhookStore (real PostgreSQL)", () => {
  const PgLive = freshPgLayer("webhook_store", 4)

  it.live("creates one webhook per key with a whsec_ secret kept only sealed; configure again keeps it; a new target needs verifying", () =>
    Effect.gen(function*() {
      yield* migrate
      const sql = yield* SqlClient.SqlClient
      const sealKey = randomBytes(32)
      const store = yield* makeWebhookStore(sealKey)
      const keyId = yield* newKey
      const now = Date.now()
      const created = yield* store.configure(keyId, settings(), now)
      assert.match(created.secret ?? "", /^whsec_[A-Za-z0-9+/]{43}=$/)
      assert.strictEqual(Buffer.from(created.secret!.slice(6), "base64").length, 32)
      assert.deepStrictEqual(created.webhook.secrets, [created.secret!])
      assert.strictEqual(created.webhook.status, "pending_verification")
      assert.deepStrictEqual(created.webhook.assets, [{ asset: "BTC", quote: "USD" }, { asset: "ETH", quote: "USDT" }])
      // The dump: no secret in any column.
      const dump = JSON.stringify(yield* sql`SELECT row_to_json(w)::text AS row FROM webhooks w`)
      assert.notInclude(dump, created.secret!)
      assert.notInclude(dump, created.secret!.slice(6))
      // Another sealing key opens nothing.
      const other = yield* makeWebhookStore(randomBytes(32))
      assert.deepStrictEqual((yield* other.byKey(keyId))!.secrets, [])

      yield* store.setStatus(created.webhook.id, "active", undefined)
      const again = yield* store.configure(keyId, settings({ heartbeatS: 30 }), now)
      assert.isUndefined(again.secret)
      assert.strictEqual(again.webhook.id, created.webhook.id)
      assert.deepStrictEqual(again.webhook.secrets, [created.secret!])
      assert.strictEqual(again.webhook.status, "active")
      assert.strictEqual(again.webhook.heartbeatS, 30)
      assert.notStrictEqual(again.webhook.version, created.webhook.version)
      const moved = yield* store.configure(keyId, settings({ url: "https://elsewhere.example/hook" }), now)
      assert.strictEqual(moved.webhook.status, "pending_verification")
      assert.strictEqual((yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM webhooks WHERE api_key_id = ${keyId}::uuid`)[0]!.n, 1)
      // Only active webhooks are delivered.
      assert.isFalse((yield* store.active).some((w) => w.id === created.webhook.id))
    }).pipe(Effect.provide(PgLive)), 60_000)

  it.live("rotation: the new secret first, the old one beside it for 24 h, then the new one alone", () =>
    Effect.gen(function*() {
      yield* migrate
      const sql = yield* SqlClient.SqlClient
      const store = yield* makeWebhookStore(randomBytes(32))
      const keyId = yield* newKey
      const now = Date.now()
      const first = yield* store.configure(keyId, settings(), now)
      const rotated = yield* store.configure(keyId, settings({ rotateSecret: true }), now)
      assert.match(rotated.secret ?? "", /^whsec_/)
      assert.notStrictEqual(rotated.secret, first.secret)
      assert.deepStrictEqual(rotated.webhook.secrets, [rotated.secret!, first.secret!])
      const until = (yield* sql<{ ms: number }>`SELECT (extract(epoch FROM previous_secret_until) * 1000)::float8 AS ms FROM webhooks WHERE api_key_id = ${keyId}::uuid`)[0]!.ms
      assert.approximately(until, now + ROTATION_OVERLAP_MS, 1)
      // The overlap over: the old secret signs no more.
      yield* sql`UPDATE webhooks SET previous_secret_until = now() - interval '1 second' WHERE api_key_id = ${keyId}::uuid`
      assert.deepStrictEqual((yield* store.byKey(keyId))!.secrets, [rotated.secret!])
    }).pipe(Effect.provide(PgLive)), 60_000)

  it.live("delivery facts: last attempt, consecutive failures and since when, the highest seq; a success clears the failures", () =>
    Effect.gen(function*() {
      yield* migrate
      const store = yield* makeWebhookStore(randomBytes(32))
      const keyId = yield* newKey
      const { webhook } = yield* store.configure(keyId, settings(), Date.now())
      const t0 = 1_800_000_000_000
      yield* store.recordOutcome(webhook.id, { at: t0, status: 500, latencyMs: 12.4, ok: false, seq: 3 })
      yield* store.recordOutcome(webhook.id, { at: t0 + 5_000, status: 0, latencyMs: 10_000, ok: false, seq: 3 })
      let w = (yield* store.byId(webhook.id))!
      assert.deepInclude(w, { consecutiveFailures: 2, failingSince: t0, lastStatus: 0, lastLatencyMs: 10_000, lastSeq: 3, lastDeliveryAt: t0 + 5_000 })
      yield* store.recordOutcome(webhook.id, { at: t0 + 35_000, status: 204, latencyMs: 3, ok: true, seq: 3 })
      w = (yield* store.byId(webhook.id))!
      assert.deepInclude(w, { consecutiveFailures: 0, failingSince: undefined, lastStatus: 204, lastSeq: 3 })
      assert.isTrue(yield* store.remove(keyId))
      assert.isUndefined(yield* store.byKey(keyId))
    }).pipe(Effect.provide(PgLive)), 60_000)
})
