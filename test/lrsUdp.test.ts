/**
 * The LRS's UDP handler (`v1 summary …`) fuzzed like the LPO's UDP: no datagram makes it throw,
 * a malformed or unauthenticated datagram never gets a reply longer than itself, every reply is
 * one line of JSON, and every reply is one usage row (service LRS). Services are stand-ins here;
 * the black-box test (lrs.blackbox) runs the real ones.
 */
import { Deferred, Effect } from "effect"
import fc from "fast-check"
import type { RemoteInfo } from "node:dgram"
import { describe, expect, it } from "vitest"
import { COUNTER, COUNTER_NAMES } from "../src/domain/runtimeCounters.ts"
import { formatUdpRequest } from "../src/domain/udpCodec.ts"
import type { UsageFacts } from "../src/domain/usageChunk.ts"
import type { LrsDeps } from "../src/programs/lrs/lrsApi.ts"
import { encodeSummaryReply, makeUdpSummaryHandler, MAX_SUMMARY_REPLY_BYTES } from "../src/programs/lrs/udpSummaryHandler.ts"
import type { ApiKeyRecord, AuthResult, TierLimits } from "../src/services/ApiKeys.ts"
import type { SummaryGroup } from "../src/services/UsageSummaries.ts"

const GOOD = "tb_goodKeyWithReportsEnabled0123456789"
const NO_LRS = "tb_keyWithoutReports0123456789abcdef"
const tier: TierLimits = {
  tier: "associate", ratePerSec: 500, burst: 1000, monthlyQueries: 50_000_000, lrsReportsPerMonth: 1000, lrsRequiresAddon: false, webhookAssets: 25, partnerWs: false
}
const record = (id: string, lrsEnabled: boolean): ApiKeyRecord => ({
  id, hash: id, prefix: "tb_", tier, lrsEnabled, status: "active", expiresAt: undefined, email: undefined, createdAt: 0
})
const KEYS = new Map([[GOOD, record("key-good", true)], [NO_LRS, record("key-nolrs", false)]])

const group = (service: string): SummaryGroup => ({ group: service, requests: 12, errors: 1, bytes_out: 3456, p50_us: 210, p95_us: 900, p99_us: 1500 })

const setup = (groups: ReadonlyArray<SummaryGroup> = [group("LPO"), group("LRS")], slowLookup?: Effect.Effect<AuthResult>) => {
  const rows: Array<UsageFacts> = []
  const replies: Array<Buffer> = []
  const deps: LrsDeps = {
    apiKeys: {
      authenticate: (plain): AuthResult => {
        if (slowLookup !== undefined && plain?.startsWith("tb_new") === true) return { _tag: "Unknown", hash: plain }
        const key = plain === undefined ? undefined : KEYS.get(plain)
        return key === undefined ? { _tag: "Refused", code: plain === undefined ? "MISSING_API_KEY" : "INVALID_API_KEY", keyId: undefined } : { _tag: "Authorized", key }
      },
      authenticateHash: () => ({ _tag: "Refused", code: "INVALID_API_KEY", keyId: undefined }),
      authenticateSlow: () => slowLookup ?? Effect.succeed({ _tag: "Refused", code: "INVALID_API_KEY", keyId: undefined }),
      create: () => Effect.die("unused"), list: Effect.die("unused"), revoke: () => Effect.die("unused"), invalidate: () => Effect.die("unused"),
      tiers: () => new Map(), reload: Effect.void
    },
    limiter: {
      admit: () => ({ _tag: "Admitted", limit: 1000, remaining: 999, resetSec: 0 }),
      chargeQueries: () => {}, reconcile: Effect.void,
      snapshot: () => ({ trackedKeys: 0, clusterReachable: true, reconciles: 0, reconcileFailures: 0, clusterRps: 0, shedFraction: 0 })
    },
    quota: { admit: (_id, limit) => Effect.succeed({ _tag: "Admitted", limit, used: 1 }), release: () => Effect.void, used: () => Effect.succeed(1) },
    reports: { kind: "database", rows: () => Effect.die("unused") },
    summaries: { summary: () => Effect.succeed({ groups, data_through: null }) },
    cache: { kind: "memory" } as LrsDeps["cache"],
    stats: { values: new Float64Array(COUNTER_NAMES.length), startedAt: 0, snapshot: () => ({}) as never, reset: () => {} }
  }
  const handler = makeUdpSummaryHandler(deps, { record: (f) => void rows.push(f), stats: () => ({}) as never })
  const socket = { send: (reply: Uint8Array) => void replies.push(Buffer.from(reply)) }
  const rinfo: RemoteInfo = { address: "127.0.0.1", family: "IPv4", port: 40000, size: 0 }
  /** Send one datagram and wait until the handler has answered it (or dropped it). */
  const send = async (datagram: Buffer) => {
    const before = replies.length
    handler.onMessage(socket, datagram, rinfo)
    for (let i = 0; i < 100 && handler.pending() > 0; i++) await new Promise((r) => setTimeout(r, 1))
    expect(handler.pending()).toBe(0)
    return replies.length > before ? replies[replies.length - 1] : undefined
  }
  return { send, rows, replies, handler, socket, rinfo, deps }
}

const printable = fc.string({ unit: fc.constantFrom(..."v1 summaryprice2026-12-01T00:00:00Z:+_-/\n\r\tBTCk0".split("")), maxLength: 120 })
const tokens = fc.array(fc.constantFrom("v1", "v2", "summary", "price", GOOD, NO_LRS, "tb_unknownKey123", "2026-12-01", "2026-12-05T10:00:00Z", "2025-01-01", "2026-02-30", "rid-1", "BTC/USD", "", "x".repeat(40)), { maxLength: 7 })
  .map((t) => t.join(" "))
const datagrams = fc.oneof(fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b)), printable.map((s) => Buffer.from(s)), tokens.map((s) => Buffer.from(s)))

describe("LRS UDP summary handler", () => {
  it("never throws; unauthenticated or malformed datagrams never get a reply longer than themselves; every reply is one JSON line and one usage row", async () => {
    await fc.assert(fc.asyncProperty(datagrams, async (datagram) => {
      const t = setup()
      const reply = await t.send(datagram)
      const authenticated = [GOOD, NO_LRS].some((k) => datagram.includes(` ${k}`))
      if (reply === undefined) {
        expect(t.rows).toHaveLength(0)
        return
      }
      if (!authenticated) expect(reply.length).toBeLessThanOrEqual(datagram.length)
      expect(reply.includes(0x0a)).toBe(false)
      const parsed = JSON.parse(reply.toString("utf8")) as Record<string, unknown>
      expect(typeof parsed["ok"]).toBe("boolean")
      expect(t.rows).toHaveLength(1)
      expect(t.rows[0]).toMatchObject({ service: "LRS", protocol: "udp", endpoint: "summary", bytesOut: reply.length })
    }), { numRuns: 600 })
  })

  it("answers a summary to an LRS-enabled key: totals, services, rid, window, data_through", async () => {
    const t = setup()
    const reply = await t.send(Buffer.from(formatUdpRequest({ _tag: "summary", apiKey: GOOD, from: "2026-12-01", to: "2026-12-05T10:00:00Z", rid: "q7" })))
    const parsed = JSON.parse(reply!.toString()) as Record<string, unknown>
    expect(parsed).toMatchObject({ ok: true, rid: "q7", from: "2026-12-01T00:00:00.000Z", to: "2026-12-05T10:00:00.000Z", requests: 24, errors: 2, bytes_out: 6912 })
    const measures = { requests: 12, errors: 1, bytes_out: 3456, p50_us: 210, p95_us: 900, p99_us: 1500 }
    expect(parsed["services"]).toEqual([{ service: "LPO", ...measures }, { service: "LRS", ...measures }])
    expect(typeof parsed["data_through"]).toBe("string")
    expect(t.rows[0]).toMatchObject({ apiKeyId: "key-good", code: "OK" })
  })

  it("refuses a key without reports (LRS_NOT_ENABLED), a window over 93 days back (BAD_REQUEST), and names the LPO's port for a price request", async () => {
    const t = setup()
    expect(JSON.parse((await t.send(Buffer.from(`v1 summary ${NO_LRS} r1`)))!.toString())).toEqual({ ok: false, rid: "r1", code: "LRS_NOT_ENABLED" })
    expect(JSON.parse((await t.send(Buffer.from(`v1 summary ${GOOD} 2020-01-01 2020-01-02 r2`)))!.toString())).toEqual({ ok: false, rid: "r2", code: "BAD_REQUEST" })
    expect(JSON.parse((await t.send(Buffer.from(`v1 price ${GOOD} BTC r3`)))!.toString())).toEqual({ ok: false, rid: "r3", code: "NOT_FOUND" })
    // Unknown key: the error reply is longer than this short probe, so nothing is sent.
    expect(await t.send(Buffer.from("v1 summary k"))).toBeUndefined()
  })

  it("looks up at most 32 unknown keys at once; past that SYSTEM_BUSY at once, and the bound frees as lookups end", async () => {
    const gate = await Effect.runPromise(Deferred.make<AuthResult>())
    const t = setup(undefined, Deferred.await(gate))
    const datagram = (i: number) => Buffer.from(`v1 summary tb_new${String(i).padStart(36, "x")} f${i}`)
    for (let i = 0; i < 32; i++) t.handler.onMessage(t.socket, datagram(i), t.rinfo)
    await new Promise((r) => setTimeout(r, 20))
    expect(t.handler.pending()).toBe(32)
    expect(t.replies).toHaveLength(0)
    t.handler.onMessage(t.socket, datagram(99), t.rinfo)
    await new Promise((r) => setTimeout(r, 20))
    expect(t.replies.map((r) => JSON.parse(r.toString()))).toEqual([{ ok: false, rid: "f99", code: "SYSTEM_BUSY" }])
    await Effect.runPromise(Deferred.succeed(gate, { _tag: "Refused", code: "INVALID_API_KEY", keyId: undefined }))
    for (let i = 0; i < 100 && t.handler.pending() > 0; i++) await new Promise((r) => setTimeout(r, 5))
    expect(t.handler.pending()).toBe(0)
    expect(t.deps.stats.values[COUNTER.db_lookups_in_flight]).toBe(0)
    expect(t.replies).toHaveLength(33)
  })

  it("keeps the reply within one datagram: the per-service list is left out past MAX_SUMMARY_REPLY_BYTES", () => {
    const many = Array.from({ length: 40 }, (_, i) => group(`SERVICE_${i}`))
    const reply = encodeSummaryReply("r", 0, 1, many, 1)
    expect(reply.length).toBeLessThanOrEqual(MAX_SUMMARY_REPLY_BYTES)
    expect(JSON.parse(reply.toString())).toMatchObject({ ok: true, requests: 480 })
  })
})
