/**
 * Webhook management and delivery end to end: `tb serve` (ALL, simulated feeds, real PostgreSQL,
 * WEBHOOK_ALLOW_PRIVATE=true) as a child process, a loopback receiver. Configure (limits, tiers,
 * targets), verify (signed webhook.verify, activation), price deliveries signed as Standard
 * Webhooks (checked by `standardwebhooks`), rotation with both signatures, assets, status, delete,
 * the envelope's service, /webhook/* on the report server's port, usage rows with the key.
 * Runs the built CLI (`npm run build`) through test/support/server.ts's startServer.
 */
import { execFileSync } from "node:child_process"
import { createHmac } from "node:crypto"
import { Webhook as StandardWebhook } from "standardwebhooks"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type RunningServer, startServer } from "./support/server.ts"
import { dropDatabase, freshDatabase } from "./support/services.ts"
import { type Receiver, receiver, udpReceiver } from "./webhook.support.ts"

interface Answer {
  readonly status: number
  readonly body: { readonly success: boolean; readonly service: string; readonly code: string; readonly data: Record<string, unknown> | null }
}

describe("webhooks end to end (tb serve, ALL)", () => {
  const dbUrl = freshDatabase("webhook_api")
  let server: RunningServer
  let lpo = ""
  let lrs = ""
  let adminToken = ""
  const output = () => server.output()
  let rx: Receiver

  beforeAll(async () => {
    rx = await receiver()
    // startServer picks every port free and tries again should another process take one first.
    server = await startServer({ SERVER_TYPE: "ALL", DATABASE_URL: dbUrl, WEBHOOK_ALLOW_PRIVATE: "true" }, 90_000)
    lpo = server.baseUrl
    lrs = `http://127.0.0.1:${server.env["LRS_HTTP_PORT"]}`
    adminToken = server.adminToken
  }, 120_000)

  afterAll(async () => {
    await server?.stop("SIGKILL")
    await rx.close()
    dropDatabase(dbUrl)
  })

  const call = async (base: string, method: string, path: string, headers: Record<string, string>, body?: unknown): Promise<Answer> => {
    const res = await fetch(`${base}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
    return { status: res.status, body: await res.json() as Answer["body"] }
  }
  const keyOf = async (tier: string) => {
    const r = await call(lpo, "POST", "/admin/keys", { "x-admin-token": adminToken }, { tier })
    expect(r.status).toBe(201)
    return r.body.data as { key: string; key_id: string }
  }
  const waitFor = async (what: string, check: () => boolean, ms = 20_000) => {
    const deadline = Date.now() + ms
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out: ${what}\n${output().slice(-2000)}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  const verifyWith = (secret: string, i: number) => {
    const r = rx.received[i]!
    return new StandardWebhook(secret).verify(r.body, {
      "webhook-id": String(r.headers["webhook-id"]), "webhook-timestamp": String(r.headers["webhook-timestamp"]), "webhook-signature": String(r.headers["webhook-signature"])
    }) as Record<string, unknown>
  }

  it("a UDP-only webhook: verified by the call itself, then signed datagrams", async () => {
    const udp = await udpReceiver()
    try {
      const { key } = await keyOf("partner")
      const auth = { "x-api-key": key }
      const configured = await call(lpo, "POST", "/webhook/configure", auth, { udp: `127.0.0.1:${udp.port}`, assets: ["ETH"], heartbeat_s: 1 })
      expect(configured.status).toBe(201)
      const { webhook_id, secret } = configured.body.data as { webhook_id: string; secret: string }
      const verified = await call(lpo, "POST", "/webhook/verify", auth)
      expect(verified.body.data).toMatchObject({ webhook_id, status: "active", url: null, udp: { sent: true, error: null } })
      await waitFor("the verify datagram and two price datagrams", () => udp.datagrams.length >= 3)
      const key32 = Buffer.from(secret.slice("whsec_".length), "base64")
      const bodies = udp.datagrams.map((d) => {
        const [version, signature, ...rest] = d.split(" ")
        const json = rest.join(" ")
        expect(version).toBe("v1")
        expect(signature).toBe(createHmac("sha256", key32).update(`${webhook_id}.${json}`).digest("base64"))
        return JSON.parse(json) as Record<string, unknown>
      })
      expect(bodies[0]).toMatchObject({ type: "webhook.verify", webhook_id })
      expect(bodies.slice(1, 3)).toMatchObject([{ type: "price.update", seq: 1, asset: "ETH" }, { type: "price.update", seq: 2, asset: "ETH" }])
      expect((await call(lpo, "DELETE", "/webhook", auth)).status).toBe(200)
    } finally {
      udp.close()
    }
  }, 60_000)

  it("configure, verify, signed price deliveries in seq order, rotation, assets, status, delete", async () => {
    const { key, key_id } = await keyOf("associate")
    const auth = { "x-api-key": key }

    // Refusals: no key; a tier without webhooks; past the tier's limit; no target; a bad url.
    const noKey = await call(lpo, "GET", "/webhook/status", {})
    expect([noKey.status, noKey.body.code, noKey.body.service]).toEqual([401, "MISSING_API_KEY", "WEBHOOK"])
    const demo = await keyOf("demo")
    const demoAnswer = await call(lpo, "POST", "/webhook/configure", { "x-api-key": demo.key }, { url: rx.url, assets: ["BTC"] })
    expect([demoAnswer.status, demoAnswer.body.code]).toEqual([400, "BAD_REQUEST"])
    expect(JSON.stringify(demoAnswer.body.data)).toMatch(/tier demo/)
    const tooMany = await call(lpo, "POST", "/webhook/configure", auth, { url: rx.url, assets: Array.from({ length: 26 }, (_, i) => `A${i}`) })
    expect([tooMany.status, tooMany.body.code]).toEqual([400, "BAD_REQUEST"])
    expect(JSON.stringify(tooMany.body.data)).toMatch(/at most 25 on tier associate/)
    expect((await call(lpo, "POST", "/webhook/configure", auth, { assets: ["BTC"] })).status).toBe(400)
    expect((await call(lpo, "POST", "/webhook/configure", auth, { url: "ftp://x/", assets: ["BTC"] })).status).toBe(400)
    expect((await call(lpo, "GET", "/webhook/status", auth)).body.code).toBe("NOT_FOUND")

    // Configure: 201, the secret once, pending until verified (no deliveries).
    const configured = await call(lpo, "POST", "/webhook/configure", auth, { url: rx.url, assets: ["btc"], heartbeat_s: 1, deviation_bps: 10_000 })
    expect([configured.status, configured.body.service, configured.body.code]).toEqual([201, "WEBHOOK", "OK"])
    const data = configured.body.data as { webhook_id: string; secret: string; status: string; assets: Array<string>; heartbeat_s: number; deviation_bps: number }
    expect(data.secret).toMatch(/^whsec_/)
    expect(data).toMatchObject({ status: "pending_verification", assets: ["BTC"], heartbeat_s: 1, deviation_bps: 10_000 })
    await new Promise((r) => setTimeout(r, 2_500))
    expect(rx.received.length).toBe(0)

    // Verify: one signed webhook.verify; activates.
    const verified = await call(lpo, "POST", "/webhook/verify", auth)
    expect(verified.body.data).toMatchObject({ webhook_id: data.webhook_id, status: "active", url: { status_code: 200, error: null }, udp: null })
    expect(verifyWith(data.secret, 0)).toMatchObject({ type: "webhook.verify", webhook_id: data.webhook_id })

    // Price deliveries (heartbeat 1 s), signed, seq 1, 2, 3 …
    await waitFor("three price deliveries", () => rx.received.length >= 4)
    const prices = rx.received.slice(1).map((_, i) => verifyWith(data.secret, i + 1))
    expect(prices.map((p) => p["seq"])).toEqual(prices.map((_, i) => i + 1))
    expect(prices[0]).toMatchObject({ type: "price.update", webhook_id: data.webhook_id, asset: "BTC", quote: "USD", reason: "heartbeat" })
    expect(typeof prices[0]!["price"]).toBe("number")

    // Rotation: a new secret; deliveries verify with the new one and with the old one.
    const rotated = await call(lpo, "POST", "/webhook/configure", auth, { url: rx.url, assets: ["BTC"], rotate_secret: true })
    const newSecret = (rotated.body.data as { secret: string }).secret
    expect(newSecret).toMatch(/^whsec_/)
    expect(newSecret).not.toBe(data.secret)
    expect((rotated.body.data as { status: string }).status).toBe("active")
    const after = rx.received.length
    await waitFor("deliveries after the rotation", () => rx.received.length >= after + 3)
    const last = rx.received.length - 1
    expect(String(rx.received[last]!.headers["webhook-signature"]).split(" ")).toHaveLength(2)
    expect(verifyWith(newSecret, last)["seq"]).toBe(verifyWith(data.secret, last)["seq"])

    // Assets.
    const setAssets = await call(lpo, "POST", "/webhook/assets", auth, { assets: ["ETH", "BTC/USDT"] })
    expect(setAssets.body.data).toEqual({ assets: ["ETH", "BTC/USDT"] })
    expect((await call(lpo, "GET", "/webhook/assets", auth)).body.data).toEqual({ assets: ["ETH", "BTC/USDT"] })
    await waitFor("an ETH delivery", () => rx.received.some((r) => r.body.includes('"asset":"ETH"')))

    // Status.
    const status = await call(lpo, "GET", "/webhook/status", auth)
    expect(status.body.data).toMatchObject({ webhook_id: data.webhook_id, status: "active", disabled_reason: null, consecutive_failures: 0, last_status_code: 200 })
    expect((status.body.data as { deliveries_24h: number }).deliveries_24h).toBeGreaterThan(0)

    // The report server's port points to the LPO's.
    const elsewhere = await call(lrs, "GET", "/webhook/status", auth)
    expect([elsewhere.status, elsewhere.body.code, elsewhere.body.service]).toEqual([404, "NOT_FOUND", "WEBHOOK"])
    expect(JSON.stringify(elsewhere.body.data)).toMatch(/LPO_HTTP_PORT/)
    const openapi = await (await fetch(`${lpo}/openapi.json`)).json() as { paths: Record<string, unknown> }
    for (const p of ["/webhook/configure", "/webhook/verify", "/webhook/status", "/webhook/assets", "/webhook"]) expect(Object.keys(openapi.paths)).toContain(p)

    // Delete: deliveries stop.
    const removed = await call(lpo, "DELETE", "/webhook", auth)
    expect(removed.body.data).toEqual({ webhook_id: data.webhook_id, deleted: true })
    await new Promise((r) => setTimeout(r, 1_500))
    const stopped = rx.received.length
    await new Promise((r) => setTimeout(r, 2_500))
    expect(rx.received.length).toBe(stopped)
    expect((await call(lpo, "GET", "/webhook/status", auth)).status).toBe(404)

    // Usage rows: the management answers carry the key (service WEBHOOK), every delivery attempt is a row.
    expect(await server.stop("SIGTERM")).toBe(0)
    const psql = (q: string) => execFileSync("psql", [dbUrl, "-qAt", "-c", q], { encoding: "utf8" }).trim()
    expect(Number(psql(`SELECT count(*) FROM usage_logs WHERE api_key_id = '${key_id}' AND service = 'WEBHOOK' AND endpoint = '/webhook/configure' AND status_code = 201`))).toBe(2)
    expect(Number(psql(`SELECT count(*) FROM usage_logs WHERE api_key_id = '${key_id}' AND service = 'WEBHOOK' AND endpoint = '/webhook/configure' AND status_code = 400`))).toBe(3)
    expect(Number(psql(`SELECT count(*) FROM usage_logs WHERE api_key_id = '${key_id}' AND service = 'WEBHOOK' AND endpoint = 'webhook.verify' AND protocol = 'http' AND status_code = 200`))).toBe(1)
    expect(Number(psql(`SELECT count(*) FROM usage_logs WHERE api_key_id = '${key_id}' AND service = 'WEBHOOK' AND endpoint = 'price.update'`))).toBe(rx.received.length - 1)
  }, 120_000)
})

describe("webhook targets with WEBHOOK_ALLOW_PRIVATE unset (tb serve, APP_SERVER)", () => {
  const dbUrl = freshDatabase("webhook_api_ssrf")
  let server: RunningServer | undefined
  afterAll(async () => {
    await server?.stop("SIGKILL")
    dropDatabase(dbUrl)
  })

  it("refuses loopback, private and unspecified targets (a name resolving to 127.0.0.1 too) and plain http://", async () => {
    // startServer picks the ports and tries again should another process take one first.
    server = await startServer({ DATABASE_URL: dbUrl, WEBHOOK_ALLOW_PRIVATE: "" }, 90_000)
    const lpo = server.baseUrl
    const adminToken = server.adminToken
    const created = await fetch(`${lpo}/admin/keys`, { method: "POST", headers: { "x-admin-token": adminToken }, body: JSON.stringify({ tier: "partner" }) })
    const key = ((await created.json()) as { data: { key: string } }).data.key
    const configure = async (target: Record<string, string>) => {
      const res = await fetch(`${lpo}/webhook/configure`, { method: "POST", headers: { "x-api-key": key }, body: JSON.stringify({ ...target, assets: ["BTC"] }) })
      return { status: res.status, body: await res.json() as { code: string; data: { error?: string } | null } }
    }
    for (const [target, why] of [
      [{ url: "https://localhost:8443/hook" }, /localhost resolves to .*loopback/],
      [{ url: "https://127.0.0.1/hook" }, /loopback/],
      [{ url: "https://[::ffff:10.0.0.1]/hook" }, /private/],
      [{ url: "https://169.254.169.254/latest" }, /link-local/],
      [{ url: "https://0.0.0.0/" }, /unspecified/],
      [{ url: "http://example.com/hook" }, /https:\/\//],
      [{ udp: "localhost:9000" }, /loopback/],
      [{ udp: "[::1]:9000" }, /loopback/]
    ] as const) {
      const r = await configure(target)
      expect([r.status, r.body.code], JSON.stringify(target)).toEqual([400, "BAD_REQUEST"])
      expect(r.body.data?.error, JSON.stringify(target)).toMatch(why)
    }
  }, 120_000)
})
