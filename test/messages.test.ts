import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { RESPONSE_CODES } from "../src/domain/errorCodes.ts"
import { type Lang, LANGS, messageFor, negotiateLang } from "../src/domain/messages.ts"

const ERROR_CODES = RESPONSE_CODES.filter((c) => c !== "OK")

describe("messageFor", () => {
  it("has a non-empty, trimmed message for every code in every language", () => {
    for (const lang of LANGS) {
      for (const code of RESPONSE_CODES) {
        const message = messageFor(code, lang)
        expect(message.length, `${code}/${lang}`).toBeGreaterThan(0)
        expect(message.trim(), `${code}/${lang}`).toBe(message)
      }
    }
  })

  it("translates every error code: no language repeats the English text", () => {
    for (const lang of LANGS.filter((l) => l !== "en")) {
      for (const code of ERROR_CODES) {
        expect(messageFor(code, lang), `${code}/${lang}`).not.toBe(messageFor(code, "en"))
      }
    }
  })

  it("gives each code its own message within a language", () => {
    for (const lang of LANGS) {
      const messages = RESPONSE_CODES.map((code) => messageFor(code, lang))
      expect(new Set(messages).size, lang).toBe(RESPONSE_CODES.length)
    }
  })

  it("points rate-limited callers at Retry-After in every language", () => {
    for (const lang of LANGS) expect(messageFor("RATE_LIMITED", lang), lang).toContain("Retry-After")
    expect(messageFor("RATE_LIMITED", "en")).toBe("Rate limit exceeded; retry after the Retry-After interval.")
  })

  it("writes each language in its own script", () => {
    const script: Partial<Record<Lang, RegExp>> = {
      ru: /\p{Script=Cyrillic}/u,
      hi: /\p{Script=Devanagari}/u,
      ur: /\p{Script=Arabic}/u,
      ar: /\p{Script=Arabic}/u,
      ja: /[\p{Script=Hiragana}\p{Script=Katakana}]/u,
      zh: /\p{Script=Han}/u
    }
    for (const [lang, pattern] of Object.entries(script) as Array<[Lang, RegExp]>) {
      for (const code of RESPONSE_CODES) expect(messageFor(code, lang), `${code}/${lang}`).toMatch(pattern)
    }
  })
})

describe("negotiateLang", () => {
  it.each([
    [null, null, "en"],
    [undefined, undefined, "en"],
    ["", "", "en"],
    ["de", null, "de"],
    ["DE", null, "de"],
    ["pt-BR", null, "pt"],
    ["fr", "ja", "fr"],
    ["xx", "ja", "ja"],
    ["xx", null, "en"],
    [null, "pt-BR", "pt"],
    [null, "zh-Hant", "zh"],
    [null, "zh_CN", "zh"],
    [null, "ZH-hant-TW", "zh"],
    [null, "fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5", "fr"],
    [null, "xx, ar;q=0.4, ur;q=0.6", "ur"],
    [null, "en;q=0.2, es;q=0.9", "es"],
    [null, "de;q=0.5, it;q=0.5", "de"],
    [null, "de;q=0, it;q=0.1", "it"],
    [null, "de;q=0", "en"],
    [null, "*", "en"],
    [null, "ru;q=oops, hi;q=0.3", "hi"],
    [null, "ru;q=1.5, hi;q=0.3", "hi"],
    [null, " ja ; q=0.7 ,ko", "ja"],
    [null, "es;level=1;q=0.8, it;q=0.7", "es"],
    [null, ",,;;,", "en"],
    ["en", "ja", "en"]
  ] as const)("?lang=%s, Accept-Language %s -> %s", (query, header, expected) => {
    expect(negotiateLang(query, header)).toBe(expected)
  })

  it("never throws and always gives a supported language, for any strings", () => {
    fc.assert(
      fc.property(
        fc.option(fc.string({ unit: "binary" })),
        fc.option(fc.string({ unit: "binary", maxLength: 300 })),
        (query, header) => {
          expect(LANGS).toContain(negotiateLang(query, header))
        }
      )
    )
  })

  it("picks the highest-q supported entry, the earliest among equals", () => {
    const tag = fc.oneof(
      fc.constantFrom(...LANGS),
      fc.constantFrom(...LANGS).map((l) => `${l.toUpperCase()}-XX`),
      fc.constantFrom("xx", "ko", "nl", "*", "eng", "e")
    )
    const q = fc.option(fc.integer({ min: 0, max: 1000 }).map((n) => n / 1000), { nil: undefined })
    fc.assert(
      fc.property(fc.array(fc.record({ tag, q }), { maxLength: 8 }), (entries) => {
        const header = entries.map((e) => (e.q === undefined ? e.tag : `${e.tag};q=${e.q}`)).join(", ")
        const ranked = entries
          .map((e) => ({ lang: e.tag.slice(0, 2).toLowerCase(), q: e.q ?? 1, exact: /^[a-zA-Z]{2}(-XX)?$/.test(e.tag) }))
          .filter((e) => e.exact && e.q > 0 && (LANGS as ReadonlyArray<string>).includes(e.lang))
          .sort((a, b) => b.q - a.q) // stable: earlier entries stay first among equals
        expect(negotiateLang(null, header)).toBe(ranked[0]?.lang ?? "en")
      })
    )
  })
})
