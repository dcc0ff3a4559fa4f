/**
 * WebhookStore over the `webhooks` table (migration 0010). Secrets are sealed with the webhook
 * secret key (secretBox.ts) before they reach SQL; the key is WEBHOOK_SECRET_KEY from the Secrets
 * service when set, else DATA_DIR/webhook-secret-key (generated once, mode 0600, like the admin
 * token), which every node of a cluster must then share.
 */
import { Effect, Layer, Option, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { randomBytes } from "node:crypto"
import { join } from "node:path"
import { AppConfig } from "../../config/AppConfig.ts"
import { messageOf } from "../../domain/errorMessage.ts"
import { pgArrayLiteral } from "../../domain/pgArrayLiteral.ts"
import { assetName, newSigningSecret, parseWebhookAsset, ROTATION_OVERLAP_MS, type WebhookAsset, type WebhookStatus } from "../../domain/webhook.ts"
import { Secrets, SecretsError } from "../../services/Secrets.ts"
import { unreachableDependency } from "../../services/StartupError.ts"
import { type Webhook, WebhookStore, WebhookStoreError } from "../../services/Webhooks.ts"
import { withModule } from "../Logging.ts"
import { keepPrivateSecret } from "../privateFile.ts"
import { openSecret, parseSecretKey, sealSecret } from "./secretBox.ts"

interface Row {
  readonly id: string
  readonly api_key_id: string
  readonly url: string | null
  readonly udp: string | null
  readonly assets: string
  readonly deviation_bps: number
  readonly heartbeat_s: number
  readonly status: WebhookStatus
  readonly disabled_reason: string | null
  readonly secret_enc: string | null
  readonly previous_secret_enc: string | null
  readonly previous_until_ms: number | null
  readonly last_seq: number
  readonly last_delivery_ms: number | null
  readonly last_status: number | null
  readonly last_latency_ms: number | null
  readonly consecutive_failures: number
  readonly failing_since_ms: number | null
  readonly version: number
}

const COLUMNS = `id::text AS id, api_key_id::text AS api_key_id, url, udp, array_to_string(assets, ',') AS assets, deviation_bps, heartbeat_s,
  status, disabled_reason, secret_enc, previous_secret_enc,
  (extract(epoch FROM previous_secret_until) * 1000)::float8 AS previous_until_ms, last_seq::float8 AS last_seq,
  (extract(epoch FROM last_delivery_at) * 1000)::float8 AS last_delivery_ms, last_status, last_latency_ms, consecutive_failures,
  (extract(epoch FROM failing_since) * 1000)::float8 AS failing_since_ms, (extract(epoch FROM updated_at) * 1000000)::float8 AS version`

/** The webhook secret key: WEBHOOK_SECRET_KEY from Secrets (env or DB_SECRET_NAME), else the one kept in DATA_DIR. */
export const webhookSecretKey = (dataDir: string) =>
  Effect.gen(function*() {
    const configured = yield* (yield* Secrets).get("WEBHOOK_SECRET_KEY")
    if (Option.isSome(configured)) {
      const key = parseSecretKey(Redacted.value(configured.value))
      if (key === undefined) return yield* new SecretsError({ reason: "Malformed", message: "WEBHOOK_SECRET_KEY must be 64 hex digits or base64 of 32 bytes" })
      return key
    }
    const file = join(dataDir, "webhook-secret-key")
    const kept = yield* Effect.tryPromise({
      try: () => keepPrivateSecret(file, (v) => parseSecretKey(v) !== undefined, () => randomBytes(32).toString("hex")),
      catch: (e) => unreachableDependency("DATA_DIR", `cannot keep the webhook secret key in ${file} (${messageOf(e)})`)
    })
    if (kept.created) yield* Effect.logInfo("WEBHOOK_SECRET_KEY not set: generated one in DATA_DIR (every node must share it)", { file }).pipe(withModule("webhook"))
    return parseSecretKey(kept.value)!
  })

export const makeWebhookStore = (key: Buffer) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const storage = (e: { readonly message: string }) => new WebhookStoreError({ reason: "Storage", message: e.message })
    const query = <A extends object>(text: string, params: ReadonlyArray<unknown>) =>
      sql.unsafe<A>(text, params as Array<unknown>).pipe(Effect.mapError(storage))

    const toWebhook = (r: Row, now: number): Webhook => {
      const current = r.secret_enc === null ? undefined : openSecret(key, r.secret_enc, r.id)
      const previous = r.previous_secret_enc !== null && r.previous_until_ms !== null && r.previous_until_ms > now
        ? openSecret(key, r.previous_secret_enc, r.id)
        : undefined
      const assets = r.assets === "" ? [] : r.assets.split(",").map((a) => parseWebhookAsset(a)).filter((a): a is WebhookAsset => typeof a !== "string")
      return {
        id: r.id, apiKeyId: r.api_key_id, url: r.url ?? undefined, udp: r.udp ?? undefined, assets,
        deviationBps: Number(r.deviation_bps), heartbeatS: Number(r.heartbeat_s), status: r.status, disabledReason: r.disabled_reason ?? undefined,
        secrets: [current, previous].filter((s): s is string => s !== undefined),
        lastSeq: Number(r.last_seq), lastDeliveryAt: r.last_delivery_ms ?? undefined, lastStatus: r.last_status ?? undefined,
        lastLatencyMs: r.last_latency_ms ?? undefined, consecutiveFailures: Number(r.consecutive_failures), failingSince: r.failing_since_ms ?? undefined,
        version: Number(r.version)
      }
    }
    const one = (text: string, params: ReadonlyArray<unknown>) =>
      query<Row>(text, params).pipe(Effect.map((rows) => (rows[0] === undefined ? undefined : toWebhook(rows[0], Date.now()))))
    const names = (assets: ReadonlyArray<WebhookAsset>) => pgArrayLiteral(assets.map(assetName))

    return WebhookStore.of({
      byKey: (apiKeyId) => one(`SELECT ${COLUMNS} FROM webhooks WHERE api_key_id = $1::uuid`, [apiKeyId]),
      byId: (id) => one(`SELECT ${COLUMNS} FROM webhooks WHERE id = $1::uuid`, [id]),
      configure: (apiKeyId, s, now) =>
        sql.withTransaction(Effect.gen(function*() {
          const existing = (yield* query<Row>(`SELECT ${COLUMNS} FROM webhooks WHERE api_key_id = $1::uuid FOR UPDATE`, [apiKeyId]))[0]
          if (existing === undefined) {
            const id = (yield* query<{ id: string }>(`SELECT gen_random_uuid()::text AS id`, []))[0]!.id
            const secret = newSigningSecret()
            const rows = yield* query<Row>(
              `INSERT INTO webhooks (id, api_key_id, url, udp, assets, deviation_bps, heartbeat_s, status, secret_enc)
               VALUES ($1::uuid, $2::uuid, $3, $4, $5::text[], $6, $7, 'pending_verification', $8) RETURNING ${COLUMNS}`,
              [id, apiKeyId, s.url ?? null, s.udp ?? null, names(s.assets), s.deviationBps, s.heartbeatS, sealSecret(key, secret, id)]
            )
            return { webhook: toWebhook(rows[0]!, now), secret }
          }
          const targetChanged = (existing.url ?? undefined) !== s.url || (existing.udp ?? undefined) !== s.udp
          const status: WebhookStatus = targetChanged || existing.status === "disabled" ? "pending_verification" : existing.status
          const secret = s.rotateSecret ? newSigningSecret() : undefined
          const rows = yield* query<Row>(
            `UPDATE webhooks SET url = $2, udp = $3, assets = $4::text[], deviation_bps = $5, heartbeat_s = $6, status = $7,
               disabled_reason = CASE WHEN $7 = 'disabled' THEN disabled_reason END,
               consecutive_failures = CASE WHEN $7 = 'pending_verification' THEN 0 ELSE consecutive_failures END,
               failing_since = CASE WHEN $7 = 'pending_verification' THEN NULL ELSE failing_since END,
               previous_secret_enc = CASE WHEN $8::text IS NULL THEN previous_secret_enc ELSE secret_enc END,
               previous_secret_until = CASE WHEN $8::text IS NULL THEN previous_secret_until ELSE to_timestamp($9::float8 / 1000) END,
               secret_enc = coalesce($8::text, secret_enc), updated_at = clock_timestamp()
             WHERE id = $1::uuid RETURNING ${COLUMNS}`,
            [existing.id, s.url ?? null, s.udp ?? null, names(s.assets), s.deviationBps, s.heartbeatS, status,
              secret === undefined ? null : sealSecret(key, secret, existing.id), now + ROTATION_OVERLAP_MS]
          )
          return { webhook: toWebhook(rows[0]!, now), secret }
        })).pipe(Effect.mapError((e) => (e instanceof WebhookStoreError ? e : storage(e)))),
      setAssets: (apiKeyId, assets) =>
        one(`UPDATE webhooks SET assets = $2::text[], updated_at = clock_timestamp() WHERE api_key_id = $1::uuid RETURNING ${COLUMNS}`, [apiKeyId, names(assets)]),
      setStatus: (id, status, reason) =>
        query(`UPDATE webhooks SET status = $2, disabled_reason = $3, updated_at = clock_timestamp() WHERE id = $1::uuid`, [id, status, reason ?? null]).pipe(Effect.asVoid),
      remove: (apiKeyId) =>
        query<{ id: string }>(`DELETE FROM webhooks WHERE api_key_id = $1::uuid RETURNING id::text AS id`, [apiKeyId]).pipe(Effect.map((rows) => rows.length > 0)),
      active: query<Row>(`SELECT ${COLUMNS} FROM webhooks WHERE status = 'active'`, []).pipe(
        Effect.map((rows) => {
          const now = Date.now()
          return rows.map((r) => toWebhook(r, now))
        })
      ),
      recordOutcome: (id, o) =>
        query(
          `UPDATE webhooks SET last_delivery_at = to_timestamp($2::float8 / 1000), last_status = $3, last_latency_ms = $4,
             consecutive_failures = CASE WHEN $5 THEN 0 ELSE consecutive_failures + 1 END,
             failing_since = CASE WHEN $5 THEN NULL ELSE coalesce(failing_since, to_timestamp($2::float8 / 1000)) END,
             last_seq = greatest(last_seq, $6)
           WHERE id = $1::uuid`,
          [id, o.at, o.status, Math.round(o.latencyMs), o.ok, o.seq]
        ).pipe(Effect.asVoid),
      counts: (apiKeyId, since) =>
        query<{ deliveries: number; failures: number }>(
          `SELECT count(*)::float8 AS deliveries, count(*) FILTER (WHERE status_code < 200 OR status_code >= 300)::float8 AS failures
           FROM usage_logs WHERE api_key_id = $1::uuid AND service = 'WEBHOOK' AND endpoint NOT LIKE '/%' AND created_at >= to_timestamp($2::float8 / 1000)`,
          [apiKeyId, since]
        ).pipe(Effect.map((rows) => ({ deliveries: Number(rows[0]?.deliveries ?? 0), failures: Number(rows[0]?.failures ?? 0) })))
    })
  })

/** WebhookStore over the configured database, with the webhook secret key. */
export const WebhookStoreLive = Layer.effect(WebhookStore, Effect.gen(function*() {
  const config = yield* AppConfig
  const key = yield* webhookSecretKey(config.dataDir)
  return yield* makeWebhookStore(key)
}))
