import { Context, Effect, Layer, Option, Redacted } from "effect"
import { randomBytes } from "node:crypto"
import { constantTimeEqual } from "../domain/apiKey.ts"
import { mkdir, writeFile } from "node:fs/promises"
import { join } from "node:path"
import { AppConfig } from "../config/AppConfig.ts"
import { Secrets } from "./Secrets.ts"
import { withModule } from "../layers/Logging.ts"

/** The admin token: from Secrets, else generated at start, written to DATA_DIR/admin-token and logged once. */
export class AdminToken extends Context.Service<AdminToken, {
  readonly token: Redacted.Redacted<string>
  readonly matches: (candidate: string | undefined) => boolean
}>()("tb/AdminToken") {
  static readonly layer = Layer.effect(AdminToken, Effect.gen(function*() {
    const secrets = yield* Secrets
    const config = yield* AppConfig
    const configured = yield* secrets.get("ADMIN_TOKEN")
    let token: string
    if (Option.isSome(configured)) token = Redacted.value(configured.value)
    else {
      token = randomBytes(24).toString("base64url")
      const file = join(config.dataDir, "admin-token")
      yield* Effect.promise(async () => {
        await mkdir(config.dataDir, { recursive: true })
        await writeFile(file, `${token}\n`, { mode: 0o600 })
      })
      yield* Effect.logInfo("ADMIN_TOKEN not set: generated one", { admin_token: token, file }).pipe(withModule("admin"))
    }
    return AdminToken.of({
      token: Redacted.make(token),
      matches: (candidate) => candidate !== undefined && constantTimeEqual(candidate, token)
    })
  }))
}
