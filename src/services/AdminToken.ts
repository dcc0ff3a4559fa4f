import { Context, type Redacted } from "effect"

/** The shortest admin token accepted, from either secret source (spec, "Configuration"). */
export const ADMIN_TOKEN_MIN_LENGTH = 16

/**
 * The admin token that guards `/admin/*`: from Secrets, else generated once and kept in
 * DATA_DIR/admin-token (src/layers/AdminTokenLive.ts).
 */
export class AdminToken extends Context.Service<AdminToken, {
  readonly token: Redacted.Redacted<string>
  readonly matches: (candidate: string | undefined) => boolean
}>()("tb/AdminToken") {}
