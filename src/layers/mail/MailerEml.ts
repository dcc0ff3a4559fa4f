import { Effect, Layer } from "effect"
import { randomUUID } from "node:crypto"
import { mkdir, writeFile } from "node:fs/promises"
import { join } from "node:path"
import { AppConfig } from "../../config/AppConfig.ts"
import { Mailer, MailerError, type OutgoingEmail } from "../../services/Mailer.ts"

const FROM = "Trinity Beast <receipts@localhost>"

/** RFC 2047 encoded-word for a header holding non-ASCII text (subjects in 12 languages). */
const headerText = (text: string): string =>
  /^[\x20-\x7e]*$/.test(text) ? text : `=?UTF-8?B?${Buffer.from(text, "utf8").toString("base64")}?=`

/** CRLF line ends, as RFC 5322 wants; the parts stay readable (8bit UTF-8), so `grep` finds what was sent. */
const crlf = (text: string): string => text.replace(/\r?\n/g, "\r\n")

/** A multipart/alternative message (text, then HTML), as a mail client would open it. */
export const renderEml = (mail: OutgoingEmail, from: string, date: Date): string => {
  const boundary = `tb-${randomUUID()}`
  return [
    `From: ${from}`,
    `To: ${mail.to}`,
    `Subject: ${headerText(mail.subject)}`,
    `Date: ${date.toUTCString()}`,
    `Message-ID: <${randomUUID()}@trinity-beast.local>`,
    "MIME-Version: 1.0",
    `Content-Type: multipart/alternative; boundary="${boundary}"`,
    "",
    `--${boundary}`,
    "Content-Type: text/plain; charset=UTF-8",
    "Content-Transfer-Encoding: 8bit",
    "",
    crlf(mail.text),
    `--${boundary}`,
    "Content-Type: text/html; charset=UTF-8",
    "Content-Transfer-Encoding: 8bit",
    "",
    crlf(mail.html),
    `--${boundary}--`,
    ""
  ].join("\r\n")
}

/** `.eml` files in DATA_DIR/outbox: what would be sent, without a mail service (SES_FROM unset). */
export const MailerEml = Layer.effect(Mailer, Effect.gen(function*() {
  const config = yield* AppConfig
  const dir = join(config.dataDir, "outbox")
  return Mailer.of({
    send: (mail) =>
      Effect.tryPromise({
        try: async () => {
          await mkdir(dir, { recursive: true, mode: 0o700 })
          const now = new Date()
          // The file holds a new key in a subscription receipt: readable by the owner only.
          await writeFile(join(dir, `${now.toISOString().replace(/[:.]/g, "-")}-${randomUUID().slice(0, 8)}.eml`), renderEml(mail, FROM, now), { mode: 0o600, flag: "wx" })
        },
        catch: (cause) => new MailerError({ message: `cannot write to ${dir}: ${String(cause)}` })
      })
  })
}))
