import { Context, Data, type Effect } from "effect"
import type { WebhookAsset, WebhookStatus } from "../domain/webhook.ts"

export class WebhookStoreError extends Data.TaggedError("WebhookStoreError")<{
  readonly reason: "Storage" | "Crypto"
  readonly message: string
}> {}

/** One webhook as delivery and the management routes see it (secrets decrypted, newest first). */
export interface Webhook {
  readonly id: string
  readonly apiKeyId: string
  readonly url: string | undefined
  readonly udp: string | undefined
  readonly assets: ReadonlyArray<WebhookAsset>
  readonly deviationBps: number
  readonly heartbeatS: number
  readonly status: WebhookStatus
  readonly disabledReason: string | undefined
  /** The signing secrets in force: the current one, then the previous one while its overlap lasts. */
  readonly secrets: ReadonlyArray<string>
  readonly lastSeq: number
  readonly lastDeliveryAt: number | undefined
  readonly lastStatus: number | undefined
  readonly lastLatencyMs: number | undefined
  readonly consecutiveFailures: number
  readonly failingSince: number | undefined
  /** Changes whenever the row does (config, secrets, status): workers reload on a new one. */
  readonly version: number
}

export interface WebhookSettings {
  readonly url: string | undefined
  readonly udp: string | undefined
  readonly assets: ReadonlyArray<WebhookAsset>
  readonly deviationBps: number
  readonly heartbeatS: number
  readonly rotateSecret: boolean
}

/** The facts of delivery attempts since the last write, folded into the row. */
export interface AttemptOutcome {
  readonly at: number
  readonly status: number
  readonly latencyMs: number
  readonly ok: boolean
  readonly seq: number
}

/**
 * The `webhooks` rows: one webhook per API key. Secrets are generated here (CSPRNG) and stored
 * encrypted; `configure` answers the plaintext secret only when it made one (created or rotated).
 */
export class WebhookStore extends Context.Service<WebhookStore, {
  readonly byKey: (apiKeyId: string) => Effect.Effect<Webhook | undefined, WebhookStoreError>
  readonly byId: (id: string) => Effect.Effect<Webhook | undefined, WebhookStoreError>
  /** Create or update the key's webhook; a changed target sets it back to pending_verification. */
  readonly configure: (apiKeyId: string, settings: WebhookSettings, now: number) => Effect.Effect<{ readonly webhook: Webhook; readonly secret: string | undefined }, WebhookStoreError>
  readonly setAssets: (apiKeyId: string, assets: ReadonlyArray<WebhookAsset>) => Effect.Effect<Webhook | undefined, WebhookStoreError>
  readonly setStatus: (id: string, status: WebhookStatus, reason: string | undefined) => Effect.Effect<void, WebhookStoreError>
  readonly remove: (apiKeyId: string) => Effect.Effect<boolean, WebhookStoreError>
  /** Every active webhook (what delivery serves). */
  readonly active: Effect.Effect<ReadonlyArray<Webhook>, WebhookStoreError>
  /** Fold attempts into the row: last delivery, consecutive failures, since when failing, the highest seq. */
  readonly recordOutcome: (id: string, outcome: AttemptOutcome) => Effect.Effect<void, WebhookStoreError>
  /** Delivery attempts and failed ones in the usage rows of this key since `since` (ms). */
  readonly counts: (apiKeyId: string, since: number) => Effect.Effect<{ readonly deliveries: number; readonly failures: number }, WebhookStoreError>
}>()("tb/WebhookStore") {}
