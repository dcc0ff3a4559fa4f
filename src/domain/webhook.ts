/**
 * Webhook push, the pure parts (spec "Webhook push"): targets and assets as a subscriber writes
 * them, the addresses a webhook may not reach, Standard Webhooks signatures and UDP datagrams, the
 * body of a delivery, and when a (webhook, asset) is due.
 */
import { createHmac, randomBytes } from "node:crypto"
import { Webhook } from "standardwebhooks"
import { BlockList, isIP } from "node:net"

export const WEBHOOK_STATUSES = ["pending_verification", "active", "disabled"] as const
export type WebhookStatus = (typeof WEBHOOK_STATUSES)[number]

export const DEFAULT_DEVIATION_BPS = 50
export const DEFAULT_HEARTBEAT_S = 60
export const MIN_HEARTBEAT_S = 1
export const MAX_HEARTBEAT_S = 86_400
export const MAX_DEVIATION_BPS = 10_000
/** 2xx within this is success; past it the attempt counts as status 0. */
export const DELIVERY_TIMEOUT_MS = 10_000
/** Waits before each retry of a failed HTTPS delivery; past the last, the last repeats. */
export const RETRY_DELAYS_MS = [5_000, 30_000, 120_000, 600_000, 1_800_000] as const
/** After a rotation the old secret signs beside the new one this long. */
export const ROTATION_OVERLAP_MS = 24 * 3_600_000
export const SECRET_PREFIX = "whsec_"
/** Random bytes in a signing secret (Standard Webhooks: 24–64). */
export const SECRET_BYTES = 32

/** The wait before retry number `retry` (1-based). */
export const retryDelayMs = (retry: number): number => RETRY_DELAYS_MS[Math.min(retry, RETRY_DELAYS_MS.length) - 1]!

/** One watched market of a webhook: `BTC` means BTC/USD. */
export interface WebhookAsset {
  readonly asset: string
  readonly quote: string
}

const SYMBOL = /^[A-Z0-9]{1,20}$/

/** `BTC` or `eth/usdt` → {asset, quote} upper-cased, or what is wrong with it. */
export const parseWebhookAsset = (text: string): WebhookAsset | string => {
  const [asset = "", quote = "USD", ...rest] = text.trim().toUpperCase().split("/")
  if (rest.length > 0 || !SYMBOL.test(asset) || !SYMBOL.test(quote)) return `asset ${JSON.stringify(text).slice(0, 40)}: expected like BTC or ETH/USDT`
  return { asset, quote }
}

/** The asset as stored and shown: `BTC` for BTC/USD, `ETH/USDT` otherwise. */
export const assetName = (a: WebhookAsset): string => (a.quote === "USD" ? a.asset : `${a.asset}/${a.quote}`)

/** A UDP target `host:port` (`[v6]:port` for an IPv6 literal). */
export interface UdpTarget {
  readonly host: string
  readonly port: number
}

export const parseUdpTarget = (text: string): UdpTarget | string => {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]{1,253})):(\d{1,5})$/.exec(text.trim())
  const port = m === null ? 0 : Number(m[3])
  if (m === null || port < 1 || port > 65_535) return "udp: expected host:port (an IPv6 address as [addr]:port)"
  const host = m[1] ?? m[2]!
  if (m[1] !== undefined && isIP(host) !== 6) return "udp: not an IPv6 address in [ ]"
  return { host, port }
}

/** An https:// URL (http:// only when private targets are allowed), without credentials; or what is wrong. */
export const parseWebhookUrl = (text: string, allowPrivate: boolean): URL | string => {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return "url: not a URL"
  }
  if (text.length > 2000) return "url: longer than 2000 characters"
  if (url.protocol === "http:" && !allowPrivate) return "url: must be https:// (plain http:// only with WEBHOOK_ALLOW_PRIVATE=true)"
  if (url.protocol !== "https:" && url.protocol !== "http:") return "url: must be https://"
  if (url.username !== "" || url.password !== "") return "url: credentials in the URL are not allowed"
  if (url.hostname === "") return "url: no host"
  return url
}

/** Loopback, private, link-local, unspecified, shared (CGNAT), multicast and reserved ranges. */
const forbidden = (() => {
  const list = new BlockList()
  for (const [net, bits] of [
    ["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
    ["192.0.0.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["224.0.0.0", 4], ["240.0.0.0", 4]
  ] as const) list.addSubnet(net, bits, "ipv4")
  for (const [net, bits] of [
    ["::", 96], ["::1", 128], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8], ["64:ff9b::", 96], ["2001:db8::", 32]
  ] as const) list.addSubnet(net, bits, "ipv6")
  return list
})()

/**
 * The IPv4 address inside an IPv4-mapped or -compatible IPv6 address (`::ffff:127.0.0.1`,
 * `::ffff:7f00:1`, `::127.0.0.1`): the URL parser writes every spelling as `::ffff:7f00:1`.
 */
const embeddedIpv4 = (v6: string): string | undefined => {
  const canonical = new URL(`http://[${v6}]/`).hostname.slice(1, -1)
  const m = /^::(?:ffff:)?([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical)
  if (m === null) return undefined
  const hi = parseInt(m[1]!, 16)
  const lo = parseInt(m[2]!, 16)
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`
}

/** True for an address a webhook may not reach (unless WEBHOOK_ALLOW_PRIVATE=true); non-addresses count as forbidden. */
export const isForbiddenAddress = (address: string): boolean => {
  const family = isIP(address)
  if (family === 4) return forbidden.check(address, "ipv4")
  if (family !== 6) return true
  const inner = embeddedIpv4(address)
  if (inner !== undefined) return forbidden.check(inner, "ipv4")
  return forbidden.check(address, "ipv6")
}

/** A new signing secret: `whsec_` + base64 of CSPRNG bytes. */
export const newSigningSecret = (): string => SECRET_PREFIX + randomBytes(SECRET_BYTES).toString("base64")

/** The HMAC key of a `whsec_` secret (the base64 after the prefix, as Standard Webhooks reads it). */
export const secretKeyBytes = (secret: string): Buffer =>
  Buffer.from(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret, "base64")

/**
 * `webhook-signature`: one `v1,<base64>` per secret (the new one first during a rotation),
 * space-separated, each made by the Standard Webhooks reference library (`standardwebhooks`), the
 * code receivers verify with.
 */
export const standardSignature = (keys: ReadonlyArray<Buffer>, id: string, timestampS: number, body: string): string =>
  keys.map((k) => new Webhook(k, { format: "raw" }).sign(id, new Date(timestampS * 1000), body)).join(" ")

/** A UDP delivery: `v1 <base64 HMAC-SHA256 of "{webhook_id}.{json}"> <json>` (signed with the current secret). */
export const udpDatagram = (key: Buffer, webhookId: string, json: string): string =>
  `v1 ${createHmac("sha256", key).update(`${webhookId}.${json}`).digest("base64")} ${json}`

export type DeliveryReason = "deviation" | "heartbeat"

/** A price delivery's body; fields in the spec's order. */
export const priceUpdateBody = (p: {
  readonly webhookId: string
  readonly seq: number
  readonly asset: string
  readonly quote: string
  readonly price: number
  readonly ts: number
  readonly now: number
  readonly reason: DeliveryReason
}): string =>
  `{"type":"price.update","webhook_id":${JSON.stringify(p.webhookId)},"seq":${p.seq},"asset":${JSON.stringify(p.asset)},` +
  `"quote":${JSON.stringify(p.quote)},"price":${p.price},"ts":${p.ts},"age_ms":${Math.max(0, p.now - p.ts)},"reason":"${p.reason}"}`

/** The one `webhook.verify` delivery POST /webhook/verify sends. */
export const verifyBody = (webhookId: string, now: number): string =>
  `{"type":"webhook.verify","webhook_id":${JSON.stringify(webhookId)},"ts":${now}}`

/** What was last delivered for one (webhook, asset). */
export interface LastDelivered {
  readonly price: number
  readonly at: number
}

/**
 * Whether (webhook, asset) is due now: the price moved at least `deviationBps` from the last
 * delivered one, or `heartbeatMs` passed since that delivery (or nothing was delivered yet).
 */
export const dueReason = (last: LastDelivered | undefined, price: number, now: number, deviationBps: number, heartbeatMs: number): DeliveryReason | undefined => {
  if (last === undefined) return "heartbeat"
  if (last.price !== 0 && (Math.abs(price - last.price) / Math.abs(last.price)) * 10_000 >= deviationBps) return "deviation"
  if (now - last.at >= heartbeatMs) return "heartbeat"
  return undefined
}
