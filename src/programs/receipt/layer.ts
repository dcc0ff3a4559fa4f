import { Layer } from "effect"
import { MailerLive } from "../../layers/mail/MailerSes.ts"
import { PaymentsStripe } from "../../layers/PaymentsStripe.ts"
import { ReceiptProcessorLive } from "./fulfil.ts"

/** The receipt processor with Stripe and the mailer SES_FROM chooses; needs the database, API keys, Secrets and AppConfig. */
export const ReceiptLive = ReceiptProcessorLive.pipe(Layer.provideMerge(Layer.mergeAll(PaymentsStripe, MailerLive)))
