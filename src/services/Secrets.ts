import { Context, Data, Effect, Option, Redacted } from "effect"

/** The secrets the platform reads; every one goes through this service, never process.env directly. */
export const SECRET_NAMES = ["ADMIN_TOKEN", "STRIPE_SECRET_KEY", "DB_USERNAME", "DB_PASSWORD", "WEBHOOK_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"] as const
export type SecretName = (typeof SECRET_NAMES)[number]

export class SecretsError extends Data.TaggedError("SecretsError")<{
  readonly reason: "Unavailable" | "Malformed"
  readonly message: string
}> {}

export class Secrets extends Context.Service<Secrets, {
  readonly get: (name: SecretName) => Effect.Effect<Option.Option<Redacted.Redacted<string>>, SecretsError>
}>()("tb/Secrets") {}
