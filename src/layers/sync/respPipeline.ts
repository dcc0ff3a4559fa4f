import { Effect, type Scope } from "effect"
import type { Redis } from "ioredis"
import { isIP, connect as netConnect, type Socket } from "node:net"
import { connect as tlsConnect } from "node:tls"

/**
 * A write-only pipeline connection to Valkey for the sync's bulk rows: commands are encoded to
 * RESP text here, a batch at a time, and sent in one write; the replies are only counted and
 * checked for errors. ioredis builds a Command object per command and encodes every argument on
 * its own, which cost the sync ~23 µs of CPU a row (HSET of 18 fields + PEXPIREAT); this costs a
 * few. Everything else the sync does (state, prune, keys) stays on ioredis.
 */
export interface RespPipeline {
  /** Send the commands; resolves once every reply arrived, rejects with the first error reply. */
  readonly exec: (commands: RespBatch) => Promise<void>
  readonly close: () => void
}

/** Commands encoded as RESP, and how many there are. */
export interface RespBatch {
  readonly text: string
  readonly count: number
}

/** Builds a batch: `add("HSET", key, field, value, …)`. */
export const respBatch = () => {
  // One string grown by += (V8 keeps it as a rope until it is written): cheaper than parts + join.
  let text = ""
  let count = 0
  const arg = (a: string) => {
    text += `$${Buffer.byteLength(a)}\r\n${a}\r\n`
  }
  return {
    add: (...args: ReadonlyArray<string>) => {
      text += `*${args.length}\r\n`
      for (const a of args) arg(a)
      count++
    },
    /** One command whose arguments are `head` then `tail` (no array copies for long commands). */
    addWith: (head: ReadonlyArray<string>, tail: ReadonlyArray<string>) => {
      text += `*${head.length + tail.length}\r\n`
      for (const a of head) arg(a)
      for (const a of tail) arg(a)
      count++
    },
    done: (): RespBatch => ({ text, count })
  }
}

/**
 * Length in bytes of the reply starting at `at`, or -1 when `buffer` does not hold all of it yet.
 * Handles every RESP2 type (the commands here answer integers, or errors).
 */
export const replyLength = (buffer: Buffer, at: number): number => {
  if (at >= buffer.length) return -1
  const lineEnd = buffer.indexOf("\r\n", at, "latin1")
  if (lineEnd < 0) return -1
  const type = buffer[at]
  // "+", "-", ":" — one line.
  if (type === 43 || type === 45 || type === 58) return lineEnd + 2 - at
  const n = Number(buffer.toString("latin1", at + 1, lineEnd))
  if (type === 36) {
    if (n < 0) return lineEnd + 2 - at
    const end = lineEnd + 2 + n + 2
    return end <= buffer.length ? end - at : -1
  }
  if (type === 42) {
    let offset = lineEnd + 2
    for (let i = 0; i < n; i++) {
      const len = replyLength(buffer, offset)
      if (len < 0) return -1
      offset += len
    }
    return offset - at
  }
  throw new Error(`unexpected reply type ${String.fromCharCode(type ?? 0)}`)
}

interface Pending {
  remaining: number
  firstError: string | undefined
  readonly resolve: () => void
  readonly reject: (e: Error) => void
}

/** Where and how to connect: what ioredis was given (its `options`). */
export interface RespTarget {
  readonly host: string
  readonly port: number
  readonly tls: boolean
  /** ioredis leaves these null when the URL has none. */
  readonly username: string | null | undefined
  readonly password: string | null | undefined
  readonly db: number
}

/** One connection like `client`'s (host, port, TLS, user, password, database), closed with the scope. */
export const openRespPipelineLike = (client: Redis, timeoutMs: number): Effect.Effect<RespPipeline, Error, Scope.Scope> => {
  const o = client.options
  return openRespPipeline({
    host: o.host ?? "127.0.0.1",
    port: o.port ?? 6379,
    // `rediss://` makes ioredis set tls (true, or the caller's TLS options).
    tls: o.tls !== undefined && o.tls !== null && (o.tls as unknown) !== false,
    username: o.username,
    password: o.password,
    db: o.db ?? 0
  }, timeoutMs)
}

/** Open one connection, authenticate and select the database as ioredis does; fails when it cannot within `timeoutMs`. */
export const openRespPipeline = (target: RespTarget, timeoutMs: number): Effect.Effect<RespPipeline, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => connectPipeline(target, timeoutMs),
      catch: (e) => (e instanceof Error ? e : new Error(String(e)))
    }),
    (p) => Effect.sync(() => p.close())
  )

const connectPipeline = (target: RespTarget, timeoutMs: number): Promise<RespPipeline> =>
  new Promise((resolveOpen, rejectOpen) => {
    const { host, port } = target
    // SNI takes host names only (RFC 6066): none for an IP address.
    const socket: Socket = target.tls ? tlsConnect({ host, port, ...(isIP(host) === 0 ? { servername: host } : {}) }) : netConnect({ host, port })
    socket.setNoDelay(true)
    const queue: Array<Pending> = []
    let buffer: Buffer = Buffer.alloc(0)
    let broken: Error | undefined
    const fail = (e: Error) => {
      if (broken !== undefined) return
      broken = e
      for (const p of queue.splice(0)) p.reject(e)
      socket.destroy()
    }
    socket.on("data", (chunk: Buffer) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk])
      let at = 0
      try {
        while (queue.length > 0) {
          const len = replyLength(buffer, at)
          if (len < 0) break
          const pending = queue[0]!
          if (buffer[at] === 45 && pending.firstError === undefined) pending.firstError = buffer.toString("utf8", at + 1, at + len - 2)
          at += len
          if (--pending.remaining === 0) {
            queue.shift()
            if (pending.firstError === undefined) pending.resolve()
            else pending.reject(new Error(pending.firstError))
          }
        }
      } catch (e) {
        fail(e instanceof Error ? e : new Error(String(e)))
        return
      }
      buffer = at === buffer.length ? Buffer.alloc(0) : buffer.subarray(at)
    })
    socket.on("error", (e) => fail(e))
    socket.on("close", () => fail(new Error("connection closed")))

    const exec = (batch: RespBatch): Promise<void> => {
      if (broken !== undefined) return Promise.reject(broken)
      if (batch.count === 0) return Promise.resolve()
      return new Promise<void>((resolve, reject) => {
        queue.push({ remaining: batch.count, firstError: undefined, resolve, reject })
        socket.write(batch.text, "utf8")
      })
    }
    const timer = setTimeout(() => {
      const e = new Error(`no answer within ${timeoutMs / 1000} s`)
      fail(e)
      rejectOpen(e)
    }, timeoutMs)
    const opened = () => {
      try {
        sayHello()
      } catch (e) {
        clearTimeout(timer)
        socket.destroy()
        rejectOpen(e)
      }
    }
    const sayHello = () => {
      const hello = respBatch()
      if (typeof target.password === "string" && target.password !== "") {
        if (typeof target.username === "string" && target.username !== "") hello.add("AUTH", target.username, target.password)
        else hello.add("AUTH", target.password)
      }
      if (target.db !== 0) hello.add("SELECT", String(target.db))
      hello.add("PING")
      exec(hello.done()).then(
        () => {
          clearTimeout(timer)
          resolveOpen({ exec, close: () => void socket.end() })
        },
        (e: unknown) => {
          clearTimeout(timer)
          socket.destroy()
          rejectOpen(e)
        }
      )
    }
    socket.once(target.tls ? "secureConnect" : "connect", opened)
    socket.once("error", (e) => {
      clearTimeout(timer)
      rejectOpen(e)
    })
  })
