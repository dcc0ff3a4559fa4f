/**
 * `tb demo` as a subscriber runs it: the built CLI against `tb serve` (LPO + report server,
 * FEEDS=simulated, real PostgreSQL), over the real wire. A partner key gets every step; a demo key
 * sees the stream and the report skipped; no key, a wrong key and a server that is down fail with
 * what to do next; colour only on a terminal (or forced), never in --json.
 * Needs the build (`npx tsc -p tsconfig.build.json`; `npm test` builds first).
 */
import { spawn } from "node:child_process"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { palette, renderStep, useColour } from "../src/programs/demo/render.ts"
import type { StepResult } from "../src/programs/demo/steps.ts"
import { demoTargets } from "../src/programs/demo/targets.ts"
import { createKey, deadPort, type RunningServer, startServer } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"

const CLI = process.env["TB_CLI"] ?? join(import.meta.dirname, "..", "dist", "src", "programs", "cli.js")
const ESC = "\u001b["

let server: RunningServer
let dbUrl: string
let demoEnv: Record<string, string>

beforeAll(async () => {
  dbUrl = freshDatabase("demo_cli")
  server = await startServer({ DATABASE_URL: dbUrl, SERVER_TYPE: "APP_REPORT_SERVER" })
  demoEnv = {
    LPO_HTTP_PORT: server.env["LPO_HTTP_PORT"]!,
    LPO_UDP_PORT: server.env["LPO_UDP_PORT"]!,
    LRS_HTTP_PORT: server.env["LRS_HTTP_PORT"]!,
    LRS_UDP_PORT: server.env["LRS_UDP_PORT"]!,
    DATA_DIR: server.dataDir
  }
}, 90_000)

afterAll(async () => {
  await server?.stop()
  dropDatabase(dbUrl)
})

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** The built CLI with pipes (so not a terminal), with exactly the colour variables given. */
const demo = (args: ReadonlyArray<string>, env: Record<string, string> = {}): Promise<Run> =>
  new Promise((resolve) => {
    const base: Record<string, string | undefined> = { ...process.env }
    for (const name of ["FORCE_COLOR", "NO_COLOR", "LPO_HTTP_PORT", "LPO_UDP_PORT", "LRS_HTTP_PORT", "LRS_UDP_PORT", "DATA_DIR"]) delete base[name]
    const child = spawn(process.execPath, [CLI, "demo", ...args], { env: { ...base, ...demoEnv, ...env }, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => void (stdout += d.toString()))
    child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()))
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
  })

interface Document {
  readonly ok: boolean
  readonly key: string | null
  readonly counts: Record<string, number>
  readonly steps: ReadonlyArray<StepResult>
}

/** stdout must be exactly one JSON document. */
const documentOf = (run: Run): Document => {
  try {
    return JSON.parse(run.stdout) as Document
  } catch {
    throw new Error(`not one JSON document (exit ${run.code}):\n${run.stdout}\nstderr:\n${run.stderr}`)
  }
}

const step = (doc: Document, name: string): StepResult => {
  const found = doc.steps.find((s) => s.step === name)
  if (found === undefined) throw new Error(`no step ${name} in ${JSON.stringify(doc.steps.map((s) => s.step))}`)
  return found
}

describe("tb demo against a running server (black box)", () => {
  it("walks a partner key through every step over the real wire (--json: one document, the key never shown)", async () => {
    const { key } = await createKey(server, "partner")
    const run = await demo(["--key", key, "--json"])
    expect(run.code, run.stderr).toBe(0)
    const doc = documentOf(run)
    expect(doc.steps.map((s) => [s.step, s.status])).toEqual([
      ["key", "ok"], ["price", "ok"], ["prices", "ok"], ["udp", "ok"], ["stream", "ok"], ["report", "ok"]
    ])
    expect(doc).toMatchObject({ ok: true, key: `${key.slice(0, 10)}…`, counts: { ok: 6, skipped: 0, failed: 0, not_run: 0 } })
    expect(step(doc, "key").data).toMatchObject({ key: { tier: "partner" } })
    expect(step(doc, "price").data).toMatchObject({ asset: "BTC", quote: "USD", method: "median" })
    expect((step(doc, "price").data as { price: number }).price).toBeGreaterThan(0)
    expect((step(doc, "prices").data as { prices: ReadonlyArray<{ asset: string }> }).prices.map((p) => p.asset)).toEqual(["BTC", "ETH", "SOL"])
    expect(step(doc, "udp").data).toMatchObject({ ok: true, rid: "demo1", asset: "BTC", quote: "USD", source: "consensus" })
    const messages = step(doc, "stream").data as ReadonlyArray<{ type: string; seq: number }>
    expect(messages[0]).toMatchObject({ type: "response", status: "success", seq: 1 })
    expect(messages.filter((m) => m.type === "price_update").length).toBeGreaterThanOrEqual(2)
    // The report shows this run's own requests, over every protocol the demo used.
    const groups = (step(doc, "report").data as { groups: ReadonlyArray<{ group: string; requests: number }> }).groups
    expect(groups.map((g) => g.group)).toEqual(expect.arrayContaining(["/price", "/prices", "price", "/ws"]))
    expect(groups.find((g) => g.group === "/price")?.requests).toBe(1)
    for (const s of doc.steps) expect(s.try === null || s.try.includes("$KEY")).toBe(true)
    expect(run.stdout + run.stderr).not.toContain(key)
  }, 30_000)

  it("reports the stream and the report as skipped for a demo key, not failed, and says how to get them", async () => {
    const { key } = await createKey(server, "demo")
    const run = await demo(["--key", key, "--json"])
    expect(run.code, run.stderr).toBe(0)
    const doc = documentOf(run)
    expect(doc.steps.map((s) => [s.step, s.status, s.code])).toEqual([
      ["key", "ok", null], ["price", "ok", null], ["prices", "ok", null], ["udp", "ok", null],
      ["stream", "skipped", "STREAM_NOT_ENABLED"], ["report", "skipped", "LRS_NOT_ENABLED"]
    ])
    expect(doc).toMatchObject({ ok: true, counts: { ok: 4, skipped: 2, failed: 0 } })
    expect(step(doc, "stream").next.join("\n")).toMatch(/partner keys/)
    expect(step(doc, "report").next.join("\n")).toMatch(/associate and partner keys.*LRS add-on/)
  }, 30_000)

  it("without --key: fails the key step with how to get one, runs nothing else, exit 1", async () => {
    const run = await demo(["--json"])
    expect(run.code).toBe(1)
    const doc = documentOf(run)
    expect(step(doc, "key")).toMatchObject({ status: "failed", code: "NO_KEY" })
    const next = step(doc, "key").next.join("\n")
    expect(next).toContain("npx tb keys create --tier demo")
    expect(next).toContain(`${server.baseUrl}/admin/keys`)
    expect(next).toContain(join(server.dataDir, "admin-token"))
    expect(doc.steps.slice(1).map((s) => s.status)).toEqual(["not_run", "not_run", "not_run", "not_run", "not_run"])
    expect(doc.ok).toBe(false)
  })

  it("with a key the server does not know: INVALID_API_KEY, exit 1", async () => {
    const run = await demo(["--key", "tb_thisIsNotAKeyOfThisServer000000000000000", "--json"])
    expect(run.code).toBe(1)
    const doc = documentOf(run)
    expect(step(doc, "key")).toMatchObject({ status: "failed", code: "INVALID_API_KEY" })
    expect(step(doc, "key").next.join("\n")).toMatch(/does not know this key/)
    expect(step(doc, "price").status).toBe("not_run")
  })

  it("with the server down: the key step fails saying how to start it (npm start), exit 1", async () => {
    const dead = await deadPort()
    try {
      const run = await demo(["--key", "tb_whatever", "--json"], { LPO_HTTP_PORT: String(dead.port) })
      expect(run.code).toBe(1)
      const doc = documentOf(run)
      expect(step(doc, "key")).toMatchObject({ status: "failed", code: "UNREACHABLE" })
      expect(step(doc, "key").next.join("\n")).toContain("`npm start`")
      expect(doc.counts).toMatchObject({ failed: 1, not_run: 5 })

      // The same, for people.
      const text = await demo(["--key", "tb_whatever"], { LPO_HTTP_PORT: String(dead.port) })
      expect(text.code).toBe(1)
      expect(text.stdout).toMatch(/FAIL {2}1 key {7}the server does not answer at http:\/\/127\.0\.0\.1:\d+/)
      expect(text.stdout).toMatch(/next: Nothing answers at/)
      expect(text.stdout).toMatch(/0 ok, 0 skipped, 1 failed, 5 not run/)
    } finally {
      await dead.close()
    }
  })

  it("colour when forced (FORCE_COLOR), none when piped, with NO_COLOR, or with --json", async () => {
    const { key } = await createKey(server, "demo")
    const forced = await demo(["--key", key], { FORCE_COLOR: "1" })
    expect(forced.code).toBe(0)
    expect(forced.stdout).toContain(`${ESC}32mok  ${ESC}39m`)
    expect(forced.stdout).toContain(`${ESC}33mskip${ESC}39m`)

    const piped = await demo(["--key", key])
    expect(piped.code).toBe(0)
    expect(piped.stdout).toMatch(/^ok {4}2 price {5}BTC\/USD [\d,.]+: median of \d+ sources/mu)
    expect(piped.stdout).toMatch(/^skip {2}5 stream /mu)
    // Neither colour nor the in-place "step under way" line of a terminal.
    expect(piped.stdout).not.toContain("\u001b")
    expect(piped.stdout).not.toContain("\r")

    const noColor = await demo(["--key", key], { FORCE_COLOR: "1", NO_COLOR: "1" })
    expect(noColor.stdout).not.toContain("\u001b")
    const json = await demo(["--key", key, "--json"], { FORCE_COLOR: "1" })
    expect(json.stdout).not.toContain("\u001b")
    expect(documentOf(json).ok).toBe(true)
  }, 30_000)

  it("bad usage exits 2: a malformed --url or port variable, an unknown flag", async () => {
    const url = await demo(["--url", "ftp://example.com"])
    expect(url.code).toBe(2)
    expect(url.stderr).toContain("--url: expected an http:// or https:// URL")
    expect(url.stdout).toBe("")
    const port = await demo([], { LPO_UDP_PORT: "udp" })
    expect(port.code).toBe(2)
    expect(port.stderr).toContain("configuration error: LPO_UDP_PORT")
    expect((await demo(["--bogus"])).code).toBe(2)
  })
})

describe("useColour", () => {
  it("follows the terminal, FORCE_COLOR and NO_COLOR (which wins)", () => {
    expect(useColour({}, true)).toBe(true)
    expect(useColour({}, false)).toBe(false)
    expect(useColour({ TERM: "dumb" }, true)).toBe(false)
    expect(useColour({ FORCE_COLOR: "1" }, false)).toBe(true)
    expect(useColour({ FORCE_COLOR: "0" }, true)).toBe(false)
    expect(useColour({ NO_COLOR: "1" }, true)).toBe(false)
    expect(useColour({ NO_COLOR: "1", FORCE_COLOR: "1" }, true)).toBe(false)
    expect(useColour({ NO_COLOR: "" }, true)).toBe(true)
  })
})

describe("demoTargets", () => {
  it("takes the server's port variables on 127.0.0.1, or the host of --url", () => {
    expect(demoTargets({}, undefined)).toMatchObject({
      lpo: "http://127.0.0.1:8080", lrs: "http://127.0.0.1:9090", udpHost: "127.0.0.1", lpoUdpPort: 2679, lrsUdpPort: 2680, urlGiven: false
    })
    expect(demoTargets({ LPO_HTTP_PORT: "18080", LRS_HTTP_PORT: "19090", LPO_UDP_PORT: "12679" }, undefined))
      .toMatchObject({ lpo: "http://127.0.0.1:18080", lrs: "http://127.0.0.1:19090", lpoUdpPort: 12679 })
    expect(demoTargets({}, "http://localhost:8181/")).toMatchObject({ lpo: "http://localhost:8181", lrs: "http://localhost:9090", udpHost: "127.0.0.1", urlGiven: true })
    expect(demoTargets({}, "https://[::1]:8443")).toMatchObject({ lpo: "https://[::1]:8443", lrs: "https://[::1]:9090", udpHost: "::1" })
    expect(demoTargets({ LRS_HTTP_PORT: "0" }, undefined)).toMatch(/^configuration error: LRS_HTTP_PORT/)
    expect(demoTargets({}, "not a url")).toMatch(/^--url:/)
  })
})

describe("renderStep", () => {
  const failed: StepResult = {
    step: "udp", status: "failed", summary: "no reply", details: ["sent: v1 price $KEY BTC/USD demo1"], code: "TIMEOUT",
    next: ["first hint", "second hint"], try: "printf …", ms: 2000, data: null
  }

  it("puts the status, the step's number and name first, then details, try: and next:", () => {
    expect(renderStep(failed, palette(false)).split("\n")).toEqual([
      "FAIL  4 udp       no reply",
      "                  sent: v1 price $KEY BTC/USD demo1",
      "                  try: printf …",
      "                  next: first hint",
      "                        second hint"
    ])
    expect(renderStep(failed, palette(true))).toContain(`${ESC}31m${ESC}1mFAIL${ESC}22m${ESC}39m`)
  })
})
