import { Context, Data, type Effect, type Scope } from "effect"

export class CacheError extends Data.TaggedError("CacheError")<{
  readonly reason: "Unavailable" | "Command"
  readonly message: string
}> {}

export interface CounterIncrement {
  readonly key: string
  readonly by: number
  /** Expiry set on the counter (ms), refreshed by every increment. */
  readonly ttlMs: number
}

export interface HashWrite {
  readonly key: string
  readonly values: Readonly<Record<string, string>>
  readonly ttlMs?: number
}

/**
 * The shared cache (Valkey/ElastiCache in production, in-process on a laptop). A narrow, typed
 * surface on purpose: nothing here can run an arbitrary command. Batch methods are one round trip.
 */
export class Cache extends Context.Service<Cache, {
  readonly kind: "valkey" | "memory"
  readonly ping: Effect.Effect<void, CacheError>
  readonly get: (key: string) => Effect.Effect<string | undefined, CacheError>
  readonly getMany: (keys: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<string | undefined>, CacheError>
  readonly set: (key: string, value: string, ttlMs?: number) => Effect.Effect<void, CacheError>
  /** SET only when absent; true when this call set it. */
  readonly setIfAbsent: (key: string, value: string, ttlMs?: number) => Effect.Effect<boolean, CacheError>
  readonly hgetall: (key: string) => Effect.Effect<Readonly<Record<string, string>>, CacheError>
  readonly hsetMany: (writes: ReadonlyArray<HashWrite>) => Effect.Effect<void, CacheError>
  readonly del: (keys: ReadonlyArray<string>) => Effect.Effect<void, CacheError>
  /** INCRBY each counter and (re)set its TTL; returns the new totals in order. */
  readonly incrMany: (increments: ReadonlyArray<CounterIncrement>) => Effect.Effect<ReadonlyArray<number>, CacheError>
  readonly zadd: (key: string, entries: ReadonlyArray<{ readonly score: number; readonly member: string }>, ttlMs?: number) => Effect.Effect<void, CacheError>
  readonly zrangeByScore: (key: string, min: number, max: number) => Effect.Effect<ReadonlyArray<string>, CacheError>
  readonly zremRangeByScore: (key: string, min: number, max: number) => Effect.Effect<void, CacheError>
  readonly publish: (channel: string, message: string) => Effect.Effect<void, CacheError>
  /** Deliver each message on `channel` to `onMessage` until the scope closes. */
  readonly subscribe: (channel: string, onMessage: (message: string) => void) => Effect.Effect<void, CacheError, Scope.Scope>
}>()("tb/Cache") {}
