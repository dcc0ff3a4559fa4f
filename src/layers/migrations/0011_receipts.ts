import { Effect } from "effect"
import { SqlClient } from "effect/sql"

/**
 * Receipt processor (spec "Receipt processor"). `transactions` (0001) is already unique on the
 * payment session id: one fulfilment per Checkout Session. Added here:
 * - `stripe_events`: every Stripe event id fulfilled, so a redelivered event is answered as a
 *   duplicate (delivery is at-least-once);
 * - `email_outbox`: the receipt e-mail, written in the fulfilment's transaction and sent after the
 *   commit, so a crash in between neither loses nor repeats it. `payload_sealed` (the template data,
 *   which holds a new key) is AES-256-GCM sealed (secretBox.ts) and blanked once sent;
 *   `dedupe_key` (the session id and template) makes a second row for the same e-mail impossible.
 */
export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE transactions ADD COLUMN IF NOT EXISTS kind text, ADD COLUMN IF NOT EXISTS email text`
  yield* sql`CREATE TABLE IF NOT EXISTS stripe_events (
    event_id text PRIMARY KEY,
    event_type text NOT NULL,
    session_id text,
    received_at timestamptz NOT NULL DEFAULT now()
  )`
  yield* sql`CREATE TABLE IF NOT EXISTS email_outbox (
    id bigserial PRIMARY KEY,
    dedupe_key text NOT NULL UNIQUE,
    to_address text NOT NULL,
    template text NOT NULL,
    lang text NOT NULL DEFAULT 'en',
    payload_sealed text,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
  )`
  yield* sql`CREATE INDEX IF NOT EXISTS email_outbox_unsent ON email_outbox (created_at) WHERE sent_at IS NULL`
})
