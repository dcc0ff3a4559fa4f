import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import seed from "./0002_seed.ts"

/**
 * Webhook push (spec "Webhook push"): 0001's `webhooks` table grows what delivery needs. One webhook
 * per key; `url` (https) and/or `udp` (host:port); signing secrets kept only encrypted
 * (`secret_enc`, AES-256-GCM under a key from the Secrets service, so a dump alone cannot sign);
 * the previous secret beside it until `previous_secret_until` (rotation overlap); status and the
 * last delivery's facts for GET /webhook/status. `secret_hash` (0001) is no longer written.
 * The seed runs again for the parameter `webhook_disable_after_h`.
 */
export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE webhooks ALTER COLUMN url DROP NOT NULL`
  yield* sql`ALTER TABLE webhooks ALTER COLUMN secret_hash DROP NOT NULL`
  yield* sql`ALTER TABLE webhooks
    ADD COLUMN IF NOT EXISTS udp text,
    ADD COLUMN IF NOT EXISTS deviation_bps integer NOT NULL DEFAULT 50,
    ADD COLUMN IF NOT EXISTS heartbeat_s integer NOT NULL DEFAULT 60,
    ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'pending_verification',
    ADD COLUMN IF NOT EXISTS disabled_reason text,
    ADD COLUMN IF NOT EXISTS secret_enc text,
    ADD COLUMN IF NOT EXISTS previous_secret_enc text,
    ADD COLUMN IF NOT EXISTS previous_secret_until timestamptz,
    ADD COLUMN IF NOT EXISTS last_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_delivery_at timestamptz,
    ADD COLUMN IF NOT EXISTS last_status integer,
    ADD COLUMN IF NOT EXISTS last_latency_ms integer,
    ADD COLUMN IF NOT EXISTS consecutive_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS failing_since timestamptz,
    ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now()`
  yield* sql`DO $$ BEGIN
    ALTER TABLE webhooks ADD CONSTRAINT webhooks_status_check CHECK (status IN ('pending_verification', 'active', 'disabled'));
  EXCEPTION WHEN duplicate_object THEN NULL; END $$`
  yield* sql`CREATE UNIQUE INDEX IF NOT EXISTS webhooks_api_key_id ON webhooks (api_key_id)`
  yield* seed
})
