import { SendEmailCommand, SESv2Client } from "@aws-sdk/client-sesv2"
import { Config, Effect, Layer, Option } from "effect"
import { Mailer, MailerError } from "../../services/Mailer.ts"
import { MailerEml } from "./MailerEml.ts"

/** Amazon SES v2 SendEmail (Simple content: subject, text and HTML parts) from SES_FROM. */
export const mailerSes = (from: string) =>
  Layer.effect(Mailer, Effect.gen(function*() {
    const client = yield* Effect.acquireRelease(Effect.sync(() => new SESv2Client({})), (c) => Effect.sync(() => c.destroy()))
    const configurationSet = yield* Config.String("SES_CONFIGURATION_SET").pipe(Config.option)
    return Mailer.of({
      send: (mail) =>
        Effect.tryPromise({
          try: (signal) =>
            client.send(new SendEmailCommand({
              FromEmailAddress: from,
              Destination: { ToAddresses: [mail.to] },
              ...(Option.isSome(configurationSet) ? { ConfigurationSetName: configurationSet.value } : {}),
              Content: {
                Simple: {
                  Subject: { Data: mail.subject, Charset: "UTF-8" },
                  Body: { Text: { Data: mail.text, Charset: "UTF-8" }, Html: { Data: mail.html, Charset: "UTF-8" } }
                }
              }
            }), { abortSignal: signal }),
          // The SDK's message, never the mail (the subscription receipt holds a key).
          catch: (cause) => new MailerError({ message: `SES SendEmail failed: ${cause instanceof Error ? cause.name + ": " + cause.message : "unknown error"}` })
        }).pipe(Effect.asVoid)
    })
  }))

/** SES v2 when SES_FROM is set, else `.eml` files in DATA_DIR/outbox (the embedded default). */
export const MailerLive = Layer.unwrap(Effect.gen(function*() {
  const from = yield* Config.String("SES_FROM").pipe(Config.option)
  return Option.isSome(from) && from.value.trim() !== "" ? mailerSes(from.value.trim()) : MailerEml
}))
