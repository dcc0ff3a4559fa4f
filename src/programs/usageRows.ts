import { randomUUID } from "node:crypto"
import type { ServiceName } from "../domain/envelope.ts"
import { statusOf, type ResponseCode } from "../domain/errorCodes.ts"
import type { UsageRow } from "../domain/usage.ts"
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

/** The one place a served request becomes its `usage_logs` row. */
export const usageRow = (meta: ServerMeta, f: UsageFacts): UsageRow => ({
  id: randomUUID(),
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
