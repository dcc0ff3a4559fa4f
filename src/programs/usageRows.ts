import { randomFillSync } from "node:crypto"
import type { ServiceName } from "../domain/envelope.ts"
import { statusOf, type ResponseCode } from "../domain/errorCodes.ts"
import type { UsageRow } from "../domain/usage.ts"
import { uuidv7 } from "../domain/uuidv7.ts"
import type { ServerMeta } from "../http/httpKit.ts"

export interface UsageFacts {
  readonly requestId: string
  readonly apiKeyId: string | undefined
  readonly service: ServiceName
  readonly protocol: "http" | "udp" | "ws"
  readonly endpoint: string
  readonly asset?: string | undefined
  readonly quote?: string | undefined
  readonly source?: string | undefined
  readonly price?: number | undefined
  readonly code: ResponseCode
  readonly status?: number | undefined
  readonly latencyUs: number
  readonly clientIp: string
  readonly bytesOut: number
  readonly createdAt: number
}

// Random bits for row ids, drawn from the CSPRNG in blocks rather than per row.
const pool = new Uint8Array(16_384)
let poolOffset = pool.length
const nextRandom = (): Uint8Array => {
  if (poolOffset + 10 > pool.length) {
    randomFillSync(pool)
    poolOffset = 0
  }
  const out = pool.subarray(poolOffset, poolOffset + 10)
  poolOffset += 10
  return out
}

/** The one place a served request becomes its `usage_logs` row. */
export const usageRow = (meta: ServerMeta, f: UsageFacts): UsageRow => ({
  id: uuidv7(f.createdAt, nextRandom()),
  request_id: f.requestId,
  api_key_id: f.apiKeyId ?? null,
  service: f.service,
  protocol: f.protocol,
  endpoint: f.endpoint,
  asset: f.asset ?? null,
  quote: f.quote ?? null,
  source: f.source ?? null,
  price: f.price ?? null,
  status_code: f.status ?? statusOf(f.code),
  error_code: f.code === "OK" ? null : f.code,
  latency_us: f.latencyUs,
  client_ip: f.clientIp,
  node: meta.node,
  region: meta.region,
  bytes_out: f.bytesOut,
  created_at: f.createdAt
})
