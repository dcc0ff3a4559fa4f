import { createHash } from "node:crypto"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  API_KEY_PREFIX,
  displayPrefix,
  generateApiKey,
  hashApiKey,
  hashIfWellFormed,
  constantTimeEqual,
  keyBytesMatch,
  looksLikeApiKey,
  MAX_API_KEY_BYTES,
  newKeyBytesMemo,
  rememberKeyBytes
} from "../src/domain/apiKey.ts"

const randomArb = fc.uint8Array({ minLength: 32, maxLength: 96 })
const keyArb = randomArb.map(generateApiKey)
const BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
const bodyArb = (minLength: number, maxLength: number) =>
  fc.string({ unit: fc.constantFrom(...BASE64URL), minLength, maxLength })
const hexArb = fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), minLength: 64, maxLength: 64 })

describe("generateApiKey", () => {
  it("gives keys that pass looksLikeApiKey and decode back to the random bytes", () => {
    fc.assert(
      fc.property(randomArb, (random) => {
        const key = generateApiKey(random)
        expect(key.startsWith(API_KEY_PREFIX)).toBe(true)
        expect(key).not.toContain("=")
        expect(looksLikeApiKey(key)).toBe(true)
        expect([...Buffer.from(key.slice(API_KEY_PREFIX.length), "base64url")]).toEqual([...random])
      })
    )
  })

  it("32 random bytes make a 43-char body", () => {
    expect(generateApiKey(new Uint8Array(32).fill(255))).toBe(API_KEY_PREFIX + "_".repeat(42) + "8")
  })

  it("reads only the view it is given, not the whole underlying buffer", () => {
    const backing = new Uint8Array(64).fill(7)
    backing.fill(1, 16, 48)
    expect(generateApiKey(backing.subarray(16, 48))).toBe(generateApiKey(new Uint8Array(32).fill(1)))
  })

  it("distinct random inputs give distinct keys", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(randomArb, { minLength: 2, maxLength: 30, selector: (a) => Buffer.from(a).toString("hex") }),
        (randoms) => {
          expect(new Set(randoms.map(generateApiKey)).size).toBe(randoms.length)
        }
      )
    )
  })

  it("refuses fewer than 32 or more than 96 random bytes", () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 0, max: 31 }), fc.integer({ min: 97, max: 300 })), (n) => {
        expect(() => generateApiKey(new Uint8Array(n))).toThrow(RangeError)
      })
    )
  })
})

describe("hashApiKey", () => {
  it("is SHA-256 in hex (FIPS 180-2 test vector)", () => {
    expect(hashApiKey("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  })

  it("is deterministic, 64 lowercase hex chars, and differs for different keys", () => {
    fc.assert(
      fc.property(keyArb, keyArb, (a, b) => {
        const ha = hashApiKey(a)
        expect(ha).toMatch(/^[0-9a-f]{64}$/)
        expect(hashApiKey(a)).toBe(ha)
        expect(ha).toBe(createHash("sha256").update(a).digest("hex"))
        if (a !== b) expect(hashApiKey(b)).not.toBe(ha)
      })
    )
  })
})

describe("displayPrefix", () => {
  it("is the first 10 chars of the key", () => {
    fc.assert(
      fc.property(keyArb, (key) => {
        const prefix = displayPrefix(key)
        expect(prefix).toHaveLength(10)
        expect(key.startsWith(prefix)).toBe(true)
        expect(prefix.startsWith(API_KEY_PREFIX)).toBe(true)
      })
    )
  })
})

describe("constantTimeEqual", () => {
  it("is reflexive", () => {
    fc.assert(
      fc.property(hexArb, (h) => {
        expect(constantTimeEqual(h, h.slice())).toBe(true)
      })
    )
  })

  it("is false after any single-char change", () => {
    fc.assert(
      fc.property(hexArb, fc.nat({ max: 63 }), fc.string({ minLength: 1, maxLength: 1, unit: "binary" }), (h, i, c) => {
        fc.pre(h[i] !== c)
        const changed = h.slice(0, i) + c + h.slice(i + 1)
        expect(constantTimeEqual(h, changed)).toBe(false)
        expect(constantTimeEqual(changed, h)).toBe(false)
      })
    )
  })

  it("is false for different lengths", () => {
    fc.assert(
      fc.property(hexArb, fc.integer({ min: 0, max: 63 }), (h, cut) => {
        expect(constantTimeEqual(h, h.slice(0, cut))).toBe(false)
        expect(constantTimeEqual(h + "0", h)).toBe(false)
      })
    )
  })

  it("agrees with === on any two strings", () => {
    const pair = fc.oneof(fc.tuple(fc.string(), fc.string()), fc.string().map((s) => [s, s] as const), fc.string({ minLength: 1 }).chain((s) =>
      fc.nat(s.length - 1).map((i) => [s, s.slice(0, i) + String.fromCharCode(s.charCodeAt(i) ^ 1) + s.slice(i + 1)] as const)))
    fc.assert(fc.property(pair, ([a, b]) => {
      expect(constantTimeEqual(a, b)).toBe(a === b)
    }))
    // Different lone surrogates are the same bytes in UTF-8; as code units they differ.
    expect(constantTimeEqual("\ud800", "\udfff")).toBe(false)
  })
})

describe("looksLikeApiKey", () => {
  it("accepts prefix + 40..128 base64url chars and nothing shorter or longer", () => {
    expect(looksLikeApiKey(API_KEY_PREFIX + "a".repeat(40))).toBe(true)
    expect(looksLikeApiKey(API_KEY_PREFIX + "a".repeat(128))).toBe(true)
    expect(looksLikeApiKey(API_KEY_PREFIX + "a".repeat(39))).toBe(false)
    expect(looksLikeApiKey(API_KEY_PREFIX + "a".repeat(129))).toBe(false)
    fc.assert(
      fc.property(bodyArb(40, 128), (body) => {
        expect(looksLikeApiKey(API_KEY_PREFIX + body)).toBe(true)
      })
    )
  })

  it("needs the exact prefix", () => {
    fc.assert(
      fc.property(bodyArb(40, 128), fc.constantFrom("", "TB_", "tb-", "tk_", "xtb_", " tb_"), (body, prefix) => {
        expect(looksLikeApiKey(prefix + body)).toBe(false)
      })
    )
  })

  it("rejects keys with spaces, quotes, control or non-ASCII chars anywhere in the body", () => {
    const bad = fc.constantFrom(" ", "\t", "\n", "\"", "'", "\\", "=", "+", "/", ".", "\u0000", "é", "😀", "\u00a0", "ａ")
    fc.assert(
      fc.property(bodyArb(40, 120), fc.nat(), bad, (body, at, c) => {
        const i = at % (body.length + 1)
        expect(looksLikeApiKey(API_KEY_PREFIX + body.slice(0, i) + c + body.slice(i))).toBe(false)
      })
    )
  })

  it("rejects arbitrary strings that are not of the key alphabet", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 200 }), (s) => {
        const expected = s.startsWith(API_KEY_PREFIX) && /^tb_[A-Za-z0-9_-]{40,128}$/.test(s)
        expect(looksLikeApiKey(s)).toBe(expected)
      })
    )
  })
})

describe("hashIfWellFormed", () => {
  it("hashes exactly the keys looksLikeApiKey accepts", () => {
    fc.assert(fc.property(fc.oneof(keyArb, fc.string({ maxLength: 140 }), bodyArb(0, 140).map((b) => API_KEY_PREFIX + b)), (key) => {
      expect(hashIfWellFormed(key)).toBe(looksLikeApiKey(key) ? hashApiKey(key) : undefined)
    }))
  })
})

describe("KeyBytesMemo (a UDP client's last key, compared in place)", () => {
  // Lengths spread over 0..MAX+5 (fast-check favours short strings), from a small alphabet so keys collide often.
  const keyText = fc.integer({ min: 0, max: MAX_API_KEY_BYTES + 5 }).chain((n) => fc.string({ unit: fc.constantFrom(..."tb_AB9-"), minLength: n, maxLength: n }))
  /** A key, and a second one: the same, the same but one character, or another. */
  const keyPair = keyText.chain((a) =>
    fc.oneof(
      fc.constant([a, a] as const),
      fc.nat({ max: Math.max(0, a.length - 1) }).map((i) => [a, a.length === 0 ? "x" : `${a.slice(0, i)}${a[i] === "A" ? "B" : "A"}${a.slice(i + 1)}`] as const),
      keyText.map((b) => [a, b] as const)
    ))

  it("matches exactly the remembered key's bytes, wherever they sit in the datagram", () => {
    fc.assert(fc.property(keyPair, fc.nat({ max: 20 }), ([remembered, sent], offset) => {
      const memo = newKeyBytesMemo()
      const first = Buffer.from(`${"x".repeat(offset)}${remembered} BTC`, "latin1")
      rememberKeyBytes(memo, first, offset, offset + remembered.length, "hash-of-remembered")
      const datagram = Buffer.from(`v1 price ${sent} BTC`, "latin1")
      const matches = keyBytesMatch(memo, datagram, 9, 9 + sent.length)
      // A key too long to be valid is never remembered, so nothing matches it.
      expect(matches).toBe(remembered.length <= MAX_API_KEY_BYTES && remembered === sent)
      if (matches) expect(memo.hash).toBe("hash-of-remembered")
    }))
  })

  it("an empty memo matches nothing, not even an empty key", () => {
    expect(keyBytesMatch(newKeyBytesMemo(), Buffer.from("v1 price  BTC"), 9, 9)).toBe(false)
  })
})
