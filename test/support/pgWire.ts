import { PgAuth } from "@effect/sql-pg"
import { Result } from "effect"
import { randomBytes } from "node:crypto"
import { connect, type Socket } from "node:net"

/**
 * A bare PostgreSQL wire-protocol client for tests that need to control how a client's bytes
 * reach the server (e.g. one cycle in two TCP writes), which a driver does not let them do.
 */

const int16 = (n: number) => {
  const b = Buffer.alloc(2)
  b.writeInt16BE(n)
  return b
}
const int32 = (n: number) => {
  const b = Buffer.alloc(4)
  b.writeInt32BE(n)
  return b
}
const cString = (s: string) => Buffer.from(`${s}\0`)
const message = (type: string, ...parts: Array<Buffer>) => {
  const body = Buffer.concat(parts)
  return Buffer.concat([Buffer.from(type, "latin1"), int32(body.length + 4), body])
}

const startupMessage = () => {
  const body = Buffer.concat([int32(196_608), cString("user"), cString("postgres"), cString("database"), cString("postgres"), Buffer.from([0])])
  return Buffer.concat([int32(body.length + 4), body])
}

/** An extended-query cycle on the unnamed statement and portal, cut after its `Bind`. */
export const extendedCycle = (sql: string): { readonly head: Buffer; readonly tail: Buffer } => ({
  head: Buffer.concat([
    message("P", cString(""), cString(sql), int16(0)),
    message("B", cString(""), cString(""), int16(0), int16(0), int16(0))
  ]),
  tail: Buffer.concat([message("D", Buffer.from("P"), cString("")), message("E", cString(""), int32(0)), message("S")])
})

export const simpleQuery = (sql: string) => message("Q", cString(sql))

/** Parse and describe the unnamed statement, then Flush: the answers come before any Sync. */
export const describeThenFlush = (sql: string) =>
  Buffer.concat([message("P", cString(""), cString(sql), int16(0)), message("D", Buffer.from("S"), cString("")), message("H")])

/** Bind the unnamed statement (no parameters), execute it and Sync. */
export const bindExecuteSync = () =>
  Buffer.concat([
    message("B", cString(""), cString(""), int16(0), int16(0), int16(0)),
    message("E", cString(""), int32(0)),
    message("S")
  ])

export interface WireReply {
  /** Backend message types in order, e.g. "12TDCZ". */
  readonly types: string
  /** The first column of every DataRow, as text. */
  readonly values: ReadonlyArray<string | null>
}

export interface WireClient {
  readonly write: (bytes: Buffer) => void
  /** Everything received up to the next ReadyForQuery, then forgotten. */
  readonly nextReply: (timeoutMs?: number) => Promise<WireReply>
  /** Everything received up to the next message of `type` (e.g. "T" after a Flush), then forgotten. */
  readonly nextUpTo: (type: string, timeoutMs?: number) => Promise<WireReply>
  readonly destroy: () => void
}

const parseReply = (bytes: Buffer): WireReply => {
  let types = ""
  const values: Array<string | null> = []
  for (let offset = 0; offset + 5 <= bytes.length;) {
    const type = String.fromCharCode(bytes[offset]!)
    const length = bytes.readInt32BE(offset + 1)
    if (type === "D") {
      const first = bytes.readInt32BE(offset + 7)
      values.push(first === -1 ? null : bytes.subarray(offset + 11, offset + 11 + first).toString())
    }
    types += type
    offset += 1 + length
  }
  return { types, values }
}

export { message as wireMessage, startupMessage }

/** The payload of the next Authentication ('R') message of `bytes` with `code`, or undefined. */
const authPayload = (bytes: Buffer, code: number): Buffer | undefined => {
  for (let offset = 0; offset + 5 <= bytes.length;) {
    const length = bytes.readInt32BE(offset + 1)
    if (bytes[offset] === 0x52 && bytes.readInt32BE(offset + 5) === code) return bytes.subarray(offset + 9, offset + 1 + length)
    offset += 1 + length
  }
  return undefined
}

const unwrap = <A>(result: Result.Result<A, PgAuth.AuthError>): A => {
  if (Result.isFailure(result)) throw new Error(result.failure.message)
  return result.success
}

/** Connect and finish the startup exchange, proving `password` with SCRAM-SHA-256 as the server asks. */
export const connectWire = async (port: number, password: string): Promise<WireClient> => {
  const socket: Socket = connect(port, "127.0.0.1")
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve)
    socket.once("error", reject)
  })
  let received = Buffer.alloc(0)
  let waiter: (() => void) | undefined
  socket.on("data", (data: Buffer) => {
    received = Buffer.concat([received, data])
    waiter?.()
  })
  /** Offset just past the first complete message of `type`, or -1. */
  const endOf = (type: number) => {
    for (let offset = 0; offset + 5 <= received.length;) {
      const end = offset + 1 + received.readInt32BE(offset + 1)
      if (end > received.length) return -1
      if (received[offset] === type) return end
      offset = end
    }
    return -1
  }
  /** Everything up to and including the next message of `type`, as bytes, then forgotten. */
  const nextBytesUpTo = (type: string, timeoutMs = 5_000) =>
    new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${type} within ${timeoutMs} ms; got ${parseReply(received).types}`)), timeoutMs)
      const check = () => {
        const end = endOf(type.charCodeAt(0))
        if (end === -1) return
        clearTimeout(timer)
        waiter = undefined
        const bytes = received.subarray(0, end)
        received = received.subarray(end)
        resolve(bytes)
      }
      waiter = check
      check()
    })
  const nextUpTo = (type: string, timeoutMs?: number) => nextBytesUpTo(type, timeoutMs).then(parseReply)
  const nextReply = (timeoutMs?: number) => nextUpTo("Z", timeoutMs)
  socket.write(startupMessage())
  // AuthenticationSASL, then the client-first and client-final messages of SCRAM-SHA-256.
  await nextBytesUpTo("R")
  const init = unwrap(PgAuth.scramInit({ password, nonce: randomBytes(18).toString("base64") }))
  const initial = init.response
  const length = Buffer.alloc(4)
  length.writeInt32BE(initial.length)
  socket.write(message("p", cString(PgAuth.SCRAM_SHA_256), length, Buffer.from(initial)))
  const challenge = authPayload(await nextBytesUpTo("R"), 11)
  if (challenge === undefined) throw new Error("no SCRAM challenge")
  const next = unwrap(PgAuth.scramContinue(init.state, challenge))
  socket.write(message("p", Buffer.from(next.response)))
  // The server proves it knew the password too, before PGlite's AuthenticationOk.
  const final = authPayload(await nextBytesUpTo("Z"), 12)
  if (final === undefined) throw new Error("no SCRAM final message")
  unwrap(PgAuth.scramFinish(next.state, final))
  return { write: (bytes) => socket.write(bytes), nextReply, nextUpTo, destroy: () => socket.destroy() }
}
