import { Config, Context, Effect, Layer, Option, Redacted, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { AppConfig } from "../../config/AppConfig.ts"
import { FULFILLABLE_PAYMENT_STATUSES, FULFILLING_EVENT_TYPES, type FulfilmentResult, ReceiptError, type ReceiptType, receiptTypeOf } from "../../domain/receipt.ts"
import { withModule } from "../../layers/Logging.ts"
import { openSecret, sealSecret } from "../../layers/webhooks/secretBox.ts"
import { webhookSecretKey } from "../../layers/webhooks/WebhookStoreLive.ts"
import { ApiKeys } from "../../services/ApiKeys.ts"
import { Mailer } from "../../services/Mailer.ts"
import { type CheckoutSession, type PaymentEvent, Payments } from "../../services/Payments.ts"
import { Secrets } from "../../services/Secrets.ts"
import { type EmailTemplate, renderEmail, type TemplateData } from "./templates.ts"

/** What the webhook answers to an accepted event (every 2xx case of the spec). */
export type WebhookOutcome =
  | { readonly _tag: "Fulfilled"; readonly result: FulfilmentResult }
  | { readonly _tag: "DuplicateEvent" }
  | { readonly _tag: "Ignored"; readonly eventType: string }
  | { readonly _tag: "AwaitingPayment" }

/** The payload sealed into `email_outbox`: the template and its data (a subscription's holds the key). */
interface OutboxPayload {
  readonly template: EmailTemplate
  readonly lang: string
  readonly data: TemplateData
}

interface OutboxRow { readonly id: string; readonly dedupe_key: string; readonly to_address: string; readonly payload_sealed: string | null }

const REQUEST_TIMEOUT_MS = 5_000
/** How often unsent outbox e-mails are retried, and how many tries one gets before it waits for an operator. */
const OUTBOX_SWEEP_INTERVAL = "1 minute"
const OUTBOX_MAX_ATTEMPTS = 10

/**
 * The receipt processor's one fulfilment (spec "Receipt processor"), reached from POST /receipt,
 * POST /stripe/webhook and the Lambda. Each flow is one transaction, serialised per session by a
 * transaction-scoped advisory lock and made idempotent by `transactions.payment_session_id`
 * (unique) and `stripe_events.event_id`; the e-mail is an outbox row of that transaction, sent
 * after the commit and marked sent (its sealed payload blanked) so it goes out once.
 */
export class ReceiptProcessor extends Context.Service<ReceiptProcessor, {
  readonly fulfil: (sessionId: string, requestedType?: ReceiptType) => Effect.Effect<FulfilmentResult, ReceiptError>
  readonly handleEvent: (event: PaymentEvent) => Effect.Effect<WebhookOutcome, ReceiptError>
  /** Sends every outbox e-mail not yet sent (after a crash between commit and send). */
  readonly sendPending: Effect.Effect<number, ReceiptError>
}>()("tb/ReceiptProcessor") {}

export const ReceiptProcessorLive = Layer.effect(ReceiptProcessor, Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const payments = yield* Payments
  const apiKeys = yield* ApiKeys
  const mailer = yield* Mailer
  const secrets = yield* Secrets
  const config = yield* AppConfig
  const sealingKey = yield* webhookSecretKey(config.dataDir)
  const lpoAdminUrl = Option.getOrUndefined(yield* Config.String("LPO_ADMIN_URL").pipe(Config.option))?.trim().replace(/\/+$/, "")

  const busy = (e: { readonly message: string }) => new ReceiptError({ code: "SYSTEM_BUSY", message: e.message })
  const query = <A extends object>(text: string, params: ReadonlyArray<unknown>) =>
    sql.unsafe<A>(text, params as Array<unknown>).pipe(Effect.mapError(busy))

  const readSession = (sessionId: string) =>
    payments.retrieveCheckoutSession(sessionId).pipe(Effect.mapError((e) =>
      e.reason === "NotConfigured"
        ? new ReceiptError({ code: "MAINTENANCE", message: e.message })
        : e.reason === "NotFound"
        ? new ReceiptError({ code: "BAD_REQUEST", message: "Failed to read payment session" })
        : new ReceiptError({ code: "SYSTEM_BUSY", message: `Failed to read payment session: ${e.message}` })
    ))

  const tierOf = (session: CheckoutSession): string | undefined =>
    session.lineItems.map((item) => item.priceMetadata["tier"]).find((t) => t !== undefined && t !== "") ?? session.metadata["tier"]

  const langOf = (session: CheckoutSession): string => session.metadata["lang"] ?? "en"

  const addOutbox = (dedupeKey: string, to: string, payload: OutboxPayload) =>
    query(
      `INSERT INTO email_outbox (dedupe_key, to_address, template, lang, payload_sealed) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedupe_key) DO NOTHING`,
      [dedupeKey, to, payload.template, payload.lang, sealSecret(sealingKey, JSON.stringify(payload), `outbox:${dedupeKey}`)]
    )

  const insertTransaction = (session: CheckoutSession, type: ReceiptType, tier: string, email: string | null, userId: string | null, keyId: string | null) =>
    query(
      `INSERT INTO transactions (payment_session_id, user_id, api_key_id, tier, amount_cents, currency, status, kind, email)
       VALUES ($1, $2::bigint, $3::uuid, $4, $5, $6, $7, $8, $9)`,
      [session.id, userId, keyId, tier, session.amountTotal ?? 0, session.currency ?? "usd", session.paymentStatus, type, email]
    )

  /** One flow in one transaction; the key ids to invalidate afterwards, or null for a repeat. */
  const fulfilInTransaction = (session: CheckoutSession, type: ReceiptType, eventId: string | undefined) =>
    sql.withTransaction(Effect.gen(function*() {
      // Concurrent calls for one session (webhook and thank-you page) wait here for each other.
      yield* query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`receipt:${session.id}`])
      if (eventId !== undefined) {
        yield* query(`INSERT INTO stripe_events (event_id, event_type, session_id) VALUES ($1, 'checkout.session', $2) ON CONFLICT (event_id) DO NOTHING`, [eventId, session.id])
      }
      const existing = yield* query<{ kind: string | null; tier: string }>(`SELECT kind, tier FROM transactions WHERE payment_session_id = $1`, [session.id])
      const done = existing[0]
      if (done !== undefined) {
        return { repeat: true, keyIds: [] as ReadonlyArray<string>, tier: done.kind === "donation" ? null : done.tier }
      }
      const email = session.customerEmail
      const lang = langOf(session)
      const amount = { amount: ((session.amountTotal ?? 0) / 100).toFixed(2), currency: (session.currency ?? "usd").toUpperCase() }
      if (type === "donation") {
        yield* insertTransaction(session, type, "donation", email, null, null)
        if (email !== null) yield* addOutbox(`${session.id}:donation`, email, { template: "donation", lang, data: { ...amount, session_id: session.id } })
        return { repeat: false, keyIds: [], tier: null }
      }
      if (email === null) return yield* new ReceiptError({ code: "BAD_REQUEST", message: "The payment session has no customer e-mail" })
      if (type === "lrs-addon") {
        const keys = yield* query<{ id: string; tier: string; key_prefix: string }>(
          `UPDATE api_keys SET lrs_enabled = true, updated_at = now()
           WHERE status = 'active' AND (expires_at IS NULL OR expires_at > now())
             AND (lower(email) = lower($1) OR user_id IN (SELECT id FROM users WHERE lower(email) = lower($1)))
           RETURNING id::text AS id, tier, key_prefix`,
          [email]
        )
        if (keys.length === 0) return yield* new ReceiptError({ code: "NO_SUBSCRIPTION", message: `no active API key for ${email}` })
        const tier = keys[0]?.tier ?? "listener"
        yield* insertTransaction(session, type, tier, email, null, keys[0]?.id ?? null)
        yield* addOutbox(`${session.id}:lrs-addon`, email, { template: "lrs-addon", lang, data: { ...amount, session_id: session.id, tier, key_prefixes: keys.map((k) => k.key_prefix).join(", ") } })
        return { repeat: false, keyIds: keys.map((k) => k.id), tier }
      }
      const tier = tierOf(session)
      if (tier === undefined) return yield* new ReceiptError({ code: "BAD_REQUEST", message: "The payment session's price names no tier (price metadata `tier`)" })
      const users = yield* query<{ id: string }>(
        `INSERT INTO users (email) VALUES ($1) ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id::text AS id`,
        [email]
      )
      const userId = users[0]?.id ?? null
      const created = yield* apiKeys.create({ tier, email }).pipe(Effect.mapError((e) =>
        e.reason === "Storage" ? busy(e) : new ReceiptError({ code: "BAD_REQUEST", message: e.message })
      ))
      yield* query(`UPDATE api_keys SET user_id = $1::bigint WHERE id = $2::uuid`, [userId, created.key_id])
      yield* insertTransaction(session, type, tier, email, userId, created.key_id)
      yield* addOutbox(`${session.id}:subscription`, email, {
        template: "subscription",
        lang,
        data: { ...amount, session_id: session.id, tier, key: created.key, key_prefix: created.prefix }
      })
      return { repeat: false, keyIds: [created.key_id], tier }
    })).pipe(Effect.mapError((e) => e._tag === "ReceiptError" ? e : busy(e)))

  /** Tells the LPO to reload a key: LPO_ADMIN_URL's /admin/invalidate-key, else this process (and Valkey's subscribers). */
  const invalidateKey = (keyId: string) =>
    Effect.gen(function*() {
      if (lpoAdminUrl === undefined || lpoAdminUrl === "") {
        return yield* apiKeys.invalidate(keyId).pipe(Effect.catch((e) => Effect.logWarning("key invalidation failed", { key_id: keyId, error: e.message })))
      }
      const token = yield* secrets.get("ADMIN_TOKEN").pipe(Effect.orElseSucceed(() => Option.none<Redacted.Redacted<string>>()))
      const status = yield* Effect.promise(() =>
        fetch(`${lpoAdminUrl}/admin/invalidate-key`, {
          method: "POST",
          headers: { "content-type": "application/json", ...(Option.isSome(token) ? { "x-admin-token": Redacted.value(token.value) } : {}) },
          body: JSON.stringify({ key_id: keyId }),
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS)
        }).then((r) => r.status, () => 0)
      )
      if (status !== 200) yield* Effect.logWarning("LPO_ADMIN_URL did not invalidate the key; it works from the next key reload", { key_id: keyId, status })
    })

  /** Sends one outbox row at most once: claimed by `FOR UPDATE SKIP LOCKED`, marked sent and blanked in the same transaction. */
  const sendOne = (dedupeKey: string) =>
    sql.withTransaction(Effect.gen(function*() {
      const rows = yield* query<OutboxRow>(
        `SELECT id::text AS id, dedupe_key, to_address, payload_sealed FROM email_outbox
         WHERE dedupe_key = $1 AND sent_at IS NULL FOR UPDATE SKIP LOCKED`,
        [dedupeKey]
      )
      const row = rows[0]
      if (row === undefined || row.payload_sealed === null) return false
      const opened = openSecret(sealingKey, row.payload_sealed, `outbox:${row.dedupe_key}`)
      if (opened === undefined) {
        yield* query(`UPDATE email_outbox SET attempts = attempts + 1, last_error = 'cannot open the sealed payload (WEBHOOK_SECRET_KEY changed?)' WHERE id = $1::bigint`, [row.id])
        return false
      }
      const payload = JSON.parse(opened) as OutboxPayload
      const sent = yield* mailer.send(renderEmail(payload.template, payload.lang, { ...payload.data, email: row.to_address }, row.to_address)).pipe(
        Effect.map(() => true),
        Effect.catch((e) => query(`UPDATE email_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1::bigint`, [row.id, e.message.slice(0, 500)]).pipe(Effect.as(false)))
      )
      if (sent) yield* query(`UPDATE email_outbox SET sent_at = now(), payload_sealed = NULL, attempts = attempts + 1 WHERE id = $1::bigint`, [row.id])
      return sent
    })).pipe(Effect.mapError((e) => e._tag === "ReceiptError" ? e : busy(e)))

  const sendForSession = (sessionId: string) =>
    query<{ dedupe_key: string }>(`SELECT dedupe_key FROM email_outbox WHERE dedupe_key LIKE $1 AND sent_at IS NULL`, [`${sessionId}:%`]).pipe(
      Effect.flatMap((rows) => Effect.forEach(rows, (r) => sendOne(r.dedupe_key), { discard: true }))
    )

  const fulfilSession = (sessionId: string, requestedType: ReceiptType | undefined, eventId: string | undefined) =>
    Effect.gen(function*() {
      const session = yield* readSession(sessionId)
      if (!FULFILLABLE_PAYMENT_STATUSES.includes(session.paymentStatus)) {
        return yield* new ReceiptError({ code: "PAYMENT_NOT_COMPLETE", message: `payment_status is ${session.paymentStatus}` })
      }
      const type = receiptTypeOf(requestedType, session.metadata["type"], session.mode)
      const outcome = yield* fulfilInTransaction(session, type, eventId)
      if (!outcome.repeat) {
        yield* Effect.forEach(outcome.keyIds, invalidateKey, { discard: true })
        yield* Effect.logInfo("payment fulfilled", { session_id: session.id, type, tier: outcome.tier })
      }
      // A repeat also sends what an earlier call committed but did not send (it crashed, or is sending now: the row lock skips it).
      yield* sendForSession(session.id)
      return { session_id: session.id, type, tier: outcome.tier, duplicate: outcome.repeat }
    }).pipe(withModule("receipt"), Effect.withSpan("Receipt.fulfil"))

  const sendPending = query<{ dedupe_key: string }>(
    `SELECT dedupe_key FROM email_outbox WHERE sent_at IS NULL AND attempts < $1 ORDER BY created_at LIMIT 100`,
    [OUTBOX_MAX_ATTEMPTS]
  ).pipe(
    Effect.flatMap((rows) => Effect.forEach(rows, (r) => sendOne(r.dedupe_key))),
    Effect.map((sent) => sent.filter(Boolean).length)
  )
  // What a crash (or a mail service that failed) left unsent goes out on the next sweep.
  yield* sendPending.pipe(
    Effect.catch((e) => Effect.logWarning("outbox sweep failed", { error: e.message })),
    Effect.repeat(Schedule.spaced(OUTBOX_SWEEP_INTERVAL)),
    withModule("receipt"),
    Effect.forkScoped
  )

  return ReceiptProcessor.of({
    fulfil: (sessionId, requestedType) => fulfilSession(sessionId, requestedType, undefined),
    handleEvent: (event) =>
      Effect.gen(function*() {
        if (!FULFILLING_EVENT_TYPES.includes(event.type) || event.sessionId === null) return { _tag: "Ignored", eventType: event.type } as const
        const seen = yield* query<{ n: number }>(`SELECT 1 AS n FROM stripe_events WHERE event_id = $1`, [event.id])
        if (seen.length > 0) return { _tag: "DuplicateEvent" } as const
        return yield* fulfilSession(event.sessionId, undefined, event.id).pipe(
          Effect.map((result): WebhookOutcome => ({ _tag: "Fulfilled", result })),
          // An unpaid session awaits its async payment: accepted, fulfilled by async_payment_succeeded.
          Effect.catchIf((e) => e.code === "PAYMENT_NOT_COMPLETE", () => Effect.succeed<WebhookOutcome>({ _tag: "AwaitingPayment" }))
        )
      }),
    sendPending
  })
}))
