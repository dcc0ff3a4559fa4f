/**
 * Usage-log queue message encodings, side by side (bench/README.md, "Usage queue messages"):
 *
 *   npm run build && node dist/bench/usageMessage.js [--rounds 15] [--batches 40]
 *
 * For each candidate, on batches of realistic serving-thread chunks (4 × 256 rows: what the usage
 * thread hands the writer at `usage_batch_size` 1000):
 * - encode: CPU of the usage thread's encoding per row (from the chunks, as `writeChunks` gets them);
 * - send: encode plus the real @aws-sdk/client-sqs SendMessageBatch calls (serialising, signing,
 *   HTTP) to the SQS stand-in, which runs as its own process so its work is not counted: the
 *   usage thread's whole cost per row;
 * - bytes: bytes per row on the queue (bodies and the `type` attribute, as SQS counts them);
 * - receive + delete: the consumer's SDK calls per row (ReceiveMessage 10 at a time, MD5-checked,
 *   and DeleteMessageBatch), the bytes' cost on the other side;
 * - decode: the consumer's CPU per row, body to checked `UsageRow`s.
 * CPU is this thread's (`process.threadCpuUsage`), the median of the rounds.
 *
 * "binary chunks + zstd" is the format the producer sent before issue 14 (columns as bytes, zstd
 * level 1, base64), kept here only as the baseline; nothing reads it any more.
 */
import { DeleteMessageBatchCommand, ReceiveMessageCommand, SendMessageBatchCommand, SQSClient } from "@aws-sdk/client-sqs"
import { Schema } from "effect"
import { spawn } from "node:child_process"
import { randomFillSync } from "node:crypto"
import path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { constants, gunzipSync, gzipSync, zstdCompressSync, zstdDecompressSync } from "node:zlib"
import { median } from "../src/domain/consensus.ts"
import { USAGE_COLUMNS, UsageRow } from "../src/domain/usage.ts"
import { makeUsageChunkBuilder, rowsOfChunk, type UsageChunk, type UsageFacts } from "../src/domain/usageChunk.ts"
import {
  decodeQueueMessage, encodeUsageLogMessages, encodeUsageLogMessagesOfChunks, USAGE_LOG_TYPE, USAGE_LOG_VERSION
} from "../src/domain/usageQueueMessage.ts"
import { STAND_IN_AWS_ENV } from "../src/simulators/awsJsonProtocol.ts"
import {
  MESSAGE_MAX_BYTES, REQUEST_MAX_BYTES, TYPE_ATTRIBUTE, TYPE_ATTRIBUTE_BYTES, USAGE_LOG_MAX_BODY_BYTES
} from "../src/layers/usage/UsageWriterSqs.ts"

const CHUNK_ROWS = 256
const CHUNKS_PER_BATCH = 4
const ROWS_PER_BATCH = CHUNK_ROWS * CHUNKS_PER_BATCH

// ---------------------------------------------------------------------------------------------
// Realistic rows: one key, BTC/USD over HTTP and UDP, prices, latencies and client addresses
// that vary (they compress worst), ~40 rows a millisecond (a loaded server). A fixed LCG keeps it
// reproducible.

const makeBatches = (count: number): ReadonlyArray<ReadonlyArray<UsageChunk>> => {
  let seed = 42
  const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31
  const facts = (i: number): UsageFacts => ({
    requestSeq: 1_000_000 + i, apiKeyId: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", service: "LPO", protocol: i % 2 === 0 ? "http" : "udp",
    endpoint: i % 2 === 0 ? "/price" : "price", asset: "BTC", quote: "USD", source: "consensus", price: 97_000 + next() * 1_000, code: "OK",
    latencyUs: Math.floor(next() * 900), clientIp: `10.${Math.floor(next() * 255)}.${Math.floor(next() * 255)}.${Math.floor(next() * 255)}`,
    bytesOut: 600 + Math.floor(next() * 60), createdAt: 1_795_000_000_000 + Math.floor(i / 40)
  })
  let i = 0
  return Array.from({ length: count }, () =>
    Array.from({ length: CHUNKS_PER_BATCH }, () => {
      const builder = makeUsageChunkBuilder({ capacity: CHUNK_ROWS, node: "ip-10-0-1-23", region: "us-east-1", requestTag: "9f3a61c2", fillRandom: randomFillSync })
      for (let r = 0; r < CHUNK_ROWS; r++) builder.record(facts(i++))
      return builder.take()!
    }))
}

// ---------------------------------------------------------------------------------------------
// The candidates

interface Candidate {
  readonly name: string
  readonly encode: (chunks: ReadonlyArray<UsageChunk>) => ReadonlyArray<string>
  /** The rows of one body, checked; throws if it does not decode. */
  readonly decode: (body: string) => ReadonlyArray<UsageRow>
}

const rowsOrThrow = (body: string): ReadonlyArray<UsageRow> => {
  const message = decodeQueueMessage(body)
  if (message._tag === "Poison") throw new Error(message.reason)
  return message.rows
}

/** Halving until each body fits. */
const splitToFit = (rows: ReadonlyArray<UsageRow>, encode: (part: ReadonlyArray<UsageRow>) => string, out: Array<string> = []): Array<string> => {
  const body = encode(rows)
  if (Buffer.byteLength(body) <= USAGE_LOG_MAX_BODY_BYTES || rows.length === 1) out.push(body)
  else {
    splitToFit(rows.slice(0, rows.length >> 1), encode, out)
    splitToFit(rows.slice(rows.length >> 1), encode, out)
  }
  return out
}

/** JSON objects, one per row, keys repeated: the simplest form, checked by `UsageRow` itself. */
const ObjectRowsMessage = Schema.Struct({ type: Schema.Literal(USAGE_LOG_TYPE), v: Schema.Literal(USAGE_LOG_VERSION), rows: Schema.NonEmptyArray(UsageRow) })
const decodeObjectRows = Schema.decodeUnknownSync(ObjectRowsMessage)
const objectRows: Candidate = {
  name: "JSON objects, a row each",
  encode: (chunks) => splitToFit(chunks.flatMap(rowsOfChunk), (rows) => JSON.stringify({ type: USAGE_LOG_TYPE, v: USAGE_LOG_VERSION, rows })),
  decode: (body) => decodeObjectRows(JSON.parse(body)).rows
}

/** Row arrays: `{"columns":[…18 names],"rows":[[…18 values],…]}`, each row checked by a tuple of `UsageRow`'s fields. */
const f = UsageRow.fields
const RowValues = Schema.Tuple([
  f.id, f.request_id, f.api_key_id, f.service, f.protocol, f.endpoint, f.asset, f.quote, f.source, f.price,
  f.status_code, f.error_code, f.latency_us, f.client_ip, f.node, f.region, f.bytes_out, f.created_at
])
const RowArraysMessage = Schema.Struct({
  type: Schema.Literal(USAGE_LOG_TYPE), v: Schema.Literal(USAGE_LOG_VERSION), columns: Schema.Tuple(USAGE_COLUMNS.map((c) => Schema.Literal(c))),
  rows: Schema.NonEmptyArray(RowValues)
})
const decodeRowArrays = Schema.decodeUnknownSync(RowArraysMessage)
const rowArrays: Candidate = {
  name: "row arrays, column names once",
  encode: (chunks) =>
    splitToFit(chunks.flatMap(rowsOfChunk), (rows) =>
      `{"type":"${USAGE_LOG_TYPE}","v":${USAGE_LOG_VERSION},"columns":${JSON.stringify(USAGE_COLUMNS)},"rows":[` +
      rows.map((r) => JSON.stringify(USAGE_COLUMNS.map((c) => r[c]))).join(",") + "]}"),
  decode: (body) =>
    decodeRowArrays(JSON.parse(body)).rows.map((v): UsageRow => ({
      id: v[0], request_id: v[1], api_key_id: v[2], service: v[3], protocol: v[4], endpoint: v[5], asset: v[6], quote: v[7], source: v[8],
      price: v[9], status_code: v[10], error_code: v[11], latency_us: v[12], client_ip: v[13], node: v[14], region: v[15], bytes_out: v[16],
      created_at: v[17]
    }))
}

/**
 * The chosen text compressed, base64 in a JSON envelope: `{"type":"usage_log","v":1,"<codec>":"…"}`.
 * Compressed bodies are made from text of up to `COMPRESSED_TEXT_BYTES` (a batch is one; they
 * come out ~3× smaller, under the body limit).
 */
const COMPRESSED_TEXT_BYTES = 512 * 1024
const compressed = (codec: "gzip" | "zstd"): Candidate => {
  const compress = codec === "gzip"
    ? (text: string) => gzipSync(text, { level: 1 })
    : (text: string) => zstdCompressSync(text, { params: { [constants.ZSTD_c_compressionLevel]: 1 } })
  const decompress = codec === "gzip" ? gunzipSync : zstdDecompressSync
  return {
    name: `column by column, ${codec} level 1 + base64`,
    encode: (chunks) =>
      encodeUsageLogMessagesOfChunks(chunks, COMPRESSED_TEXT_BYTES).map((text) =>
        `{"type":"${USAGE_LOG_TYPE}","v":${USAGE_LOG_VERSION},"${codec}":"${compress(text).toString("base64")}"}`
      ),
    decode: (body) => {
      const envelope = JSON.parse(body) as Record<string, string>
      return rowsOrThrow(decompress(Buffer.from(envelope[codec]!, "base64")).toString("utf8"))
    }
  }
}

// The format before issue 14, for the producer's baseline only: per chunk "TBUC", version 1, the
// header's length and JSON, then the typed arrays as they are, each padded to 8 bytes; zstd level
// 1; base64; chunks grouped up to 512 rows a body.
const align8 = (n: number): number => (n + 7) & ~7
const formerChunkBytes = (chunks: ReadonlyArray<UsageChunk>): Uint8Array => {
  const parts = chunks.map((c) => ({
    header: new TextEncoder().encode(JSON.stringify({ rows: c.rows, node: c.node, region: c.region, requestTag: c.requestTag, strings: c.strings })),
    columns: [c.createdAt, c.requestSeq, c.price, c.refs, c.statusCode, c.latencyUs, c.bytesOut, c.random].map((a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength))
  }))
  let size = 0
  for (const p of parts) size += align8(12 + p.header.length) + p.columns.reduce((n, col) => n + align8(col.length), 0)
  const out = new Uint8Array(size)
  const view = new DataView(out.buffer)
  let o = 0
  for (const p of parts) {
    out.set([0x54, 0x42, 0x55, 0x43, 1], o)
    view.setUint32(o + 8, p.header.length, true)
    out.set(p.header, o + 12)
    o = align8(o + 12 + p.header.length)
    for (const col of p.columns) {
      out.set(col, o)
      o += align8(col.length)
    }
  }
  return out
}
const FORMER_ROWS_PER_BODY = 512
const former: Candidate = {
  name: "binary chunks + zstd (before issue 14)",
  encode: (chunks) => {
    const bodies: Array<string> = []
    for (let i = 0; i < chunks.length; i += FORMER_ROWS_PER_BODY / CHUNK_ROWS) {
      const group = chunks.slice(i, i + FORMER_ROWS_PER_BODY / CHUNK_ROWS)
      bodies.push(zstdCompressSync(formerChunkBytes(group), { params: { [constants.ZSTD_c_compressionLevel]: 1 } }).toString("base64"))
    }
    return bodies
  },
  decode: () => {
    throw new Error("no decoder (nothing reads this format any more)")
  }
}

const CANDIDATES: ReadonlyArray<Candidate> = [
  former,
  objectRows,
  rowArrays,
  { name: "column by column (rows made, encodeUsageLogMessages)", encode: (chunks) => encodeUsageLogMessages(chunks.flatMap(rowsOfChunk), USAGE_LOG_MAX_BODY_BYTES), decode: rowsOrThrow },
  { name: "column by column (from the chunks) [chosen]", encode: (chunks) => encodeUsageLogMessagesOfChunks(chunks, USAGE_LOG_MAX_BODY_BYTES), decode: rowsOrThrow },
  compressed("gzip"),
  compressed("zstd")
]

// ---------------------------------------------------------------------------------------------
// Measuring

const cpuNs = (start: NodeJS.CpuUsage): number => {
  const used = process.threadCpuUsage(start)
  return (used.user + used.system) * 1000
}

/** The SQS stand-in as a child process; answers its queue URL. */
const startStandIn = async () => {
  const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../src/simulators/sqsStandInMain.js")
  const child = spawn(process.execPath, [script, "0"], { stdio: ["ignore", "pipe", "inherit"] })
  const ready = await new Promise<{ port: string; queueUrl: string }>((resolve, reject) => {
    let seen = ""
    child.stdout.on("data", (chunk: Buffer) => {
      seen += chunk.toString("utf8")
      const m = /ready (\d+) (\S+)\n/u.exec(seen)
      if (m !== null) resolve({ port: m[1]!, queueUrl: m[2]! })
    })
    child.once("exit", (code) => reject(new Error(`SQS stand-in exited (${code})`)))
  })
  return { ...ready, stop: () => child.kill("SIGTERM") }
}

/** SendMessageBatch requests as the producer makes them: at most 10 entries and REQUEST_MAX_BYTES each. */
const sendAll = async (client: SQSClient, queueUrl: string, bodies: ReadonlyArray<string>) => {
  let entries: Array<{ Id: string; MessageBody: string; MessageAttributes: typeof TYPE_ATTRIBUTE }> = []
  let bytes = 0
  const flush = async () => {
    if (entries.length === 0) return
    const out = await client.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries }))
    if ((out.Failed ?? []).length > 0) throw new Error(`${out.Failed?.length} entries failed`)
    entries = []
    bytes = 0
  }
  for (const body of bodies) {
    const size = Buffer.byteLength(body) + TYPE_ATTRIBUTE_BYTES
    if (entries.length === 10 || bytes + size > REQUEST_MAX_BYTES) await flush()
    entries.push({ Id: String(entries.length), MessageBody: body, MessageAttributes: TYPE_ATTRIBUTE })
    bytes += size
  }
  await flush()
}

/**
 * ReceiveMessage (10 at a time, attributes included, MD5-checked by the SDK) and DeleteMessageBatch
 * until the queue is empty, as a consumer does; answers the messages taken.
 */
const receiveAll = async (client: SQSClient, queueUrl: string): Promise<number> => {
  let taken = 0
  for (;;) {
    const out = await client.send(new ReceiveMessageCommand({
      QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0, VisibilityTimeout: 60, MessageAttributeNames: ["All"]
    }))
    const messages = out.Messages ?? []
    if (messages.length === 0) return taken
    await client.send(new DeleteMessageBatchCommand({ QueueUrl: queueUrl, Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle ?? "" })) }))
    taken += messages.length
  }
}

interface Figures {
  readonly name: string
  readonly encodeNs: number
  readonly sendNs: number
  /** The consumer's SDK calls: ReceiveMessage and DeleteMessageBatch. */
  readonly receiveNs: number
  readonly bytesPerRow: number
  readonly rowsPerMessage: number
  readonly decodeNs: number | undefined
}

const measure = async (candidate: Candidate, batches: ReadonlyArray<ReadonlyArray<UsageChunk>>, rounds: number, client: SQSClient, queueUrl: string): Promise<Figures> => {
  const rows = batches.length * ROWS_PER_BATCH
  const bodies = batches.map(candidate.encode)
  const all = bodies.flat()
  for (const b of all) if (Buffer.byteLength(b) + TYPE_ATTRIBUTE_BYTES > MESSAGE_MAX_BYTES) throw new Error(`${candidate.name}: a body of ${Buffer.byteLength(b)} bytes`)
  const queueBytes = all.reduce((n, b) => n + Buffer.byteLength(b) + TYPE_ATTRIBUTE_BYTES, 0)
  let decodeNs: number | undefined
  if (candidate !== former) {
    const expected = batches.flatMap((b) => b.flatMap(rowsOfChunk))
    const decoded = all.flatMap(candidate.decode)
    if (JSON.stringify(decoded) !== JSON.stringify(expected)) throw new Error(`${candidate.name}: the bodies do not decode to the rows`)
    const times: Array<number> = []
    for (let r = 0; r < rounds; r++) {
      const start = process.threadCpuUsage()
      for (const b of all) candidate.decode(b)
      times.push(cpuNs(start) / rows)
    }
    decodeNs = median(times)
  }
  const encodeTimes: Array<number> = []
  const sendTimes: Array<number> = []
  const receiveTimes: Array<number> = []
  await receiveAll(client, queueUrl) // what earlier candidates left
  for (let r = 0; r < rounds; r++) {
    let start = process.threadCpuUsage()
    for (const batch of batches) candidate.encode(batch)
    encodeTimes.push(cpuNs(start) / rows)
    start = process.threadCpuUsage()
    for (const batch of batches) await sendAll(client, queueUrl, candidate.encode(batch))
    sendTimes.push(cpuNs(start) / rows)
    start = process.threadCpuUsage()
    const taken = await receiveAll(client, queueUrl)
    receiveTimes.push(cpuNs(start) / rows)
    if (taken !== all.length) throw new Error(`${candidate.name}: received ${taken} messages of ${all.length}`)
  }
  return {
    name: candidate.name, encodeNs: median(encodeTimes), sendNs: median(sendTimes), receiveNs: median(receiveTimes),
    bytesPerRow: queueBytes / rows, rowsPerMessage: rows / all.length, decodeNs
  }
}

const argValue = (argv: ReadonlyArray<string>, flag: string, fallback: number): number => {
  const at = argv.indexOf(flag)
  const value = at >= 0 ? Number(argv[at + 1]) : fallback
  return Number.isInteger(value) && value > 0 ? value : fallback
}

export const measureUsageMessages = async (rounds: number, batchCount: number): Promise<ReadonlyArray<Figures>> => {
  Object.assign(process.env, STAND_IN_AWS_ENV)
  const standIn = await startStandIn()
  process.env["AWS_ENDPOINT_URL_SQS"] = `http://127.0.0.1:${standIn.port}`
  const client = new SQSClient({})
  try {
    const batches = makeBatches(batchCount)
    // Warm-up: JIT, the SDK's first request.
    for (const c of CANDIDATES) await measure(c, batches.slice(0, 2), 2, client, standIn.queueUrl)
    const figures: Array<Figures> = []
    for (const c of CANDIDATES) figures.push(await measure(c, batches, rounds, client, standIn.queueUrl))
    return figures
  } finally {
    client.destroy()
    standIn.stop()
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const argv = process.argv.slice(2)
  const rounds = argValue(argv, "--rounds", 15)
  const batches = argValue(argv, "--batches", 40)
  const figures = await measureUsageMessages(rounds, batches)
  const us = (ns: number | undefined) => (ns === undefined ? "–" : (ns / 1000).toFixed(2))
  console.log(`${batches} batches of ${ROWS_PER_BATCH} rows, median of ${rounds} rounds; CPU µs per row of this thread`)
  console.log("| encoding | encode | encode + send | bytes/row on the queue | rows/message | receive + delete | decode |")
  console.log("| --- | --- | --- | --- | --- | --- | --- |")
  for (const f of figures) {
    console.log(`| ${f.name} | ${us(f.encodeNs)} | ${us(f.sendNs)} | ${f.bytesPerRow.toFixed(0)} | ${f.rowsPerMessage.toFixed(0)} | ${us(f.receiveNs)} | ${us(f.decodeNs)} |`)
  }
  process.exit(0)
}
