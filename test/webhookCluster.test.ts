/**
 * Several WEBHOOK_SERVER nodes (two `tb serve --mode WEBHOOK_SERVER` processes sharing PostgreSQL
 * and Redis DB 13): every webhook is delivered by one node at a time; SIGKILL the node holding
 * some of them and the other takes them over, with no gap longer than 30 s and no `seq` delivered
 * twice. Runs the built CLI (`npm run build`; TB_CLI picks another build).
 */
import { Effect, Redacted } from "effect"
import { PgClient } from "@effect/sql-pg"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { createServer } from "node:http"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { migrate } from "../src/layers/migrations/index.ts"
import { makeWebhookStore } from "../src/layers/webhooks/WebhookStoreLive.ts"
import { dropDatabase, freshDatabase, freshRedis, REDIS_HOST, REDIS_PORT } from "./support/services.ts"

const CLI = process.env["TB_CLI"] ?? join(import.meta.dirname, "..", "dist", "src", "programs", "cli.js")
const REDIS_DB = 13
const WEBHOOKS = 8

interface Delivery {
  readonly webhook: string
  readonly seq: number
  readonly at: number
}

describe("webhook delivery across two WEBHOOK_SERVER nodes", () => {
  const dbUrl = freshDatabase("webhook_cluster")
  const redisUrl = freshRedis(REDIS_DB)
  const children: Array<ChildProcess> = []
  afterAll(() => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL")
    dropDatabase(dbUrl)
  })

  it("a killed node's webhooks move to the other within 30 s, and no seq is delivered twice", async () => {
    const sealKey = randomBytes(32)
    const deliveries: Array<Delivery> = []
    const receiver = createServer((req, res) => {
      let body = ""
      req.on("data", (c: Buffer) => void (body += c.toString()))
      req.on("end", () => {
        const parsed = JSON.parse(body) as { webhook_id: string; seq: number }
        deliveries.push({ webhook: parsed.webhook_id, seq: parsed.seq, at: Date.now() })
        res.writeHead(204).end()
      })
    })
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", () => r()))
    const port = (receiver.address() as { port: number }).port

    // The database, and WEBHOOKS active webhooks sealed with the nodes' key, heartbeat 1 s.
    const ids = await Effect.runPromise(Effect.gen(function*() {
      yield* migrate
      const store = yield* makeWebhookStore(sealKey)
      const out: Array<string> = []
      for (let i = 0; i < WEBHOOKS; i++) {
        const sql = (yield* PgClient.PgClient)
        const key = (yield* sql<{ id: string }>`INSERT INTO api_keys (key_hash, key_prefix, tier) VALUES (${randomBytes(16).toString("hex")}, 'tb_test', 'associate') RETURNING id::text AS id`)[0]!.id
        const { webhook } = yield* store.configure(key, {
          url: `http://127.0.0.1:${port}/hook/${i}`, udp: undefined, assets: [{ asset: "BTC", quote: "USD" }], deviationBps: 10_000, heartbeatS: 1, rotateSecret: false
        }, Date.now())
        yield* store.setStatus(webhook.id, "active", undefined)
        out.push(webhook.id)
      }
      return out
    }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(dbUrl), maxConnections: 2 })), Effect.scoped))

    const start = (node: string) => {
      const child = spawn(process.execPath, [CLI, "serve", "--mode", "WEBHOOK_SERVER"], {
        env: {
          ...process.env, DATABASE_URL: dbUrl, VALKEY_URL: redisUrl, FEEDS: "simulated", LOG_LEVEL: "Warn", NODE_ID: node,
          DATA_DIR: mkdtempSync(join(tmpdir(), `tb-webhook-${node}-`)), WEBHOOK_ALLOW_PRIVATE: "true", WEBHOOK_SECRET_KEY: sealKey.toString("hex")
        },
        stdio: ["ignore", "ignore", "pipe"]
      })
      let stderr = ""
      child.stderr?.on("data", (d: Buffer) => void (stderr += d.toString()))
      children.push(child)
      return { child, stderr: () => stderr }
    }
    const a = start("node-a")
    const b = start("node-b")
    const waitUntil = async (what: string, check: () => boolean, ms: number) => {
      const deadline = Date.now() + ms
      while (!check()) {
        if (Date.now() > deadline) throw new Error(`timed out: ${what}\nA: ${a.stderr().slice(-2000)}\nB: ${b.stderr().slice(-2000)}`)
        await new Promise((r) => setTimeout(r, 100))
      }
    }
    const delivered = (id: string) => deliveries.filter((d) => d.webhook === id)
    await waitUntil("every webhook delivering", () => ids.every((id) => delivered(id).length >= 3), 60_000)
    // Who holds what (the lease's value is the holder's NODE_ID#<random>), once the nodes have seen each
    // other and handed over what the other prefers (rendezvous hashing splits them): the same holders, all
    // held, both nodes holding some, a whole sweep apart.
    const holdersNow = () => ids.map((id) => execFileSync("redis-cli", ["-h", REDIS_HOST, "-p", String(REDIS_PORT), "-n", String(REDIS_DB), "GET", `webhook:lease:${id}`], { encoding: "utf8" }).trim())
    let holders = holdersNow()
    for (let tries = 0; ; tries++) {
      await new Promise((r) => setTimeout(r, 6_000))
      const again = holdersNow()
      const settled = again.every((h, i) => h !== "" && h === holders[i]) && again.some((h) => h.startsWith("node-a#")) && again.some((h) => h.startsWith("node-b#"))
      holders = again
      if (settled) break
      // Generous: on a loaded CI machine a sweep can run late.
      if (tries > 20) throw new Error(`leases never settled on both nodes: ${holders.join(" ")}`)
    }
    const onA = ids.filter((_, i) => holders[i]!.startsWith("node-a#"))
    const onB = ids.filter((_, i) => holders[i]!.startsWith("node-b#"))
    expect(onA.length + onB.length, `holders: ${holders.join(" ")}\nA: ${a.stderr().slice(-1500)}\nB: ${b.stderr().slice(-1500)}`).toBe(WEBHOOKS)
    const [victim, victimIds, survivorIds] = onA.length >= onB.length ? [a, onA, onB] : [b, onB, onA]
    expect(victimIds.length).toBeGreaterThan(0)
    expect(survivorIds.length).toBeGreaterThan(0)

    const killedAt = Date.now()
    victim.child.kill("SIGKILL")
    await waitUntil("the survivor delivering the victim's webhooks", () => victimIds.every((id) => delivered(id).some((d) => d.at > killedAt + 500)), 45_000)
    await new Promise((r) => setTimeout(r, 3_000))

    for (const id of ids) {
      const list = delivered(id)
      // No seq twice, and in order as received.
      const seqs = list.map((d) => d.seq)
      expect(new Set(seqs).size, `webhook ${id}: ${seqs.join(",")}`).toBe(seqs.length)
      expect([...seqs].sort((x, y) => x - y)).toEqual(seqs)
      // No gap longer than 30 s.
      for (let i = 1; i < list.length; i++) expect(list[i]!.at - list[i - 1]!.at, `webhook ${id}`).toBeLessThanOrEqual(30_000)
    }
    // The survivor's own webhooks never paused meanwhile.
    for (const id of survivorIds) {
      const list = delivered(id).filter((d) => d.at >= killedAt - 1_000)
      for (let i = 1; i < list.length; i++) expect(list[i]!.at - list[i - 1]!.at).toBeLessThan(5_000)
    }
    const takeover = Math.max(...victimIds.map((id) => delivered(id).find((d) => d.at > killedAt)!.at - killedAt))
    console.log(`takeover of ${victimIds.length} webhooks after SIGKILL: ${takeover} ms`)
    expect(takeover).toBeLessThanOrEqual(30_000)

    const survivor = victim === a ? b : a
    survivor.child.kill("SIGTERM")
    const code = await new Promise<number | null>((r) => survivor.child.once("exit", (c) => r(c)))
    expect(code).toBe(0)
    receiver.close()
  }, 240_000)
})
