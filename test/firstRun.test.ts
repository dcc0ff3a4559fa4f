import { spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { EXCHANGES } from "../src/domain/price.ts"
import { deadPort, freePort } from "./support/server.ts"

const CLI = join(import.meta.dirname, "..", "dist", "src", "programs", "cli.js")

/** `npm start` with live feeds and no internet: every exchange's WebSocket and REST URL refuses. */
describe("a first run offline (live feeds, no exchange reachable)", () => {
  let stop: () => Promise<void>
  let baseUrl: string
  let output = ""
  let closeDead: () => Promise<void>

  beforeAll(async () => {
    const dead = await deadPort()
    closeDead = dead.close
    const port = await freePort()
    const feedUrls = Object.fromEntries(EXCHANGES.flatMap((e) => [
      [`FEED_URL_${e.toUpperCase()}`, `ws://127.0.0.1:${dead.port}/ws`],
      [`FEED_REST_URL_${e.toUpperCase()}`, `http://127.0.0.1:${dead.port}`]
    ]))
    const child = spawn(process.execPath, [CLI, "serve", "--mode", "APP_SERVER"], {
      env: {
        ...process.env, ...feedUrls, FEEDS: "live", LPO_HTTP_PORT: String(port), LPO_UDP_PORT: String(await freePort()),
        BIND_HOST: "127.0.0.1", DATA_DIR: mkdtempSync(join(tmpdir(), "tb-offline-")), LOG_LEVEL: "Info"
      },
      stdio: ["ignore", "pipe", "pipe"]
    })
    child.stdout.on("data", (d: Buffer) => void (output += d.toString()))
    child.stderr.on("data", (d: Buffer) => void (output += d.toString()))
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
    stop = async () => {
      child.kill("SIGTERM")
      await exited
    }
    baseUrl = `http://127.0.0.1:${port}`
    for (let i = 0; i < 150; i++) {
      if ((await fetch(`${baseUrl}/health`).catch(() => undefined))?.status === 200) return
      await new Promise((r) => setTimeout(r, 200))
    }
    throw new Error(`server did not start:\n${output.slice(-3000)}`)
  }, 60_000)

  afterAll(async () => {
    await stop?.()
    await closeDead?.()
  })

  it("says in /ready what is wrong and what to do, with Retry-After", async () => {
    const res = await fetch(`${baseUrl}/ready`)
    expect(res.status).toBe(503)
    expect(res.headers.get("retry-after")).not.toBeNull()
    const body = await res.json() as { code: string; data: { problem?: string } }
    expect(body.code).toBe("SYSTEM_BUSY")
    expect(body.data.problem).toMatch(/FEEDS=simulated/)
  })

  it("says it in the log too", async () => {
    for (let i = 0; i < 60 && !output.includes("FEEDS=simulated"); i++) await new Promise((r) => setTimeout(r, 500))
    expect(output).toMatch(/no exchange feed has connected.*FEEDS=simulated/)
  }, 40_000)
})
