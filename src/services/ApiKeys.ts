import { Context, Data, type Effect } from "effect"
import type { KeyHashMemo, KeyStatus } from "../domain/apiKey.ts"
import type { ErrorCode } from "../domain/errorCodes.ts"

export interface TierLimits {
  readonly tier: string
  /** null = not rate limited. */
  readonly ratePerSec: number | null
  readonly burst: number | null
  /** null = unlimited. */
  readonly monthlyQueries: number | null
  /** null = unlimited; 0 = LRS not available on this tier. */
  readonly lrsReportsPerMonth: number | null
  readonly lrsRequiresAddon: boolean
  readonly webhookAssets: number
  readonly partnerWs: boolean
}

export interface ApiKeyRecord {
  readonly id: string
  readonly hash: string
  readonly prefix: string
  readonly tier: TierLimits
  readonly lrsEnabled: boolean
  readonly status: "active" | "revoked"
  readonly expiresAt: number | undefined
  readonly email: string | undefined
  readonly createdAt: number
}

export type AuthResult =
  | { readonly _tag: "Authorized"; readonly key: ApiKeyRecord }
  /** SYSTEM_BUSY: the key could not be checked now (database unreachable, too many lookups at once). */
  | { readonly _tag: "Refused"; readonly code: Extract<ErrorCode, "MISSING_API_KEY" | "INVALID_API_KEY" | "KEY_REVOKED" | "KEY_EXPIRED" | "SYSTEM_BUSY">; readonly keyId: string | undefined }
  /** Not in this node's cache: ask `authenticateSlow` (a key created moments ago on another node). */
  | { readonly _tag: "Unknown"; readonly hash: string }

/** What is wrong with a key request: the caller's to fix (HTTP 400 BAD_REQUEST, CLI exit 2). */
export const KEY_REQUEST_REASONS = ["UnknownTier", "InvalidEmail", "LrsNotAvailable"] as const
export type KeyRequestReason = (typeof KEY_REQUEST_REASONS)[number]

export class ApiKeysError extends Data.TaggedError("ApiKeysError")<{
  readonly reason: KeyRequestReason | "NotFound" | "Storage"
  readonly message: string
}> {}

/** The request itself is wrong (unknown tier, bad e-mail, LRS on a tier without it), not the service. */
export const isKeyRequestError = (e: ApiKeysError): e is ApiKeysError & { readonly reason: KeyRequestReason } =>
  (KEY_REQUEST_REASONS as ReadonlyArray<string>).includes(e.reason)

/**
 * One key as `tb keys list --json` and `GET /admin/keys` show it (the API's KeySummary): never the
 * key nor its hash. Times are RFC 3339 (UTC); `status` is "expired" for an active key past
 * `expires_at` (a revoked key stays "revoked").
 */
export interface ListedKey {
  readonly key_id: string
  readonly prefix: string
  readonly tier: string
  readonly status: KeyStatus
  readonly lrs_enabled: boolean
  readonly email: string | null
  readonly created_at: string
  readonly expires_at: string | null
}

export interface CreatedKey { readonly key: string; readonly key_id: string; readonly tier: string; readonly prefix: string }

export class ApiKeys extends Context.Service<ApiKeys, {
  /** Hot path: in-process lookup, no I/O. `memo`: the connection's last key and hash, read and updated. */
  readonly authenticate: (plainKey: string | undefined, now: number, memo?: KeyHashMemo) => AuthResult
  /** Hot path, for a caller that already holds the key's hash (`hashApiKey`). In-process, no I/O. */
  readonly authenticateHash: (hash: string, now: number) => AuthResult
  /** Cache miss: one database lookup (misses are remembered briefly so random keys cannot flood the database). */
  readonly authenticateSlow: (hash: string, now: number) => Effect.Effect<AuthResult>
  /**
   * Checks the request (tier known, e-mail an address, LRS only on a tier that has it) and fails
   * with a KeyRequestReason when it is wrong: the one place both the CLI and HTTP check it.
   */
  readonly create: (input: { readonly tier: string; readonly email?: string | undefined; readonly lrs?: boolean | undefined; readonly expiresAt?: Date | undefined }) => Effect.Effect<CreatedKey, ApiKeysError>
  /** Every key, newest first. */
  readonly list: Effect.Effect<ReadonlyArray<ListedKey>, ApiKeysError>
  readonly revoke: (keyId: string) => Effect.Effect<void, ApiKeysError>
  /** Reload one key from the database on every node (Valkey pub/sub). */
  readonly invalidate: (keyId: string) => Effect.Effect<void, ApiKeysError>
  readonly tiers: () => ReadonlyMap<string, TierLimits>
  readonly reload: Effect.Effect<void, ApiKeysError>
}>()("tb/ApiKeys") {}
