/**
 * Baseline for the HTTP benchmark: a bare node:http server answering every request with a constant
 * JSON body the size of a /price answer. Whatever the real server does on top of this is its cost.
 *
 *   node dist/bench/bareHttp.js <port> [workers]   (workers > 1: node:cluster, one process each)
 *
 * Prints "ready <port>" on stdout once every process is listening.
 */
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { runBareServer } from "./bareCluster.ts"

/** Shaped like a /price envelope (~600 bytes) so the bytes on the wire match. */
const BODY = Buffer.from(
  JSON.stringify({
    success: true,
    service: "LPO",
    code: "OK",
    message: "OK",
    data: {
      asset: "BTC",
      quote: "USD",
      price: 97000.12,
      method: "median",
      sources: [
        { exchange: "coinbase", price: 97000.1, bid: 97000.05, ask: 97000.15, ts: 1764000000000, age_ms: 12 },
        { exchange: "kraken", price: 97000.2, bid: 97000.1, ask: 97000.3, ts: 1764000000001, age_ms: 15 }
      ],
      spread_bps: 0.01,
      ts: 1764000000001,
      age_ms: 12,
      stale: false
    },
    request_id: "0b5e3c1c-6a4f-4c3e-9d55-2f1f0d7e9a10",
    timestamp: "2026-11-24T12:00:00.000Z",
    latency_us: 42,
    node: "bench",
    region: "local",
    version: "0.1.0",
    lang: "en"
  })
)
const HEADERS = { "Content-Type": "application/json", "Content-Length": String(BODY.length) }

const port = Number(process.argv[2] ?? "0")
const workers = Math.max(1, Number(process.argv[3] ?? "1"))

const serve = (onListening: (port: number) => void): void => {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, HEADERS)
    res.end(BODY)
  })
  server.keepAliveTimeout = 60_000
  server.listen(port, "127.0.0.1", () => onListening((server.address() as AddressInfo).port))
}

runBareServer(workers, serve)
