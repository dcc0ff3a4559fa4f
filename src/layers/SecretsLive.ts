import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager"
import { Effect, Layer, Option, Redacted } from "effect"
import { AppConfig } from "../config/AppConfig.ts"
import { type SecretName, Secrets, SecretsError } from "../services/Secrets.ts"

/** Secrets from the environment (laptop, CI). */
export const SecretsFromEnv = Layer.succeed(Secrets, Secrets.of({
  get: (name) => Effect.sync(() => Option.map(Option.fromNullishOr(process.env[name]), Redacted.make))
}))

/** The JSON keys a Secrets Manager secret may use for each secret (RDS-style and our own names). */
const SECRET_JSON_KEYS: Record<SecretName, ReadonlyArray<string>> = {
  ADMIN_TOKEN: ["admin_token", "ADMIN_TOKEN"],
  STRIPE_SECRET_KEY: ["stripe_secret_key", "stripe_key", "STRIPE_SECRET_KEY"],
  DB_USERNAME: ["username", "DB_USERNAME"],
  DB_PASSWORD: ["password", "DB_PASSWORD"],
  WEBHOOK_SECRET_KEY: ["webhook_secret_key", "WEBHOOK_SECRET_KEY"],
  STRIPE_WEBHOOK_SECRET: ["stripe_webhook_secret", "STRIPE_WEBHOOK_SECRET"]
}

/** AWS Secrets Manager: one JSON secret named DB_SECRET_NAME, read once at start (env still wins for local overrides). */
const secretsFromAws = (secretId: string, region: string | undefined) =>
  Effect.gen(function*() {
    const client = new SecretsManagerClient(region === undefined ? {} : { region })
    yield* Effect.addFinalizer(() => Effect.sync(() => client.destroy()))
    const out = yield* Effect.tryPromise({
      try: () => client.send(new GetSecretValueCommand({ SecretId: secretId })),
      catch: (cause) => new SecretsError({ reason: "Unavailable", message: `DB_SECRET_NAME=${secretId}: ${String(cause)}` })
    })
    const parsed = yield* Effect.try({
      try: (): unknown => JSON.parse(out.SecretString ?? "{}"),
      catch: () => new SecretsError({ reason: "Malformed", message: `DB_SECRET_NAME=${secretId}: secret is not a JSON object` })
    })
    if (typeof parsed !== "object" || parsed === null) {
      return yield* new SecretsError({ reason: "Malformed", message: `DB_SECRET_NAME=${secretId}: secret is not a JSON object` })
    }
    const record = parsed as Record<string, unknown>
    const lookup = (name: SecretName): Option.Option<Redacted.Redacted<string>> => {
      const fromEnv = process.env[name]
      if (fromEnv !== undefined) return Option.some(Redacted.make(fromEnv))
      for (const key of SECRET_JSON_KEYS[name]) {
        const v = record[key]
        if (typeof v === "string" || typeof v === "number") return Option.some(Redacted.make(String(v)))
      }
      return Option.none()
    }
    return Secrets.of({ get: (name) => Effect.succeed(lookup(name)) })
  })

/** Secrets Manager when DB_SECRET_NAME is set, the environment otherwise. */
export const SecretsLive = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  return Option.match(config.dbSecretName, {
    onNone: () => SecretsFromEnv,
    onSome: (name) => Layer.effect(Secrets, secretsFromAws(name, Option.getOrUndefined(config.awsRegion)))
  })
}))
