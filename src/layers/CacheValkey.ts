import { Effect, Layer, Redacted } from "effect"
import { Redis } from "ioredis"
import { Cache, CacheError } from "../services/Cache.ts"
import { messageOf } from "../domain/errorMessage.ts"
import { malformedSetting, settingUrl, type StartupError, unreachableDependency } from "../services/StartupError.ts"

/** QUIT waits for a reply: only ask a connected client; otherwise just drop the socket. */
const closeClient = (c: Redis) =>
  Effect.promise(() => (c.status === "ready" ? c.quit().then(() => undefined, () => c.disconnect()) : Promise.resolve(c.disconnect()))).pipe(
    Effect.timeout("2 seconds"),
    Effect.catch(() => Effect.sync(() => c.disconnect()))
  )

/**
 * A server that is connected but not answering must not stall callers (reconciles, refills):
 * every command on the main connection gives up after this long.
 */
const COMMAND_TIMEOUT_MS = 1000

/** host:port of a Valkey URL, for messages (never its password). */
const valkeyAddress = (url: Redacted.Redacted<string>) => {
  const parsed = new URL(Redacted.value(url))
  return `${parsed.hostname}:${parsed.port === "" ? "6379" : parsed.port}`
}

/** A Valkey URL the client can use: redis:// or rediss:// with a host (ioredis takes anything else for a host name or a socket path). */
export const checkValkeyUrl = (variable: string, url: Redacted.Redacted<string>): Effect.Effect<void, StartupError> =>
  settingUrl(variable, Redacted.value(url), ["redis:", "rediss:"], "redis://host:6379 or rediss://host:6379").pipe(
    Effect.flatMap((parsed) => parsed.hostname === "" ? Effect.fail(malformedSetting(variable, "the URL names no host")) : Effect.void)
  )

const fail = (cause: unknown) =>
  new CacheError({ reason: "Command", message: messageOf(cause) })

/** How long start-up gives the server to answer (the client's connect timeout). */
const CONNECT_WAIT_MS = 2000

/**
 * Wait until the client is ready, at most CONNECT_WAIT_MS: undefined once ready, else why not
 * (the last connection error's code, e.g. ECONNREFUSED, or that nothing answered in time).
 */
const waitUntilReady = (client: Redis) =>
  Effect.callback<string | undefined>((resume) => {
    if (client.status === "ready") return resume(Effect.succeed(undefined))
    let lastError: string | undefined
    const onError = (e: Error & { code?: unknown }) => {
      lastError = typeof e.code === "string" ? e.code : e.message
    }
    const stopWaiting = () => {
      clearTimeout(timer)
      client.off("ready", onReady)
      client.off("error", onError)
    }
    const onReady = () => {
      stopWaiting()
      resume(Effect.succeed(undefined))
    }
    const timer = setTimeout(() => {
      stopWaiting()
      resume(Effect.succeed(lastError ?? `no answer within ${CONNECT_WAIT_MS / 1000} s`))
    }, CONNECT_WAIT_MS)
    client.on("error", onError)
    client.once("ready", onReady)
    return Effect.sync(stopWaiting)
  })

/**
 * Valkey / ElastiCache through ioredis (`rediss://` = TLS). Commands fail fast while the server is
 * unreachable (no offline queue) or stops answering (command timeout), so callers degrade
 * (per-node limits) instead of piling up; ioredis keeps reconnecting in the background.
 * `notReady`: why the server was not ready within the connect wait, undefined if it was.
 */
const openValkeyCache = (url: Redacted.Redacted<string>) =>
  Effect.gen(function*() {
    const options = { enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: CONNECT_WAIT_MS, lazyConnect: false, commandTimeout: COMMAND_TIMEOUT_MS }
    const client = yield* Effect.acquireRelease(
      Effect.sync(() => new Redis(Redacted.value(url), options)),
      closeClient
    )
    // Errors are surfaced per command; the connection-level event only needs a listener.
    client.on("error", () => {})
    // Give a reachable server a moment so the first batch does not fail.
    const notReady = yield* waitUntilReady(client)
    const run = <A>(f: (c: Redis) => Promise<A>) =>
      Effect.tryPromise({
        try: () => {
          if (client.status !== "ready") return Promise.reject(new Error(`valkey ${client.status}`))
          return f(client)
        },
        catch: (cause) =>
          client.status === "ready" ? fail(cause) : new CacheError({ reason: "Unavailable", message: String(cause) })
      })
    const execPipeline = <A>(build: (p: ReturnType<Redis["pipeline"]>) => void, read: (results: Array<[Error | null, unknown]>) => A) =>
      run(async (c) => {
        const p = c.pipeline()
        build(p)
        const results = (await p.exec()) ?? []
        const firstError = results.find(([e]) => e !== null)
        if (firstError?.[0]) throw firstError[0]
        return read(results)
      })

    const cache = Cache.of({
      kind: "valkey",
      ping: run((c) => c.ping()).pipe(Effect.asVoid),
      get: (key) => run((c) => c.get(key)).pipe(Effect.map((v) => v ?? undefined)),
      getMany: (keys) => keys.length === 0 ? Effect.succeed([]) : run((c) => c.mget(...keys)).pipe(Effect.map((vs) => vs.map((v) => v ?? undefined))),
      set: (key, value, ttlMs) => run((c) => ttlMs === undefined ? c.set(key, value) : c.set(key, value, "PX", ttlMs)).pipe(Effect.asVoid),
      setIfAbsent: (key, value, ttlMs) =>
        run((c) => ttlMs === undefined ? c.set(key, value, "NX") : c.set(key, value, "PX", ttlMs, "NX")).pipe(Effect.map((r) => r === "OK")),
      hgetall: (key) => run((c) => c.hgetall(key)),
      hsetMany: (writes) =>
        writes.length === 0 ? Effect.void : execPipeline((p) => {
          for (const w of writes) {
            p.hset(w.key, w.values)
            if (w.ttlMs !== undefined) p.pexpire(w.key, w.ttlMs)
          }
        }, () => undefined),
      del: (keys) => keys.length === 0 ? Effect.void : run((c) => c.del(...keys)).pipe(Effect.asVoid),
      incrMany: (increments) =>
        increments.length === 0 ? Effect.succeed([]) : execPipeline((p) => {
          for (const i of increments) {
            p.incrby(i.key, i.by)
            p.pexpire(i.key, i.ttlMs)
          }
        }, (results) => increments.map((_, n) => Number(results[n * 2]?.[1] ?? 0))),
      zadd: (key, entries, ttlMs) =>
        entries.length === 0 ? Effect.void : execPipeline((p) => {
          p.zadd(key, ...entries.flatMap((e) => [e.score, e.member]))
          if (ttlMs !== undefined) p.pexpire(key, ttlMs)
        }, () => undefined),
      zrangeByScore: (key, min, max) => run((c) => c.zrangebyscore(key, min, max)),
      zremRangeByScore: (key, min, max) => run((c) => c.zremrangebyscore(key, min, max)).pipe(Effect.asVoid),
      publish: (channel, message) => run((c) => c.publish(channel, message)).pipe(Effect.asVoid),
      subscribe: (channel, onMessage) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            // A subscriber connection cannot run other commands: it gets its own, which also
            // re-subscribes by itself after a reconnect. No command timeout: a SUBSCRIBE queued
            // while the server is away must wait for it, not time out and be forgotten.
            const sub = client.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined })
            sub.on("error", () => {})
            sub.on("message", (ch: string, msg: string) => {
              if (ch === channel) onMessage(msg)
            })
            return sub
          }),
          closeClient
        ).pipe(
          // Return once the server confirmed the subscription, so a message published after this
          // returns is delivered. An unreachable server does not hold the caller up: ioredis
          // subscribes by itself once it connects.
          Effect.tap((sub): Effect.Effect<void> => {
            const confirmed = Effect.tryPromise(() => sub.subscribe(channel)).pipe(Effect.ignore)
            return client.status === "ready"
              ? confirmed.pipe(Effect.timeoutOption("2 seconds"), Effect.asVoid)
              : Effect.forkDetach(confirmed).pipe(Effect.asVoid)
          }),
          Effect.asVoid
        )
    })
    return { cache, notReady }
  })

/** The cache on a Valkey that may be unreachable: it does not hold up the caller, which runs degraded until the server appears. */
export const makeValkeyCache = (url: Redacted.Redacted<string>) => Effect.map(openValkeyCache(url), ({ cache }) => cache)

export const cacheValkeyLayer = (url: Redacted.Redacted<string>) => Layer.effect(Cache, makeValkeyCache(url))

/**
 * The cache on a Valkey that start-up needs (spec: a dependency that cannot be reached at start
 * fails it): one that is not ready within the connect wait fails with a StartupError naming `variable`.
 */
export const requiredValkeyLayer = (url: Redacted.Redacted<string>, variable: string) =>
  Layer.effect(Cache, Effect.flatMap(openValkeyCache(url), ({ cache, notReady }) =>
    notReady === undefined
      ? Effect.succeed(cache)
      : Effect.fail(unreachableDependency(variable, `cannot connect to ${valkeyAddress(url)} (${notReady})`))))
