import { describe, expect, it } from "vitest"
import { rowsOfChunk, type UsageChunk } from "../src/domain/usageChunk.ts"
import { makeChunkForwarder } from "../src/layers/usageChunkForwarder.ts"
import { chunkOf } from "./support/usageFacts.ts"

/** A forwarder over a fake queue whose writes succeed or fail as the test says, on a fake clock. */
const harness = (options: { batchRows?: number; maxRows?: number; fail?: () => boolean; hang?: boolean } = {}) => {
  const written: Array<ReadonlyArray<string>> = []
  const sunk: Array<string> = []
  const acked: Array<number> = []
  const lost: Array<number> = []
  let clock = 1_000
  const forwarder = makeChunkForwarder({
    write: (chunks) =>
      options.hang === true
        ? new Promise<void>(() => {})
        : options.fail?.() === true ? Promise.reject(new Error("queue down")) : Promise.resolve(void written.push(chunks.map(nameOf))),
    fallback: (c) => {
      if (nameOf(c) === "bad") throw new Error("its rows cannot be made")
      sunk.push(nameOf(c))
    },
    ack: (seq) => void acked.push(seq),
    lost: (seq) => void lost.push(seq),
    batchRows: () => options.batchRows ?? 10,
    flushMs: () => 20,
    maxRows: () => options.maxRows ?? 1_000_000,
    bypassMs: 5_000,
    now: () => clock
  })
  return { forwarder, written, sunk, acked, lost, advance: (ms: number) => void (clock += ms) }
}
/** A chunk of `rows` rows whose endpoint is `name`, so a test can tell chunks apart. */
const chunk = (name: string, rows: number): UsageChunk =>
  chunkOf(Array.from({ length: rows }, (_, i) => ({ requestSeq: i, apiKeyId: undefined, service: "LPO", protocol: "udp", endpoint: name, code: "OK", latencyUs: 1, clientIp: "127.0.0.1", bytesOut: 1, createdAt: 1 })))!
const nameOf = (c: UsageChunk): string => rowsOfChunk(c)[0]!.endpoint
const settle = () => new Promise((r) => setTimeout(r, 0))

describe("usage chunk forwarder (usage thread → SQS or the database, chunks as they are)", () => {
  it("while a write hangs, holds at most maxRows rows and hands further chunks to the batcher, acknowledged", async () => {
    const h = harness({ batchRows: 4, maxRows: 10, hang: true })
    h.forwarder.add(1, chunk("a", 4))
    await settle()
    h.forwarder.add(2, chunk("b", 4))
    h.forwarder.add(3, chunk("c", 4))
    h.forwarder.add(4, chunk("d", 4))
    await settle()
    expect({ sunk: h.sunk, acked: h.acked, buffered: h.forwarder.stats().buffered }).toEqual({ sunk: ["d"], acked: [4], buffered: 12 })
  })

  it("writes a batch as soon as it holds batchRows rows, and acknowledges each chunk after the write", async () => {
    const h = harness({ batchRows: 10 })
    h.forwarder.add(1, chunk("a", 4))
    h.forwarder.add(2, chunk("b", 4))
    expect(h.written).toHaveLength(0)
    expect(h.forwarder.stats().buffered).toBe(8)
    h.forwarder.add(3, chunk("c", 4))
    await settle()
    expect(h.written).toEqual([["a", "b", "c"]])
    expect(h.acked).toEqual([1, 2, 3])
    expect(h.forwarder.stats()).toMatchObject({ written: 12, batches: 1, buffered: 0, failures: 0 })
  })

  it("writes a smaller batch after flushMs", async () => {
    const h = harness({ batchRows: 1_000 })
    h.forwarder.add(1, chunk("a", 3))
    await new Promise((r) => setTimeout(r, 60))
    expect(h.written.flat()).toEqual(["a"])
    expect(h.acked).toEqual([1])
  })

  it("hands a failed batch to the batcher, acknowledges it, and sends everything to the batcher for a while", async () => {
    let down = true
    const h = harness({ batchRows: 2, fail: () => down })
    h.forwarder.add(1, chunk("a", 2))
    await settle()
    expect(h.sunk).toEqual(["a"])
    expect(h.acked).toEqual([1])
    expect(h.forwarder.stats().failures).toBe(1)
    down = false
    h.forwarder.add(2, chunk("b", 2))
    expect(h.sunk).toEqual(["a", "b"]) // within the bypass: straight to the batcher
    h.advance(5_001)
    h.forwarder.add(3, chunk("c", 2))
    await settle()
    expect(h.written.flat()).toEqual(["c"])
    expect(h.acked).toEqual([1, 2, 3])
  })

  it("reports a chunk that neither the queue nor the batcher takes, and does not wait on it for ever", async () => {
    const h = harness({ batchRows: 1, fail: () => true })
    h.forwarder.add(7, chunk("bad", 1))
    await settle()
    expect(h.lost).toEqual([7])
    expect(h.acked).toEqual([7])
  })

  it("flush writes what waits and what arrives while a write is in flight", async () => {
    const h = harness({ batchRows: 5 })
    h.forwarder.add(1, chunk("a", 5))
    h.forwarder.add(2, chunk("b", 1))
    await h.forwarder.flush()
    expect(h.written.flat()).toEqual(["a", "b"])
    expect(h.acked).toEqual([1, 2])
    expect(h.forwarder.stats()).toMatchObject({ written: 6, buffered: 0 })
  })
})
