/**
 * `npm run package:lambda` as an operator deploys it: each zip under dist/lambda/ unzipped into an
 * empty directory (no node_modules beside it, as in Lambda), its `index.handler` called in a
 * process of its own with a sample event, against the real PostgreSQL. Runs the packager from the
 * build (`npm test` builds first).
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readdirSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { dropDatabase, freshDatabase } from "./support/services.ts"
import { psqlRows, usageLogBody, usageRow } from "./queuedWriterSupport.ts"

const ROOT = join(import.meta.dirname, "..")

/** Unzip `zip` into a fresh directory and call its handler with `event` in a child process. */
const invoke = (zip: string, event: unknown, env: Record<string, string>): unknown => {
  const dir = mkdtempSync(join(tmpdir(), "tb-lambda-"))
  execFileSync("unzip", ["-q", zip, "-d", dir])
  expect(readdirSync(dir).sort()).toEqual(["index.mjs", "package.json"])
  const script = `import(${JSON.stringify(join(dir, "index.mjs"))}).then(async (m) => {
    const result = await m.handler(JSON.parse(process.env.EVENT))
    process.stdout.write(JSON.stringify(result))
    process.exit(0)
  })`
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
    cwd: dir, env: { PATH: process.env["PATH"] ?? "", LOG_LEVEL: "Error", EVENT: JSON.stringify(event), ...env }, encoding: "utf8", timeout: 60_000
  })
  return JSON.parse(out)
}

describe("npm run package:lambda", () => {
  const db = freshDatabase("package_lambda")
  let zips: ReadonlyArray<string> = []

  beforeAll(() => {
    zips = execFileSync(process.execPath, [join(ROOT, "dist", "src", "programs", "packageLambda.js")], { cwd: ROOT, encoding: "utf8", timeout: 120_000 })
      .trim().split("\n")
    return () => dropDatabase(db)
  }, 180_000)

  it("writes one zip per Lambda entry", () => {
    expect(zips.map((z) => z.slice(z.lastIndexOf("/") + 1))).toEqual(["queued-writer.zip", "receipt.zip"])
  })

  it("the queued writer's zip stores a good message and reports the poison one in batchItemFailures", () => {
    const row = usageRow()
    const record = (messageId: string, body: string) => ({ messageId, receiptHandle: `rh-${messageId}`, body, attributes: {}, messageAttributes: {}, eventSource: "aws:sqs" })
    const result = invoke(zips[0]!, { Records: [record("good-1", usageLogBody([row])), record("poison-1", "{not json")] }, { DATABASE_URL: db })
    expect(result).toEqual({ batchItemFailures: [{ itemIdentifier: "poison-1" }] })
    expect(psqlRows<{ readonly id: string }>(db, "SELECT id::text AS id FROM usage_logs").map((r) => r.id)).toEqual([row.id])
  }, 90_000)

  it("the receipt zip answers an API Gateway event: /receipt without a Stripe key is MAINTENANCE, an unknown path 404", () => {
    const event = (path: string) => ({
      version: "2.0", rawPath: path, headers: { "content-type": "application/json" }, body: "{\"session_id\":\"cs_test_1\"}", isBase64Encoded: false,
      requestContext: { http: { method: "POST", path }, requestId: "req-1" }
    })
    const env = { DATABASE_URL: db, DATA_DIR: mkdtempSync(join(tmpdir(), "tb-lambda-data-")) }
    const maintenance = invoke(zips[1]!, event("/receipt"), env) as { statusCode: number; body: string }
    expect(maintenance.statusCode).toBe(503)
    expect(JSON.parse(maintenance.body)).toMatchObject({ service: "RECEIPT", code: "MAINTENANCE" })
    const unknown = invoke(zips[1]!, event("/nope"), env) as { statusCode: number; body: string }
    expect(unknown.statusCode).toBe(404)
  }, 90_000)
})
