import { ConfigProvider, Effect, Layer } from "effect"
import { createServer, type IncomingMessage } from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { AppConfig } from "../src/config/AppConfig.ts"
import { LANGS } from "../src/domain/messages.ts"
import { MailerLive } from "../src/layers/mail/MailerSes.ts"
import { EMAIL_TEMPLATES, renderEmail } from "../src/programs/receipt/templates.ts"
import { Mailer } from "../src/services/Mailer.ts"
import { STAND_IN_AWS_ENV } from "../src/simulators/awsJsonProtocol.ts"

/** The receipt e-mails: every template in the 12 languages, HTML and text from the same data; SES v2 SendEmail when SES_FROM is set. */

const DATA = { amount: "49.00", currency: "USD", tier: "associate", key: "tb_TESTKEY0123456789abcdefghij", key_prefix: "tb_TESTKEY", key_prefixes: "tb_TESTKEY", session_id: "cs_test_1" }

describe("e-mail templates", () => {
  it("render every template in every language, HTML and text, the key in both parts of the key-bearing ones", () => {
    for (const template of EMAIL_TEMPLATES) {
      const english = renderEmail(template, "en", DATA, "a@example.com")
      for (const lang of LANGS) {
        const mail = renderEmail(template, lang, DATA, "a@example.com")
        expect(mail.subject, `${template}/${lang}`).not.toBe("")
        expect(mail.subject).not.toContain("{{")
        expect(mail.text).not.toContain("{{")
        expect(mail.html).toContain(`lang="${lang}"`)
        if (lang !== "en") expect(mail.subject, `${template}/${lang} is translated`).not.toBe(english.subject)
        if (template === "subscription" || template === "demo-welcome") {
          expect(mail.text).toContain(DATA.key)
          expect(mail.html).toContain(DATA.key)
        } else {
          expect(mail.text).not.toContain(DATA.key)
        }
        if (template !== "demo-welcome") expect(mail.text).toContain("49.00")
      }
    }
  })

  it("escapes data in the HTML part only, writes right-to-left languages rtl, and falls back to English for an unknown language", () => {
    const mail = renderEmail("subscription", "en", { ...DATA, tier: "<b>x</b>" }, "a@example.com")
    expect(mail.html).toContain("&lt;b&gt;x&lt;&#x2F;b&gt;")
    expect(mail.html).not.toContain("<b>x</b>")
    expect(mail.text).toContain("<b>x</b>")
    expect(renderEmail("donation", "ar", DATA, "a@example.com").html).toContain(`dir="rtl"`)
    expect(renderEmail("donation", "xx", DATA, "a@example.com").subject).toBe(renderEmail("donation", "en", DATA, "a@example.com").subject)
  })
})

describe("MailerLive with SES_FROM: SES v2 SendEmail", () => {
  const requests: Array<{ method: string; url: string; body: Record<string, unknown> }> = []
  const server = createServer((req: IncomingMessage, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      requests.push({ method: req.method ?? "", url: req.url ?? "", body: JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as Record<string, unknown> })
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify({ MessageId: "0100-test" }))
    })
  })
  const saved: Record<string, string | undefined> = {}
  beforeAll(async () => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const address = server.address()
    const env = { ...STAND_IN_AWS_ENV, AWS_ENDPOINT_URL_SESV2: `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}` }
    for (const [k, v] of Object.entries(env)) {
      saved[k] = process.env[k]
      process.env[k] = v
    }
  })
  afterAll(async () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })

  it("posts one SendEmail with the subject, the text and the HTML part", async () => {
    const mail = renderEmail("donation", "ja", DATA, "to@example.com")
    const layer = MailerLive.pipe(
      Layer.provide(AppConfig.layer),
      Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord({ SES_FROM: "receipts@trinity.example", DATA_DIR: "/nonexistent" })))
    )
    await Effect.runPromise(Effect.gen(function*() {
      yield* (yield* Mailer).send(mail)
    }).pipe(Effect.provide(layer)))
    expect(requests).toHaveLength(1)
    expect(requests[0]).toMatchObject({
      method: "POST",
      url: "/v2/email/outbound-emails",
      body: {
        FromEmailAddress: "receipts@trinity.example",
        Destination: { ToAddresses: ["to@example.com"] },
        Content: { Simple: { Subject: { Data: mail.subject }, Body: { Text: { Data: mail.text }, Html: { Data: mail.html } } } }
      }
    })
  })
})
