import fc from "fast-check"
import { randomFillSync, randomUUID } from "node:crypto"
import { RESPONSE_CODES, statusOf } from "../../src/domain/errorCodes.ts"
import type { UsageRow } from "../../src/domain/usage.ts"
import { ID_RANDOM_BYTES, makeUsageChunkBuilder, type UsageChunk, type UsageFacts } from "../../src/domain/usageChunk.ts"
import { uuidv7 } from "../../src/domain/uuidv7.ts"

/** Text as hostile as a client can make it (PostgreSQL text cannot hold NUL: `noNul` for rows that go there). */
const text = (noNul: boolean) =>
  fc.string({ unit: "binary", maxLength: 30 }).map((s) => (noNul ? s.replaceAll("\u0000", "\uFFFD") : s))

/** Any facts a server can record. */
export const usageFactsArb = (options: { readonly noNul?: boolean } = {}): fc.Arbitrary<UsageFacts> => {
  const t = text(options.noNul ?? false)
  const maybe = <A>(a: fc.Arbitrary<A>) => fc.option(a, { nil: undefined })
  return fc.record({
    requestId: maybe(t),
    requestSeq: fc.nat({ max: 2 ** 40 }),
    apiKeyId: maybe(fc.uuid()),
    service: fc.constantFrom("LPO", "LRS", "WEBHOOK", "RECEIPT", "ADMIN"),
    protocol: fc.constantFrom("http", "udp", "ws"),
    endpoint: t,
    asset: maybe(t),
    quote: maybe(t),
    source: maybe(t),
    price: maybe(fc.double({ noNaN: true, noDefaultInfinity: true })),
    code: fc.constantFrom(...RESPONSE_CODES),
    status: maybe(fc.integer({ min: 100, max: 599 })),
    latencyUs: fc.nat({ max: 2 ** 31 - 1 }),
    clientIp: t,
    bytesOut: fc.nat({ max: 2 ** 31 - 1 }),
    createdAt: fc.integer({ min: 0, max: 2 ** 47 })
  }, { requiredKeys: ["requestSeq", "apiKeyId", "service", "protocol", "endpoint", "code", "latencyUs", "clientIp", "bytesOut", "createdAt"] })
}

export const CHUNK_META = { node: "node-\u00e9\"1", region: "local", requestTag: "t3st" } as const

/** Random bytes that count up from `start`: ids a test can predict. */
export const countingRandom = (start = 0) => {
  let next = start
  return (bytes: Uint8Array) => {
    for (let i = 0; i < bytes.length; i++) bytes[i] = next++ & 0xff
  }
}

/** One chunk of `facts` (capacity: as many), made with counting random bytes from `randomStart`. */
export const chunkOf = (facts: ReadonlyArray<UsageFacts>, randomStart = 0): UsageChunk | undefined => chunkWith(facts, countingRandom(randomStart))

/**
 * One chunk of `facts` with real random bytes: ids that differ from every other chunk's even when
 * the facts share a time (counting bytes repeat every 256, and the arbitraries favour time 0).
 */
export const randomChunkOf = (facts: ReadonlyArray<UsageFacts>): UsageChunk | undefined => chunkWith(facts, randomFillSync)

const chunkWith = (facts: ReadonlyArray<UsageFacts>, fillRandom: (bytes: Uint8Array) => void): UsageChunk | undefined => {
  const builder = makeUsageChunkBuilder({ capacity: Math.max(1, facts.length), ...CHUNK_META, fillRandom })
  for (const f of facts) builder.record(f)
  return builder.take()
}

/**
 * The row the spec says a request with `facts` is (its 18 fields), written out here from the
 * facts, not by the code under test; `index` is its place in a chunk made by `chunkOf`.
 */
export const expectedRow = (f: UsageFacts, index: number, randomStart = 0): UsageRow => {
  const random = Uint8Array.from({ length: ID_RANDOM_BYTES }, (_, i) => (randomStart + index * ID_RANDOM_BYTES + i) & 0xff)
  const status = f.status ?? statusOf(f.code)
  return {
    id: uuidv7(f.createdAt, random),
    request_id: f.requestId ?? `${CHUNK_META.requestTag}-${(f.requestSeq ?? 0).toString(36)}`,
    api_key_id: f.apiKeyId ?? null,
    service: f.service,
    protocol: f.protocol,
    endpoint: f.endpoint,
    asset: f.asset ?? null,
    quote: f.quote ?? null,
    source: f.source ?? null,
    price: f.price ?? null,
    status_code: status,
    error_code: f.code === "OK" ? null : f.code,
    latency_us: f.latencyUs,
    client_ip: f.clientIp,
    node: CHUNK_META.node,
    region: CHUNK_META.region,
    bytes_out: f.bytesOut,
    created_at: f.createdAt
  }
}

/** Facts fields that become one column each; `sameFactsArb` copies a random set of them from the first facts to all. */
const COPYABLE = ["requestId", "apiKeyId", "service", "protocol", "endpoint", "asset", "quote", "source", "price", "code", "status", "latencyUs", "clientIp", "bytesOut", "createdAt"] as const

/** Groups of facts in which some fields hold one value throughout (as a batch of one client's requests does). */
export const sameFactsArb = (options: { readonly noNul?: boolean } = {}): fc.Arbitrary<ReadonlyArray<UsageFacts>> =>
  fc.tuple(fc.array(usageFactsArb(options), { minLength: 2, maxLength: 30 }), fc.subarray([...COPYABLE], { minLength: 1 })).map(([facts, fields]) =>
    facts.map((f) => {
      const copy: Record<string, unknown> = { ...f }
      for (const field of fields) copy[field] = facts[0]![field]
      return copy as unknown as UsageFacts
    })
  )

/** One plausible usage row (a served `/price` now), with the fields a test cares about overridden. */
export const usageRow = (overrides: Partial<UsageRow> = {}): UsageRow => ({
  id: randomUUID(),
  request_id: `req-${randomUUID()}`,
  api_key_id: randomUUID(),
  service: "LPO",
  protocol: "http",
  endpoint: "/price",
  asset: "BTC",
  quote: "USD",
  source: "consensus",
  price: 97_000.5,
  status_code: 200,
  error_code: null,
  latency_us: 40,
  client_ip: "10.0.0.1",
  node: "node-a",
  region: "local",
  bytes_out: 200,
  created_at: Date.now(),
  ...overrides
})
