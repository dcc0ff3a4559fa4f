import { Clock, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { randomBytes } from "node:crypto"
import { constantTimeEqual, displayPrefix, generateApiKey, hashApiKey, hashIfWellFormed, isEmailAddress, type KeyHashMemo, keyStatusAt } from "../domain/apiKey.ts"
import { type ApiKeyRecord, ApiKeys, ApiKeysError, type AuthResult, type ListedKey, type TierLimits } from "../services/ApiKeys.ts"
import { Cache } from "../services/Cache.ts"
import { ReaderSql } from "../services/Database.ts"
import { Params } from "../services/Params.ts"
import { withModule } from "./Logging.ts"
import { spacedByParam } from "./paramSchedule.ts"

export const KEY_INVALIDATE_CHANNEL = "keys:invalidate"
/** How long a hash that the database does not know is remembered as unknown. */
const NEGATIVE_CACHE_MS = 5_000
const NEGATIVE_CACHE_MAX = 100_000

interface KeyRow {
  readonly id: string
  readonly key_hash: string
  readonly key_prefix: string
  readonly tier: string
  readonly lrs_enabled: boolean
  readonly status: "active" | "revoked"
  readonly email: string | null
  readonly created_at: Date
  readonly updated_at: Date
  readonly expires_at: Date | null
}

interface TierRow {
  readonly tier: string
  readonly requests_per_second: number | null
  readonly burst: number | null
  readonly monthly_queries: string | number | null
  readonly lrs_reports_per_month: number | null
  readonly lrs_requires_addon: boolean
  readonly webhook_assets: number
  readonly partner_ws: boolean
}

const toTier = (r: TierRow): TierLimits => ({
  tier: r.tier,
  ratePerSec: r.requests_per_second,
  burst: r.burst,
  monthlyQueries: r.monthly_queries === null ? null : Number(r.monthly_queries),
  lrsReportsPerMonth: r.lrs_reports_per_month,
  lrsRequiresAddon: r.lrs_requires_addon,
  webhookAssets: r.webhook_assets,
  partnerWs: r.partner_ws
})

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const isUuid = (s: string) => UUID.test(s)

const KEY_COLUMNS = "id::text AS id, key_hash, key_prefix, tier, lrs_enabled, status, email, created_at, updated_at, expires_at"

const listedKey = (r: KeyRow, now: number): ListedKey => ({
  key_id: r.id,
  prefix: r.key_prefix,
  tier: r.tier,
  status: keyStatusAt(r.status, r.expires_at?.getTime(), now),
  lrs_enabled: r.lrs_enabled,
  email: r.email,
  created_at: r.created_at.toISOString(),
  expires_at: r.expires_at === null ? null : r.expires_at.toISOString()
})

/**
 * API keys held in an in-process map by hash (the hot path never waits on the network), reloaded
 * incrementally on a Schedule and per key on `/admin/invalidate-key` through Valkey pub/sub.
 */
export const ApiKeysLive = Layer.effect(ApiKeys, Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const reader = yield* ReaderSql
  const cache = yield* Cache
  const params = yield* Params

  let tiers = new Map<string, TierLimits>()
  const byHash = new Map<string, ApiKeyRecord>()
  const unknownUntil = new Map<string, number>()
  let highWater = new Date(0)

  const toRecord = (r: KeyRow): ApiKeyRecord | undefined => {
    const tier = tiers.get(r.tier)
    return tier === undefined ? undefined : {
      id: r.id,
      hash: r.key_hash,
      prefix: r.key_prefix,
      tier,
      lrsEnabled: r.lrs_enabled,
      status: r.status,
      expiresAt: r.expires_at === null ? undefined : r.expires_at.getTime(),
      email: r.email ?? undefined,
      createdAt: r.created_at.getTime()
    }
  }
  const remember = (rows: ReadonlyArray<KeyRow>) => {
    for (const row of rows) {
      const rec = toRecord(row)
      if (rec === undefined) continue
      byHash.set(rec.hash, rec)
      unknownUntil.delete(rec.hash)
      if (row.updated_at > highWater) highWater = row.updated_at
    }
  }
  const storage = (e: { readonly message: string }) => new ApiKeysError({ reason: "Storage", message: e.message })

  const loadTiers = reader<TierRow>`SELECT * FROM rate_limit_template`.pipe(
    Effect.map((rows) => void (tiers = new Map(rows.map((r) => [r.tier, toTier(r)]))))
  )
  // Rows changed within the last few seconds are read again: updated_at is set by writers whose
  // transactions may commit out of order.
  const loadChanged = Effect.suspend(() =>
    reader.unsafe<KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE updated_at >= $1`, [new Date(highWater.getTime() - 5_000)])
  ).pipe(Effect.map(remember))
  const reload = Effect.andThen(loadTiers, loadChanged).pipe(Effect.mapError(storage), Effect.withSpan("ApiKeys.reload"))
  const reloadOne = (keyId: string) =>
    isUuid(keyId)
      ? sql.unsafe<KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE id = $1::uuid`, [keyId]).pipe(Effect.map(remember), Effect.mapError(storage))
      : Effect.void

  // Keys are found by their SHA-256: the map lookup compares hashes, never the secret itself, so
  // its timing tells an attacker nothing about a key. The lookup is the comparison; there is no
  // second, always-true check after it.
  const decide = (rec: ApiKeyRecord, now: number): AuthResult => {
    switch (keyStatusAt(rec.status, rec.expiresAt, now)) {
      case "revoked": return { _tag: "Refused", code: "KEY_REVOKED", keyId: rec.id }
      case "expired": return { _tag: "Refused", code: "KEY_EXPIRED", keyId: rec.id }
      case "active": return { _tag: "Authorized", key: rec }
    }
  }

  const INVALID: AuthResult = { _tag: "Refused", code: "INVALID_API_KEY", keyId: undefined }

  const authenticate = (plainKey: string | undefined, now: number, memo?: KeyHashMemo): AuthResult => {
    if (plainKey === undefined || plainKey === "") return { _tag: "Refused", code: "MISSING_API_KEY", keyId: undefined }
    let hash: string
    if (memo !== undefined && memo.key !== "" && constantTimeEqual(memo.key, plainKey)) hash = memo.hash
    else {
      const wellFormed = hashIfWellFormed(plainKey)
      if (wellFormed === undefined) return INVALID
      hash = wellFormed
      if (memo !== undefined) {
        memo.key = plainKey
        memo.hash = hash
      }
    }
    return authenticateHash(hash, now)
  }

  const authenticateHash = (hash: string, now: number): AuthResult => {
    const rec = byHash.get(hash)
    if (rec !== undefined) return decide(rec, now)
    const until = unknownUntil.get(hash)
    if (until !== undefined && until > now) return INVALID
    return { _tag: "Unknown", hash }
  }

  const authenticateSlow = (hash: string, now: number) =>
    reader.unsafe<KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys WHERE key_hash = $1`, [hash]).pipe(
      Effect.map((rows): AuthResult => {
        remember(rows)
        const rec = byHash.get(hash)
        if (rec !== undefined) return decide(rec, now)
        if (unknownUntil.size >= NEGATIVE_CACHE_MAX) unknownUntil.clear()
        unknownUntil.set(hash, now + NEGATIVE_CACHE_MS)
        return { _tag: "Refused", code: "INVALID_API_KEY", keyId: undefined }
      }),
      // The database is unreachable: the key cannot be checked now, so it is not accepted, and the
      // answer says "try again" (SYSTEM_BUSY, 503) rather than calling a possibly good key invalid.
      Effect.catch(() => Effect.succeed<AuthResult>({ _tag: "Refused", code: "SYSTEM_BUSY", keyId: undefined })),
      Effect.withSpan("ApiKeys.authenticateSlow")
    )

  const invalidate = (keyId: string) =>
    Effect.andThen(reloadOne(keyId), cache.publish(KEY_INVALIDATE_CHANNEL, keyId).pipe(Effect.ignore))

  yield* reload
  yield* cache.subscribe(KEY_INVALIDATE_CHANNEL, (keyId) => {
    Effect.runFork(reloadOne(keyId).pipe(Effect.ignore))
  }).pipe(Effect.catch((e) => Effect.logWarning("key invalidation channel unavailable", e.message)))
  yield* reload.pipe(
    Effect.catch((e) => Effect.logWarning("API key refresh failed; serving the cached keys", e.message)),
    Effect.repeat(spacedByParam(params, "key_cache_refresh_ms")),
    Effect.forkScoped
  )

  return ApiKeys.of({
    authenticate,
    authenticateHash,
    authenticateSlow,
    create: ({ tier, email, lrs, expiresAt }) =>
      Effect.gen(function*() {
        if (!tiers.has(tier)) yield* loadTiers.pipe(Effect.mapError(storage))
        const limits = tiers.get(tier)
        if (limits === undefined) return yield* new ApiKeysError({ reason: "UnknownTier", message: `unknown tier ${tier}` })
        if (email !== undefined && !isEmailAddress(email)) {
          return yield* new ApiKeysError({ reason: "InvalidEmail", message: `email must be an address, got ${JSON.stringify(email.slice(0, 80))}` })
        }
        if (lrs === true && limits.lrsReportsPerMonth === 0) {
          return yield* new ApiKeysError({ reason: "LrsNotAvailable", message: `tier ${tier} has no LRS (lrs_reports_per_month is 0)` })
        }
        const key = generateApiKey(randomBytes(32))
        const lrsEnabled = lrs ?? (limits.lrsReportsPerMonth !== 0 && !limits.lrsRequiresAddon)
        const rows = yield* sql.unsafe<KeyRow>(
          `INSERT INTO api_keys (key_hash, key_prefix, tier, lrs_enabled, email, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${KEY_COLUMNS}`,
          [hashApiKey(key), displayPrefix(key), tier, lrsEnabled, email ?? null, expiresAt ?? null]
        ).pipe(Effect.mapError(storage))
        remember(rows)
        const id = rows[0]?.id ?? ""
        yield* cache.publish(KEY_INVALIDATE_CHANNEL, id).pipe(Effect.ignore)
        yield* Effect.logInfo("API key created", { key_id: id, tier, prefix: displayPrefix(key) })
        return { key, key_id: id, tier, prefix: displayPrefix(key) }
      }).pipe(withModule("keys"), Effect.withSpan("ApiKeys.create", { attributes: { tier } })),
    list: Effect.gen(function*() {
      const rows = yield* sql.unsafe<KeyRow>(`SELECT ${KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id`).pipe(Effect.mapError(storage))
      const now = yield* Clock.currentTimeMillis
      return rows.map((r) => listedKey(r, now))
    }),
    revoke: (keyId) =>
      Effect.gen(function*() {
        if (!isUuid(keyId)) return yield* new ApiKeysError({ reason: "NotFound", message: `no key ${keyId}` })
        const rows = yield* sql.unsafe<{ id: string }>(
          `UPDATE api_keys SET status = 'revoked', revoked_at = now(), updated_at = now() WHERE id = $1::uuid RETURNING id::text AS id`,
          [keyId]
        ).pipe(Effect.mapError(storage))
        if (rows.length === 0) return yield* new ApiKeysError({ reason: "NotFound", message: `no key ${keyId}` })
        yield* invalidate(keyId)
        yield* Effect.logInfo("API key revoked", { key_id: keyId })
      }).pipe(withModule("keys"), Effect.withSpan("ApiKeys.revoke")),
    invalidate: (keyId) =>
      Effect.gen(function*() {
        if (!isUuid(keyId)) return yield* new ApiKeysError({ reason: "NotFound", message: `no key ${keyId}` })
        yield* invalidate(keyId)
      }).pipe(Effect.withSpan("ApiKeys.invalidate")),
    tiers: () => tiers,
    reload
  })
}).pipe(withModule("keys")))
