/**
 * Baseline for the UDP benchmark: a bare dgram server answering every datagram with a constant
 * ~150-byte single-line JSON reply, the size of a `v1 price` answer.
 *
 *   node dist/bench/bareUdp.js <port> [workers]   (workers > 1: node:cluster, one shared socket)
 *
 * Prints "ready <port>" on stdout once every process is bound.
 */
import * as dgram from "node:dgram"
import { runBareServer } from "./bareCluster.ts"

const REPLY = Buffer.from(
  JSON.stringify({
    ok: true,
    rid: "bench",
    asset: "BTC",
    quote: "USD",
    price: 97000.12,
    source: "consensus",
    ts: 1764000000001,
    age_ms: 12,
    node: "bench-node-000001"
  })
)

const port = Number(process.argv[2] ?? "0")
const workers = Math.max(1, Number(process.argv[3] ?? "1"))

const serve = (onBound: (port: number) => void): void => {
  const socket = dgram.createSocket("udp4")
  socket.on("message", (_msg, rinfo) => socket.send(REPLY, rinfo.port, rinfo.address))
  socket.bind(port, "127.0.0.1", () => onBound(socket.address().port))
}

runBareServer(workers, serve)
