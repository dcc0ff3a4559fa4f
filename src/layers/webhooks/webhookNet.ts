/**
 * The network side of webhook delivery, with the SSRF guard (spec: targets that resolve to
 * loopback, private, link-local or unspecified addresses are refused unless
 * WEBHOOK_ALLOW_PRIVATE=true). The guard runs twice: when a target is configured (`checkHost`),
 * and inside every connection's own DNS lookup (`guardedLookup`, given to the agents and the UDP
 * sockets), so a name that resolves to a public address at configuration and to 127.0.0.1 later
 * (DNS rebinding) is refused at connect time. IP literals never reach a lookup: checked directly.
 */
import { createSocket, type Socket as UdpSocket } from "node:dgram"
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns"
import { Agent as HttpAgent, request as httpRequest } from "node:http"
import { Agent as HttpsAgent, request as httpsRequest } from "node:https"
import { isIP, type LookupFunction } from "node:net"
import { isForbiddenAddress } from "../../domain/webhook.ts"

export class ForbiddenTargetError extends Error {
  readonly code = "ETB_FORBIDDEN_TARGET"
}

const refusal = (host: string, address: string) =>
  new ForbiddenTargetError(`${host} resolves to ${address}, a loopback, private, link-local or unspecified address (WEBHOOK_ALLOW_PRIVATE=true allows it)`)

/** A `lookup` for sockets and agents: node's own, answering an error when any address is forbidden. */
export const guardedLookup = (allowPrivate: boolean): LookupFunction =>
  (hostname: string, options: LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | Array<LookupAddress>, family?: number) => void): void => {
    const opts: LookupOptions = typeof options === "number" ? { family: options } : { ...options }
    dnsLookup(hostname, { ...opts, all: true }, (err, addresses) => {
      if (err !== null) return callback(err, [])
      const bad = allowPrivate ? undefined : addresses.find((a) => isForbiddenAddress(a.address))
      if (bad !== undefined) return callback(refusal(hostname, bad.address), [])
      if (addresses.length === 0) return callback(Object.assign(new Error(`${hostname}: no address`), { code: "ENOTFOUND" }), [])
      if (opts.all === true) return callback(null, addresses)
      callback(null, addresses[0]!.address, addresses[0]!.family)
    })
  }

/** Configuration time: the host's addresses are all allowed; undefined, or what is wrong. */
export const checkHost = (host: string, allowPrivate: boolean): Promise<string | undefined> => {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host
  if (isIP(bare) !== 0) return Promise.resolve(!allowPrivate && isForbiddenAddress(bare) ? refusal(bare, bare).message : undefined)
  return new Promise((resolve) => {
    guardedLookup(allowPrivate)(bare, { all: true }, (err) => resolve(err === null ? undefined : err instanceof ForbiddenTargetError ? err.message : `${bare} does not resolve (${err.code ?? err.message})`))
  })
}

/** What one HTTP attempt came to: the receiver's status (0: timeout, refused, no answer) and how long it took. */
export interface HttpOutcome {
  readonly status: number
  readonly latencyMs: number
  /** Why there is no status (a timeout, a refused target, a connection error). */
  readonly error: string | undefined
  /** The receiver's Retry-After in ms (seconds form), when it sent one. */
  readonly retryAfterMs?: number | undefined
}

export interface HttpSender {
  readonly post: (url: URL, headers: Readonly<Record<string, string>>, body: string, timeoutMs: number) => Promise<HttpOutcome>
  readonly close: () => void
}

export interface SenderOptions {
  readonly allowPrivate: boolean
  /** Certificates to trust besides the system's (tests' self-signed receivers). */
  readonly ca?: string | ReadonlyArray<string> | undefined
}

/** Keep-alive agents (one connection per webhook at a time: deliveries are sequential per endpoint). */
export const makeHttpSender = (options: SenderOptions): HttpSender => {
  const lookup = guardedLookup(options.allowPrivate)
  const common = { keepAlive: true, keepAliveMsecs: 30_000, maxSockets: Infinity, maxFreeSockets: 4096, lookup } as const
  const http = new HttpAgent(common)
  const https = new HttpsAgent({ ...common, ...(options.ca === undefined ? {} : { ca: options.ca as string | Array<string> }) })
  const post = (url: URL, headers: Readonly<Record<string, string>>, body: string, timeoutMs: number): Promise<HttpOutcome> =>
    new Promise((resolve) => {
      const started = performance.now()
      let settled = false
      let timer: ReturnType<typeof setTimeout> | undefined
      let retryAfterMs: number | undefined
      const done = (status: number, error: string | undefined) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        resolve({ status, latencyMs: performance.now() - started, error, retryAfterMs })
      }
      const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname
      if (!options.allowPrivate && isIP(host) !== 0 && isForbiddenAddress(host)) return done(0, refusal(host, host).message)
      const isHttps = url.protocol === "https:"
      if (!isHttps && !options.allowPrivate) return done(0, "plain http:// needs WEBHOOK_ALLOW_PRIVATE=true")
      const payload = Buffer.from(body)
      const req = (isHttps ? httpsRequest : httpRequest)(url, {
        method: "POST",
        agent: isHttps ? https : http,
        headers: { ...headers, "content-type": "application/json", "content-length": String(payload.length), "user-agent": "trinity-beast-webhook/1" }
      }, (res) => {
        const retryAfter = res.headers["retry-after"]
        if (retryAfter !== undefined && /^\d{1,9}$/.test(retryAfter.trim())) retryAfterMs = Number(retryAfter.trim()) * 1000
        // The status is what counts; the body is read and dropped (at most 64 KiB, then the connection goes).
        let read = 0
        res.on("data", (chunk: Buffer) => {
          read += chunk.length
          if (read > 65_536) res.destroy()
        })
        res.on("end", () => done(res.statusCode ?? 0, undefined))
        res.on("error", () => done(res.statusCode ?? 0, undefined))
        res.on("close", () => done(res.statusCode ?? 0, undefined))
      })
      timer = setTimeout(() => {
        req.destroy()
        done(0, `no answer within ${timeoutMs} ms`)
      }, timeoutMs)
      req.on("error", (e: NodeJS.ErrnoException) => done(0, e instanceof ForbiddenTargetError ? e.message : (e.code ?? e.message)))
      req.end(payload)
    })
  return {
    post,
    close: () => {
      http.destroy()
      https.destroy()
    }
  }
}

export interface UdpSender {
  /** Fire and forget; answers an error message when the datagram could not be sent (a refused target included). */
  readonly send: (host: string, port: number, datagram: string) => Promise<string | undefined>
  readonly close: () => void
}

export const makeUdpSender = (options: SenderOptions): UdpSender => {
  const lookup = guardedLookup(options.allowPrivate)
  let v4: UdpSocket | undefined
  let v6: UdpSocket | undefined
  // The address is resolved and checked here for each datagram, and the datagram goes to exactly
  // that address (a socket's own lookup would also be asked for its bind address).
  const socketFor = (family: 4 | 6) => {
    const make = (type: "udp4" | "udp6") => {
      const socket = createSocket(type).unref()
      socket.on("error", () => {})
      return socket
    }
    return family === 4 ? (v4 ??= make("udp4")) : (v6 ??= make("udp6"))
  }
  const describe = (e: Error) => (e instanceof ForbiddenTargetError ? e.message : ((e as NodeJS.ErrnoException).code ?? e.message))
  const resolveOne = (host: string) =>
    new Promise<{ readonly address: string; readonly family: 4 | 6 } | string>((resolve) => {
      const family = isIP(host)
      if (family !== 0) return resolve(!options.allowPrivate && isForbiddenAddress(host) ? refusal(host, host).message : { address: host, family: family === 6 ? 6 : 4 })
      lookup(host, { all: false }, (err, address, fam) =>
        resolve(err !== null ? describe(err) : typeof address === "string" ? { address, family: fam === 6 ? 6 : 4 } : `${host}: no address`))
    })
  return {
    send: async (host, port, datagram) => {
      const target = await resolveOne(host)
      if (typeof target === "string") return target
      return new Promise<string | undefined>((resolve) =>
        socketFor(target.family).send(datagram, port, target.address, (e) => resolve(e === null || e === undefined ? undefined : describe(e))))
    },
    close: () => {
      v4?.close()
      v6?.close()
    }
  }
}
