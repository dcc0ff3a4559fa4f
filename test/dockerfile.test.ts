import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import { spawn, spawnSync } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { join } from "node:path"
import { appConfig } from "../src/config/AppConfig.ts"
import { contextAllowlist, execForm, healthcheckOf, type Instruction, parseDockerfile, type Stage } from "../scripts/dockerfile.ts"

const root = join(import.meta.dirname, "..")
const dockerfile = parseDockerfile(readFileSync(join(root, "Dockerfile"), "utf8"))
const allow = contextAllowlist(readFileSync(join(root, ".dockerignore"), "utf8"))
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  readonly bin: Record<string, string>
  readonly devDependencies: Record<string, string>
  readonly scripts: Record<string, string>
}
const final = dockerfile.stages.at(-1)!
const only = (stage: Stage, keyword: string): ReadonlyArray<Instruction> => stage.instructions.filter((i) => i.keyword === keyword)
const one = (stage: Stage, keyword: string): Instruction => {
  const all = only(stage, keyword)
  expect(all, `${stage.name}: one ${keyword}`).toHaveLength(1)
  return all[0]!
}
const runs = (stage: Stage) => only(stage, "RUN").map((i) => i.args)
const defaults = Effect.runSync(Effect.gen(function*() {
  return yield* appConfig
}).pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord({})))))

describe("Dockerfile", () => {
  it("builds in one stage and runs from another, both on the Node version package.json pins", () => {
    expect(dockerfile.stages.length).toBeGreaterThanOrEqual(2)
    expect(dockerfile.globalArgs["NODE_VERSION"]).toBe(pkg.devDependencies["node"])
    for (const stage of dockerfile.stages) expect(stage.base).toMatch(new RegExp(`^node:${pkg.devDependencies["node"]!.replaceAll(".", "\\.")}-`))
    const build = dockerfile.stages[0]!
    expect(runs(build).some((r) => /^npm ci\b/.test(r))).toBe(true)
    expect(runs(build)).toContain("npm run build")
    expect(pkg.scripts["build"]).toBeDefined()
  })

  it("installs production dependencies only in the final stage, without install scripts (prepare would need tsc)", () => {
    const installs = runs(final).filter((r) => /\bnpm (ci|install|i)\b/.test(r))
    expect(installs).toHaveLength(1)
    expect(installs[0]).toMatch(/^npm ci\b/)
    expect(installs[0]).toContain("--omit=dev")
    expect(installs[0]).toContain("--ignore-scripts")
    expect(pkg.scripts["prepare"], "the reason for --ignore-scripts").toContain("tsc")
    expect(runs(final).some((r) => r.includes("npm run build") || r.includes("tsc")), "no compiling in the final stage").toBe(false)
  })

  it("copies only the compiled program from the build stage, and the health check from the context", () => {
    const copies = only(final, "COPY")
    const fromBuild = copies.filter((c) => c.flags.some(([k, v]) => k === "from" && v === dockerfile.stages[0]!.name))
    expect(fromBuild.map((c) => c.args)).toEqual(["/app/dist/src ./dist/src"])
    const fromContext = copies.filter((c) => c.flags.length === 0).flatMap((c) => c.args.split(/\s+/).slice(0, -1))
    expect(fromContext).not.toContain("src")
    expect(fromContext).toContain("scripts/healthcheck.mjs")
    // Every context path a stage copies is one .dockerignore lets through.
    for (const stage of dockerfile.stages) {
      for (const copy of only(stage, "COPY").filter((c) => c.flags.length === 0)) {
        for (const source of copy.args.split(/\s+/).slice(0, -1)) {
          expect(allow.some((a) => source === a || source.startsWith(`${a}/`)), `${source} in .dockerignore's allowlist`).toBe(true)
        }
      }
    }
    for (const never of ["node_modules", "dist", "data", ".git", "test", ".env"]) expect(allow).not.toContain(never)
  })

  it("runs as a user that is not root, set after the last RUN", () => {
    const user = one(final, "USER")
    expect(["root", "0", "0:0"]).not.toContain(user.args)
    expect(user.args).not.toMatch(/^0:/)
    const lastRun = only(final, "RUN").at(-1)!
    expect(user.line).toBeGreaterThan(lastRun.line)
  })

  it("starts the CLI as PID 1 (exec form, no shell), `serve` by default, with a HEALTHCHECK", () => {
    const entrypoint = execForm(one(final, "ENTRYPOINT").args)
    expect(entrypoint).toEqual(["node", pkg.bin["tb"]])
    expect(existsSync(join(root, pkg.bin["tb"]!.replace(/^dist\//, "").replace(/\.js$/, ".ts")))).toBe(true)
    expect(execForm(one(final, "CMD").args)).toEqual(["serve"])
    const health = healthcheckOf(one(final, "HEALTHCHECK"))
    expect(health.command).toEqual(["node", "scripts/healthcheck.mjs"])
    expect(Object.keys(health.options).sort()).toEqual(["interval", "retries", "start-period", "timeout"])
    const stopSignal = only(final, "STOPSIGNAL")[0]?.args ?? "SIGTERM"
    expect(stopSignal).toBe("SIGTERM")
  })

  it("exposes the default ports of every listener", () => {
    const exposed = only(final, "EXPOSE").flatMap((e) => e.args.split(/\s+/))
    expect(exposed.sort()).toEqual([
      `${defaults.lpoHttpPort}/tcp`, `${defaults.lpoUdpPort}/udp`, `${defaults.lrsHttpPort}/tcp`, `${defaults.lrsUdpPort}/udp`, `${defaults.metricsPort}/tcp`
    ].sort())
  })
})

/** scripts/healthcheck.mjs against a stand-in listener that answers 200 on `path` only. */
const healthcheckWith = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  new Promise<{ readonly code: number | null; readonly out: string }>((done) => {
    const child = spawn(process.execPath, [join(root, "scripts/healthcheck.mjs"), ...args], { env: { PATH: process.env["PATH"] ?? "", ...env } })
    let out = ""
    child.stdout.on("data", (b: Buffer) => (out += b.toString()))
    child.on("exit", (code) => done({ code, out }))
  })

describe("scripts/healthcheck.mjs", () => {
  it("probes what each command and server type listens on", async () => {
    const server = createServer((req, res) => {
      res.statusCode = req.url === "/health" ? 200 : 404
      res.end()
    })
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    const port = String((server.address() as AddressInfo).port)
    try {
      const lpo = { LPO_HTTP_PORT: port, LRS_HTTP_PORT: port, METRICS_PORT: port }
      for (const mode of ["ALL", "APP_SERVER", "APP_REPORT_SERVER"]) {
        const r = await healthcheckWith(["serve"], { ...lpo, SERVER_TYPE: mode })
        expect(r, mode).toMatchObject({ code: 0 })
        expect(r.out).toContain(`:${port}/health → 200`)
      }
      // The LRS is probed on /openapi.json, webhook delivery and the queued writer on /metrics: the stand-in has neither.
      expect(await healthcheckWith(["serve"], { ...lpo, SERVER_TYPE: "REPORT_SERVER" })).toMatchObject({ code: 1, out: expect.stringContaining("/openapi.json → 404") })
      expect(await healthcheckWith(["serve", "--mode", "WEBHOOK_SERVER"], { ...lpo, SERVER_TYPE: "APP_SERVER" })).toMatchObject({ code: 1, out: expect.stringContaining("/metrics → 404") })
      expect(await healthcheckWith(["queued-writer"], lpo)).toMatchObject({ code: 1, out: expect.stringContaining("/metrics → 404") })
      // Nothing listens for a one-off command; an unknown server type is unhealthy.
      expect(await healthcheckWith(["sync", "--json"], lpo)).toMatchObject({ code: 0 })
      expect(await healthcheckWith(["serve"], { ...lpo, SERVER_TYPE: "NOPE" })).toMatchObject({ code: 1 })
    } finally {
      server.close()
    }
    // Nothing listening at all: a server is unhealthy, a one-off command probes nothing.
    expect(await healthcheckWith(["serve"], { LPO_HTTP_PORT: port })).toMatchObject({ code: 1 })
    expect(await healthcheckWith(["sync"], { LPO_HTTP_PORT: port, METRICS_PORT: port })).toMatchObject({ code: 0, out: expect.stringContaining("no listener to probe") })
  })
})

/**
 * The Dockerfile's steps, run for real in a clean directory (scripts/dockerfile-steps.sh, ~1 min:
 * two npm ci from the npm cache, tsc, three servers started as PID 1 and stopped with SIGTERM).
 * It needs root (setpriv, unshare); elsewhere it is skipped and the script is run by hand.
 */
const canRunSteps = process.getuid?.() === 0 && spawnSync("unshare", ["--pid", "--fork", "--mount-proc", "true"]).status === 0
if (!canRunSteps) console.warn("scripts/dockerfile-steps.sh is skipped here: it needs root (setpriv, unshare); run it by hand where it can run")
describe("scripts/dockerfile-steps.sh", () => {
  it.skipIf(!canRunSteps)("runs the image's steps, and what they make serves, reports healthy and stops cleanly", async () => {
    const result = await new Promise<{ readonly code: number | null; readonly out: string }>((done) => {
      const child = spawn(join(root, "scripts/dockerfile-steps.sh"), [], { env: process.env })
      let out = ""
      child.stdout.on("data", (b: Buffer) => (out += b.toString()))
      child.stderr.on("data", (b: Buffer) => (out += b.toString()))
      child.on("exit", (code) => done({ code, out }))
    })
    expect(result.code, result.out.slice(-4000)).toBe(0)
    expect(result.out).toMatch(/PID 1 in its namespace, uid 1000/)
    expect(result.out).toMatch(/SIGTERM → exit 0/)
    expect(result.out).toMatch(/^OK in /m)
  }, 300_000)
})
