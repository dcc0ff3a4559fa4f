import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { chmodSync, lstatSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll } from "vitest"
import type { AppConfig } from "../src/config/AppConfig.ts"
import { AdminTokenLive } from "../src/layers/AdminTokenLive.ts"
import { SecretsFromEnv, SecretsLive } from "../src/layers/SecretsLive.ts"
import { AdminToken } from "../src/services/AdminToken.ts"
import { Secrets } from "../src/services/Secrets.ts"
import { AWS_TEST_ENV, startSecretsManagerStandIn } from "./support/awsStandIns.ts"
import { testAppConfig } from "./support/config.ts"

const freshDataDir = () => mkdtempSync(join(tmpdir(), "tb-admin-token-"))

/** The admin token built from `secrets` (a Layer needing AppConfig) with DATA_DIR = `dataDir`. */
const adminToken = <E, R extends AppConfig>(secrets: Layer.Layer<Secrets, E, R>, dataDir: string, secretName?: string) => {
  const config = testAppConfig({
    dataDir,
    ...(secretName === undefined ? {} : { dbSecretName: Option.some(secretName), awsRegion: Option.some("us-east-1") })
  })
  return Layer.build(AdminTokenLive.pipe(Layer.provide(secrets), Layer.provide(config))).pipe(Effect.map((ctx) => Context.get(ctx, AdminToken)))
}

/** Secrets with only ADMIN_TOKEN, or nothing. */
const onlyAdminToken = (value: string | undefined) =>
  Layer.succeed(Secrets, Secrets.of({
    get: (name) => Effect.succeed(name === "ADMIN_TOKEN" && value !== undefined ? Option.some(Redacted.make(value)) : Option.none())
  }))

const savedEnv = { ...process.env }
beforeAll(() => {
  Object.assign(process.env, AWS_TEST_ENV)
})
afterAll(() => {
  process.env = savedEnv
})

describe("ADMIN_TOKEN shorter than 16 characters refuses to start", () => {
  it.live("set but empty, or short, in the environment", () =>
    Effect.gen(function*() {
      for (const value of ["", "fifteen-chars-x"]) {
        process.env["ADMIN_TOKEN"] = value
        const error = yield* Effect.flip(adminToken(SecretsFromEnv, freshDataDir()))
        assert.strictEqual(error._tag, "SecretsError")
        assert.strictEqual(error.reason, "Malformed")
        assert.match(error.message, /^ADMIN_TOKEN must be at least 16 characters \(it has \d+\)/)
        assert.notInclude(error.message, "\n")
        if (value !== "") assert.notInclude(error.message, value)
      }
      process.env["ADMIN_TOKEN"] = "sixteen-chars-xy"
      const accepted = yield* adminToken(SecretsFromEnv, freshDataDir())
      assert.isTrue(accepted.matches("sixteen-chars-xy"))
      delete process.env["ADMIN_TOKEN"]
    }).pipe(Effect.scoped))

  it.live("short admin_token in the DB_SECRET_NAME secret (Secrets Manager stand-in)", () =>
    Effect.gen(function*() {
      delete process.env["ADMIN_TOKEN"]
      const secretName = "tb/test/admin-short"
      const standIn = yield* Effect.acquireRelease(
        Effect.promise(() => startSecretsManagerStandIn({ [secretName]: JSON.stringify({ admin_token: "short-from-aws" }) })),
        (s) => Effect.promise(() => s.close())
      )
      process.env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = standIn.url
      const error = yield* Effect.flip(adminToken(SecretsLive, freshDataDir(), secretName))
      assert.strictEqual(error._tag, "SecretsError")
      assert.match(error.message, /^ADMIN_TOKEN must be at least 16 characters \(it has 14\)/)
      assert.strictEqual(standIn.requests.length, 1)
    }).pipe(Effect.scoped))
})

describe("the admin token", () => {
  it.live("never matches an empty or absent header", () =>
    Effect.gen(function*() {
      const token = yield* adminToken(onlyAdminToken("a-long-enough-admin-token"), freshDataDir())
      assert.isFalse(token.matches(""))
      assert.isFalse(token.matches(undefined))
      assert.isFalse(token.matches("a-long-enough-admin-tokeN"))
      assert.isTrue(token.matches("a-long-enough-admin-token"))
    }).pipe(Effect.scoped))

  it.live("unset: generated once, kept in DATA_DIR/admin-token (mode 0600) and reused at the next start", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      const file = join(dataDir, "admin-token")
      const first = Redacted.value((yield* Effect.scoped(adminToken(onlyAdminToken(undefined), dataDir))).token)
      assert.isAtLeast(first.length, 16)
      assert.strictEqual(readFileSync(file, "utf8").trim(), first)
      assert.strictEqual((statSync(file).mode & 0o777).toString(8), "600")
      const second = yield* Effect.scoped(adminToken(onlyAdminToken(undefined), dataDir))
      assert.strictEqual(Redacted.value(second.token), first)
      assert.isTrue(second.matches(first))
    }))

  it.live("unset: a kept file another hand widened is set back to 0600; an unusable one is replaced", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      const file = join(dataDir, "admin-token")
      writeFileSync(file, "kept-token-of-a-previous-start\n")
      chmodSync(file, 0o644)
      const kept = yield* Effect.scoped(adminToken(onlyAdminToken(undefined), dataDir))
      assert.strictEqual(Redacted.value(kept.token), "kept-token-of-a-previous-start")
      assert.strictEqual((statSync(file).mode & 0o777).toString(8), "600")
      writeFileSync(file, "\n")
      const replaced = Redacted.value((yield* Effect.scoped(adminToken(onlyAdminToken(undefined), dataDir))).token)
      assert.isAtLeast(replaced.length, 16)
      assert.strictEqual(readFileSync(file, "utf8").trim(), replaced)
    }))

  it.live("unset: a symbolic link planted at DATA_DIR/admin-token is not followed: its target keeps its mode and content, and is not the token", () =>
    Effect.gen(function*() {
      const dataDir = freshDataDir()
      const file = join(dataDir, "admin-token")
      // A file the planter knows, readable by everyone: were it followed, its content would be the token.
      const target = join(freshDataDir(), "known-file")
      writeFileSync(target, "content-the-planter-knows\n")
      chmodSync(target, 0o644)
      symlinkSync(target, file)
      const token = Redacted.value((yield* Effect.scoped(adminToken(onlyAdminToken(undefined), dataDir))).token)
      assert.notStrictEqual(token, "content-the-planter-knows")
      assert.isAtLeast(token.length, 16)
      assert.strictEqual(readFileSync(target, "utf8"), "content-the-planter-knows\n")
      assert.strictEqual((statSync(target).mode & 0o777).toString(8), "644")
      assert.isFalse(lstatSync(file).isSymbolicLink())
      assert.strictEqual(readFileSync(file, "utf8").trim(), token)
      assert.strictEqual((statSync(file).mode & 0o777).toString(8), "600")
    }))
})
