import { createServer, type Server, type Socket } from "node:net"
import { type ScramStep, scramExchange, scramVerifier } from "./scramServer.ts"

/**
 * Serves one PGlite database to many PostgreSQL wire-protocol clients on a TCP socket.
 *
 * PGlite is one PostgreSQL session. Each client must still see the guarantees of its own
 * connection, so the session is handed out a protocol cycle at a time: a client's messages run,
 * without any other client's in between, from its first message up to and including the `Sync`
 * (extended query) or `Query` (simple query) that ends the cycle. A `Flush` runs what came before
 * it and keeps the session for that client until its `Sync`; and while a cycle leaves the session
 * inside a transaction block, only that client's cycles run until it ends the block. (COPY FROM
 * STDIN is not served: PGlite does not take it over the wire.)
 *
 * Every client must prove it knows the server's password with SCRAM-SHA-256 (what PostgreSQL
 * itself uses) before its startup message reaches PGlite: the port is on loopback, but any local
 * process can reach it, and PGlite itself accepts any user with no password. For the same reason a
 * client that has not proved it yet takes no connection slot: it has a time limit (PostgreSQL's
 * `authentication_timeout`), and past a bounded number of such clients the oldest is closed, so
 * silent sockets can neither lock out the clients that know the password nor grow without limit.
 *
 * Why not @electric-sql/pglite-socket (0.2.17): it queues single messages, not cycles, and keeps a
 * client's affinity only inside a transaction block. When a client's cycle reaches the server in
 * two TCP reads, another client's `Bind`/`Execute`/`Sync` can land between its messages, and the
 * unnamed portal they share then hands one client the other's rows (upstream issue
 * electric-sql/pglite#1046, reproduced in test/embeddedPostgres.test.ts). Its queue also stops for
 * good after one internal error.
 */

/** The untyped first messages of a connection, by their protocol code. */
const PROTOCOL_3 = 196_608
const SSL_REQUEST = 80_877_103
const GSS_ENCRYPTION_REQUEST = 80_877_104
const CANCEL_REQUEST = 80_877_102
/** Larger messages are refused (PostgreSQL's own limit for a message is 1 GB). */
const MAX_MESSAGE_BYTES = 256 * 1024 * 1024
/** Until a client has proved the password its messages are small (PostgreSQL allows a 10000-byte startup packet). */
const MAX_UNAUTHENTICATED_BYTES = 10_000

const TYPE_SYNC = 0x53 // 'S'
const TYPE_QUERY = 0x51 // 'Q'
const TYPE_FLUSH = 0x48 // 'H'
const TYPE_TERMINATE = 0x58 // 'X'
const TYPE_PASSWORD = 0x70 // 'p': SASLInitialResponse and SASLResponse
/** PostgreSQL's default `authentication_timeout` is 60 s; a client on loopback needs far less. */
const DEFAULT_AUTHENTICATION_TIMEOUT_MS = 10_000
const DEFAULT_MAX_PENDING_AUTHENTICATIONS = 64
const SCRAM_SHA_256 = "SCRAM-SHA-256"
/** A Sync message: ends the cycle a departed client left open after a Flush. */
const SYNC_MESSAGE = new Uint8Array([TYPE_SYNC, 0, 0, 0, 4])

/** The part of PGlite this server drives. */
export interface PgliteSession {
  readonly runExclusive: <T>(fn: () => Promise<T>) => Promise<T>
  readonly execProtocolRawStream: (message: Uint8Array, options: { readonly onRawData: (data: Uint8Array) => void }) => Promise<void>
  readonly isInTransaction: () => boolean
  readonly exec: (query: string) => Promise<unknown>
}

interface Client {
  readonly socket: Socket
  /** Bytes received and not yet cut into messages. */
  buffer: Buffer
  /** Messages of the cycle not yet complete. */
  cycle: Array<Uint8Array>
  /** Until the startup message, messages carry no type byte. */
  started: boolean
  /** The startup message, held back from PGlite until the client has proved the password. */
  startup: Uint8Array | undefined
  /** The user the startup message names (for the error a wrong password gets). */
  user: string
  /** The password exchange, from the startup message until it succeeds. */
  scram: ReturnType<typeof scramExchange> | undefined
  authenticated: boolean
  /** Closes the connection if the client has not proved the password in time. */
  authenticationTimer: ReturnType<typeof setTimeout> | undefined
  closed: boolean
}

interface Cycle {
  readonly client: Client
  readonly messages: ReadonlyArray<Uint8Array>
  /** Ends with a Flush: the client waits for these answers before it sends the rest of its cycle. */
  readonly flushed: boolean
}

export interface PgliteServerOptions {
  readonly host: string
  /** 0 picks a free port. */
  readonly port: number
  /** Clients that have proved the password; one more is refused ("too many clients", 53300). */
  readonly maxConnections: number
  /** Every client must prove it knows this (SCRAM-SHA-256) before it reaches the database. */
  readonly password: string
  /** A client that has not proved the password this long after it connected is closed. Default 10 s. */
  readonly authenticationTimeoutMs?: number
  /** Connections not yet authenticated kept at once; a new one past this closes the oldest. Default 64. */
  readonly maxPendingAuthentications?: number
  /** Told when a cycle fails inside PGlite (its client is disconnected; the others go on). */
  readonly onError?: (error: unknown) => void
}

export interface PgliteServer {
  readonly port: number
  readonly close: () => Promise<void>
}

/** A complete message at the start of `buffer`: its length in bytes, 0 if incomplete, -1 if invalid. */
const messageLength = (buffer: Buffer, started: boolean, maxBytes: number): number => {
  if (!started) {
    if (buffer.length < 4) return 0
    const length = buffer.readInt32BE(0)
    if (length < 8 || length > maxBytes) return -1
    return buffer.length >= length ? length : 0
  }
  if (buffer.length < 5) return 0
  const length = buffer.readInt32BE(1)
  if (length < 4 || length > maxBytes) return -1
  return buffer.length >= length + 1 ? length + 1 : 0
}

const backendMessage = (type: string, ...parts: ReadonlyArray<Uint8Array>): Buffer => {
  const body = Buffer.concat(parts)
  const header = Buffer.alloc(5)
  header.write(type, 0, "latin1")
  header.writeInt32BE(body.length + 4, 1)
  return Buffer.concat([header, body])
}
const int32 = (n: number) => {
  const b = Buffer.alloc(4)
  b.writeInt32BE(n)
  return b
}
/** AuthenticationSASL: the one mechanism offered. */
const AUTHENTICATION_SASL = backendMessage("R", int32(10), Buffer.from(`${SCRAM_SHA_256}\0\0`))
const authenticationSaslContinue = (data: string) => backendMessage("R", int32(11), Buffer.from(data))
const authenticationSaslFinal = (data: string) => backendMessage("R", int32(12), Buffer.from(data))
/** A FATAL ErrorResponse with SQLSTATE 28P01 (invalid_password), as PostgreSQL sends. */
const passwordFailed = (user: string) =>
  backendMessage("E", Buffer.from(`SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user "${user}"\0\0`))
/** A FATAL ErrorResponse with SQLSTATE 53300 (too_many_connections), as PostgreSQL sends. */
const TOO_MANY_CLIENTS = backendMessage("E", Buffer.from("SFATAL\0VFATAL\0C53300\0Msorry, too many clients already\0\0"))

/** The startup message's parameters (after length and protocol code): NUL-terminated names and values. */
const startupUser = (message: Buffer): string => {
  const fields = message.subarray(8).toString("utf8").split("\0")
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === "user") return fields[i + 1]!.slice(0, 63)
  return ""
}

/** SASLInitialResponse: mechanism (C string), then the client-first-message's length and bytes. */
const saslInitialResponse = (message: Buffer): { readonly mechanism: string; readonly data: string } | undefined => {
  const end = message.indexOf(0, 5)
  if (end === -1 || end + 5 > message.length) return undefined
  const length = message.readInt32BE(end + 1)
  if (length < 0 || end + 5 + length !== message.length) return undefined
  return { mechanism: message.subarray(5, end).toString("latin1"), data: message.subarray(end + 5).toString("utf8") }
}

export const servePglite = (db: PgliteSession, options: PgliteServerOptions): Promise<PgliteServer> => {
  if (options.password.length === 0) return Promise.reject(new Error("servePglite: a password is required"))
  const verifier = scramVerifier(options.password)
  const authenticationTimeoutMs = options.authenticationTimeoutMs ?? DEFAULT_AUTHENTICATION_TIMEOUT_MS
  const maxPending = Math.max(1, options.maxPendingAuthentications ?? DEFAULT_MAX_PENDING_AUTHENTICATIONS)
  /** Clients whose connection is open, authenticated or not (released ones leave at once). */
  const clients = new Set<Client>()
  /** Open connections that have not proved the password (refused ones too, until their socket closes), oldest first. */
  const pending = new Set<Client>()
  let authenticatedCount = 0
  const queue: Array<Cycle> = []
  /** The client whose transaction block is open: only its cycles run until it closes the block. */
  let owner: Client | undefined
  /** The owner left with its block open: roll it back before the next cycle. */
  let ownerLeft = false
  /** The owner's last cycle ended with a Flush: its extended-query cycle is still open. */
  let ownerMidCycle = false
  let running = false
  let stopping = false

  const write = (client: Client, data: Uint8Array) => {
    if (!client.closed && data.length > 0) client.socket.write(data)
  }

  /** Run one cycle with the session to itself. */
  const runCycle = (cycle: Cycle) =>
    db.runExclusive(async () => {
      // A client gone mid-cycle still has its cycle run to its end, so the session is left idle.
      for (const message of cycle.messages) await db.execProtocolRawStream(message, { onRawData: (data) => write(cycle.client, data) })
    })

  /** The next cycle allowed to run: the owner's while a transaction block is open, else the oldest. */
  const takeNext = (): Cycle | undefined => {
    if (owner === undefined) return queue.shift()
    const index = queue.findIndex((c) => c.client === owner)
    return index === -1 ? undefined : queue.splice(index, 1)[0]
  }

  /**
   * Clean up after a client that left: end the cycle it left open after a Flush (after an error
   * the session would otherwise skip the next client's messages up to its Sync), then roll back
   * its open transaction block. Only called between cycles; PGlite's own exec takes its locks.
   */
  const abandon = async (midCycle: boolean) => {
    if (midCycle) await db.runExclusive(() => db.execProtocolRawStream(SYNC_MESSAGE, { onRawData: () => {} }))
    if (db.isInTransaction()) await db.exec("ROLLBACK")
  }

  /** Cycles one at a time, until none may run now. */
  const run = async () => {
    if (running) return
    running = true
    try {
      for (;;) {
        if (ownerLeft) {
          ownerLeft = false
          await abandon(ownerMidCycle)
          ownerMidCycle = false
        }
        const cycle = takeNext()
        if (cycle === undefined) return
        try {
          await runCycle(cycle)
        } catch (error) {
          options.onError?.(error)
          cycle.client.socket.destroy()
          release(cycle.client)
        }
        // A client that left during its cycle leaves no open cycle or transaction block behind it.
        if (cycle.client.closed) await abandon(cycle.flushed)
        else {
          owner = cycle.flushed || db.isInTransaction() ? cycle.client : undefined
          ownerMidCycle = cycle.flushed
        }
      }
    } finally {
      running = false
    }
  }

  const kick = () => void run().catch((error: unknown) => options.onError?.(error))

  /** A client that is gone gives back the session: its queued cycles go, its open transaction block is rolled back. */
  const release = (client: Client) => {
    if (client.closed) return
    client.closed = true
    clients.delete(client)
    if (client.authenticated) authenticatedCount--
    for (let i = queue.length - 1; i >= 0; i--) if (queue[i]!.client === client) queue.splice(i, 1)
    if (owner === client) {
      owner = undefined
      ownerLeft = true
    }
  }

  /** Refuse a client that has not proved the password, with the error PostgreSQL gives, and hang up. */
  const refuse = (client: Client) => {
    client.socket.end(passwordFailed(client.user))
    release(client)
  }

  /**
   * One message of the password exchange: the SASLInitialResponse, then the SASLResponse. Anything
   * else before the exchange succeeds is refused. True once the client is authenticated.
   */
  const authenticate = (client: Client, message: Buffer): boolean => {
    const scram = client.scram
    if (scram === undefined || message[0] !== TYPE_PASSWORD) {
      refuse(client)
      return false
    }
    const final = scram.answered
    let step: ScramStep
    if (!final) {
      const initial = saslInitialResponse(message)
      step = initial?.mechanism === SCRAM_SHA_256 ? scram.first(initial.data) : { ok: false, error: "unsupported mechanism" }
    } else step = scram.final(message.subarray(5).toString("utf8"))
    if (!step.ok) {
      refuse(client)
      return false
    }
    if (final && !admit(client)) return false
    client.socket.write(final ? authenticationSaslFinal(step.reply) : authenticationSaslContinue(step.reply))
    if (final) {
      client.scram = undefined
      client.authenticated = true
    }
    return final
  }

  /** Proved: the client now takes one of the `maxConnections` slots, if one is free. */
  const admit = (client: Client): boolean => {
    if (authenticatedCount >= options.maxConnections) {
      client.socket.end(TOO_MANY_CLIENTS)
      release(client)
      return false
    }
    pending.delete(client)
    clearTimeout(client.authenticationTimer)
    client.authenticationTimer = undefined
    authenticatedCount++
    return true
  }

  const onData = (client: Client, data: Buffer) => {
    if (client.closed) return
    client.buffer = client.buffer.length === 0 ? data : Buffer.concat([client.buffer, data])
    let queued = false
    for (;;) {
      const length = messageLength(client.buffer, client.started, client.authenticated ? MAX_MESSAGE_BYTES : MAX_UNAUTHENTICATED_BYTES)
      if (length === 0) break
      if (length < 0) {
        client.socket.destroy()
        return
      }
      const message = client.buffer.subarray(0, length)
      client.buffer = client.buffer.subarray(length)
      if (!client.started) {
        const code = message.readInt32BE(4)
        if (code === SSL_REQUEST || code === GSS_ENCRYPTION_REQUEST) {
          client.socket.write("N") // no encryption on loopback; the client goes on in the clear
          continue
        }
        if (code === CANCEL_REQUEST || code !== PROTOCOL_3) {
          client.socket.destroy()
          return
        }
        client.started = true
        client.startup = message
        client.user = startupUser(message)
        client.scram = scramExchange(verifier)
        client.socket.write(AUTHENTICATION_SASL)
        continue
      }
      const type = message[0]
      if (!client.authenticated) {
        if (type === TYPE_TERMINATE) {
          client.socket.end()
          return
        }
        if (!authenticate(client, message)) {
          if (client.closed) return
          continue
        }
        // Proved: now PGlite sees the startup message, and answers it with AuthenticationOk.
        queue.push({ client, messages: [client.startup!], flushed: false })
        client.startup = undefined
        queued = true
        continue
      }
      if (type === TYPE_TERMINATE) {
        client.socket.end()
        return
      }
      client.cycle.push(message)
      if (type === TYPE_SYNC || type === TYPE_QUERY || type === TYPE_FLUSH) {
        queue.push({ client, messages: client.cycle, flushed: type === TYPE_FLUSH })
        client.cycle = []
        queued = true
      }
    }
    if (queued) kick()
  }

  /** Hang up on a client that has not proved the password, at once. */
  const dropPending = (client: Client) => {
    pending.delete(client)
    clearTimeout(client.authenticationTimer)
    client.socket.destroy()
    release(client)
  }

  const server: Server = createServer((socket) => {
    if (stopping) {
      socket.destroy()
      return
    }
    // The newcomer may be the one that knows the password: the longest-waiting stranger makes room.
    if (pending.size >= maxPending) dropPending(pending.values().next().value!)
    socket.setNoDelay(true)
    const client: Client = {
      socket, buffer: Buffer.alloc(0), cycle: [], started: false, startup: undefined, user: "", scram: undefined, authenticated: false,
      authenticationTimer: undefined, closed: false
    }
    client.authenticationTimer = setTimeout(() => dropPending(client), authenticationTimeoutMs)
    clients.add(client)
    pending.add(client)
    socket.on("data", (data: Buffer) => onData(client, data))
    socket.on("error", () => socket.destroy())
    socket.on("close", () => {
      pending.delete(client)
      clearTimeout(client.authenticationTimer)
      release(client)
      kick()
    })
  })

  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port, options.host, () => {
      server.off("error", reject)
      const address = server.address()
      resolve({
        port: typeof address === "object" && address !== null ? address.port : options.port,
        close: () =>
          new Promise<void>((done) => {
            stopping = true
            for (const client of [...clients, ...pending]) client.socket.destroy()
            server.close(() => done())
          })
      })
    })
  })
}
