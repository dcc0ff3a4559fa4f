/**
 * The webhook SSRF guard: addresses a webhook may not reach (IPv4, IPv6, IPv4-mapped), a DNS name
 * resolving to 127.0.0.1 refused at configuration and again at connect time (the connection's
 * own lookup), plain http:// refused, all of it allowed with WEBHOOK_ALLOW_PRIVATE=true.
 */
import { describe, expect, it } from "vitest"
import { isForbiddenAddress, parseUdpTarget, parseWebhookUrl } from "../src/domain/webhook.ts"
import { checkHost, makeHttpSender, makeUdpSender } from "../src/layers/webhooks/webhookNet.ts"
import { receiver, udpReceiver } from "./webhook.support.ts"

describe("webhook SSRF guard", () => {
  it("refuses loopback, private, link-local, unspecified and mapped addresses; allows public ones", () => {
    for (const a of [
      "127.0.0.1", "127.255.0.9", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.0.10", "169.254.169.254", "0.0.0.0", "100.64.0.1",
      "::", "::1", "fe80::1", "fd12:3456::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:7f00:1", "0:0:0:0:0:ffff:a00:1", "::ffff:192.168.1.1", "::127.0.0.1"
    ]) expect(isForbiddenAddress(a), a).toBe(true)
    for (const a of ["8.8.8.8", "1.1.1.1", "172.32.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]) expect(isForbiddenAddress(a), a).toBe(false)
    expect(isForbiddenAddress("not-an-address")).toBe(true)
  })

  it("urls: https only, unless private targets are allowed; no credentials; udp targets host:port", () => {
    expect(parseWebhookUrl("http://example.com/hook", false)).toMatch(/https/)
    expect(parseWebhookUrl("http://example.com/hook", true)).toBeInstanceOf(URL)
    expect(parseWebhookUrl("https://user:pw@example.com/", false)).toMatch(/credentials/)
    expect(parseWebhookUrl("ftp://example.com/", true)).toMatch(/https/)
    expect(parseWebhookUrl("https://example.com/hook", false)).toBeInstanceOf(URL)
    expect(parseUdpTarget("example.com:9000")).toEqual({ host: "example.com", port: 9000 })
    expect(parseUdpTarget("[::1]:9000")).toEqual({ host: "::1", port: 9000 })
    expect(parseUdpTarget("example.com")).toMatch(/host:port/)
    expect(parseUdpTarget("example.com:70000")).toMatch(/host:port/)
  })

  it("configuration: a name resolving to 127.0.0.1 (localhost) and literal private addresses are refused; allowed with WEBHOOK_ALLOW_PRIVATE", async () => {
    expect(await checkHost("localhost", false)).toMatch(/localhost resolves to (127\.0\.0\.1|::1).*WEBHOOK_ALLOW_PRIVATE/)
    expect(await checkHost("127.0.0.1", false)).toMatch(/loopback/)
    expect(await checkHost("[::ffff:127.0.0.1]", false)).toMatch(/loopback/)
    expect(await checkHost("10.0.0.8", false)).toMatch(/private/)
    expect(await checkHost("localhost", true)).toBeUndefined()
    expect(await checkHost("127.0.0.1", true)).toBeUndefined()
    expect(await checkHost("no-such-host.invalid", false)).toMatch(/does not resolve/)
  })

  it("connect time: the connection's own lookup refuses a name that resolves to loopback, so nothing reaches the receiver", async () => {
    const rx = await receiver()
    const udp = await udpReceiver()
    try {
      // Allowed (the test's setting): both arrive.
      const open = makeHttpSender({ allowPrivate: true })
      expect((await open.post(new URL(`http://localhost:${rx.port}/hook`), {}, "{}", 5_000)).status).toBe(200)
      open.close()
      // Not allowed: refused in the lookup of the connection itself (and http:// refused before that).
      const guarded = makeHttpSender({ allowPrivate: false })
      const viaName = await guarded.post(new URL(`https://localhost:${rx.port}/hook`), {}, "{}", 5_000)
      expect(viaName.status).toBe(0)
      expect(viaName.error).toMatch(/localhost resolves to .*loopback/)
      const viaLiteral = await guarded.post(new URL(`https://[::ffff:127.0.0.1]:${rx.port}/hook`), {}, "{}", 5_000)
      expect(viaLiteral.status).toBe(0)
      expect(viaLiteral.error).toMatch(/loopback/)
      const plain = await guarded.post(new URL(`http://example.com/hook`), {}, "{}", 5_000)
      expect(plain.error).toMatch(/http:\/\//)
      guarded.close()
      expect(rx.received.length).toBe(1)

      const udpGuarded = makeUdpSender({ allowPrivate: false })
      expect(await udpGuarded.send("localhost", udp.port, "v1 x {}")).toMatch(/loopback/)
      expect(await udpGuarded.send("127.0.0.1", udp.port, "v1 x {}")).toMatch(/loopback/)
      udpGuarded.close()
      const udpOpen = makeUdpSender({ allowPrivate: true })
      expect(await udpOpen.send("localhost", udp.port, "v1 y {}")).toBeUndefined()
      await new Promise((r) => setTimeout(r, 100))
      udpOpen.close()
      expect(udp.datagrams).toEqual(["v1 y {}"])
    } finally {
      udp.close()
      await rx.close()
    }
  })
})
