import { Context, Data, type Effect } from "effect"

/** One rendered e-mail: both parts, already in the recipient's language. */
export interface OutgoingEmail {
  readonly to: string
  readonly subject: string
  readonly text: string
  readonly html: string
}

export class MailerError extends Data.TaggedError("MailerError")<{
  readonly message: string
}> {}

/** Sends e-mail: SES v2 when SES_FROM is set, else `.eml` files in DATA_DIR/outbox (the embedded default). */
export class Mailer extends Context.Service<Mailer, {
  readonly send: (mail: OutgoingEmail) => Effect.Effect<void, MailerError>
}>()("tb/Mailer") {}
