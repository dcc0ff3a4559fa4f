import { Effect, Layer, Option, Redacted } from "effect"
import { randomBytes } from "node:crypto"
import { join } from "node:path"
import { AppConfig } from "../config/AppConfig.ts"
import { constantTimeEqual } from "../domain/apiKey.ts"
import { messageOf } from "../domain/errorMessage.ts"
import { ADMIN_TOKEN_MIN_LENGTH, AdminToken } from "../services/AdminToken.ts"
import { Secrets, SecretsError } from "../services/Secrets.ts"
import { unreachableDependency } from "../services/StartupError.ts"
import { withModule } from "./Logging.ts"
import { keepPrivateSecret } from "./privateFile.ts"

const longEnough = (token: string) => token.length >= ADMIN_TOKEN_MIN_LENGTH

/**
 * The admin token: ADMIN_TOKEN from Secrets (the environment or the DB_SECRET_NAME secret), which
 * must be at least 16 characters (an empty or short one fails start-up: it would let anyone with a
 * short guess, or an empty header, mint keys). Unset: generated once, kept in DATA_DIR/admin-token
 * (mode 0600) and reused at the next start, so scripts that read it keep working across restarts.
 */
export const AdminTokenLive = Layer.effect(AdminToken, Effect.gen(function*() {
  const secrets = yield* Secrets
  const config = yield* AppConfig
  const configured = yield* secrets.get("ADMIN_TOKEN")
  let token: string
  if (Option.isSome(configured)) {
    token = Redacted.value(configured.value)
    if (!longEnough(token)) {
      return yield* new SecretsError({
        reason: "Malformed",
        message: `ADMIN_TOKEN must be at least ${ADMIN_TOKEN_MIN_LENGTH} characters (it has ${token.length}); set a longer one, or unset it to have one generated`
      })
    }
  } else {
    const file = join(config.dataDir, "admin-token")
    const kept = yield* Effect.tryPromise({
      try: () => keepPrivateSecret(file, longEnough, () => randomBytes(24).toString("base64url")),
      catch: (e) => unreachableDependency("DATA_DIR", `cannot keep the admin token in ${file} (${messageOf(e)})`)
    })
    token = kept.value
    yield* (kept.created
      // The file, not the token: a kept token stays valid, and logs travel further than DATA_DIR.
      ? Effect.logInfo("ADMIN_TOKEN not set: generated one, kept for the next starts (read it from the file)", { file })
      : Effect.logInfo("ADMIN_TOKEN not set: using the one kept in DATA_DIR", { file })).pipe(withModule("admin"))
  }
  return AdminToken.of({
    token: Redacted.make(token),
    // An empty header never matches (the token is never empty); the length check is cheap.
    matches: (candidate) => candidate !== undefined && candidate.length > 0 && constantTimeEqual(candidate, token)
  })
}))
