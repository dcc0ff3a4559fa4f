/**
 * Token-bucket arithmetic for rate limits, as pure functions over immutable state (time in ms).
 * The same math runs per node and against the cluster-wide counters in Valkey, so it holds no
 * clock and no storage of its own.
 */
export interface BucketLimits {
  readonly ratePerSec: number
  readonly burst: number
}

export interface BucketState {
  readonly tokens: number
  readonly updatedAt: number
}

export interface TakeResult {
  readonly allowed: boolean
  readonly state: BucketState
  /** floor(tokens) after the attempt, never negative: the `RateLimit-Remaining` header. */
  readonly remaining: number
  /** 0 when allowed; otherwise whole ms until `n` tokens are available (`Infinity` when they never will be). */
  readonly retryAfterMs: number
}

export const fullBucket = (limits: BucketLimits, now: number): BucketState => ({
  tokens: limits.burst,
  updatedAt: now
})

/**
 * tokens = min(burst, tokens + rate*(now-updatedAt)/1000). When the clock went back
 * (now < updatedAt) nothing is added and updatedAt stays, so a clock step cannot mint tokens.
 */
export const refill = (state: BucketState, limits: BucketLimits, now: number): BucketState => {
  if (!(now > state.updatedAt)) {
    // Still clamp: limits may have been lowered since the state was written.
    return state.tokens > limits.burst ? { tokens: limits.burst, updatedAt: state.updatedAt } : state
  }
  // rate*elapsed first: exact for integer rates and ms, so only the division rounds.
  const tokens = Math.min(limits.burst, state.tokens + (limits.ratePerSec * (now - state.updatedAt)) / 1000)
  return { tokens, updatedAt: now }
}

const remainingOf = (tokens: number): number => Math.max(0, Math.floor(tokens))

/**
 * Whole ms from `refilled.updatedAt` until `n` tokens are there. The closed form can be one ms
 * off either way through float rounding, so it is checked against `refill` itself: waiting the
 * returned time always succeeds, and waiting one ms less does not.
 */
const msUntil = (refilled: BucketState, limits: BucketLimits, n: number): number => {
  if (n > limits.burst || !(limits.ratePerSec > 0)) return Number.POSITIVE_INFINITY
  const enoughAfter = (ms: number): boolean => refill(refilled, limits, refilled.updatedAt + ms).tokens >= n
  let wait = Math.max(1, Math.ceil(((n - refilled.tokens) * 1000) / limits.ratePerSec))
  if (!(wait <= Number.MAX_SAFE_INTEGER)) return Number.POSITIVE_INFINITY
  for (let step = 0; step < 4 && !enoughAfter(wait); step++) wait += 1
  for (let step = 0; step < 4 && wait > 1 && enoughAfter(wait - 1); step++) wait -= 1
  return wait
}

export const tryTake = (state: BucketState, limits: BucketLimits, now: number, n: number = 1): TakeResult => {
  if (!(n >= 0)) throw new RangeError(`tryTake: n must be >= 0, got ${n}`)
  const refilled = refill(state, limits, now)
  if (refilled.tokens >= n) {
    const after: BucketState = { tokens: refilled.tokens - n, updatedAt: refilled.updatedAt }
    return { allowed: true, state: after, remaining: remainingOf(after.tokens), retryAfterMs: 0 }
  }
  return {
    allowed: false,
    state: refilled,
    remaining: remainingOf(refilled.tokens),
    retryAfterMs: msUntil(refilled, limits, n)
  }
}

/**
 * Subtract tokens consumed elsewhere (other cluster nodes). The bucket may go into debt, but
 * never below -burst*debtCapFactor: a stale burst reported late must not lock a key out for long.
 */
export const debit = (
  state: BucketState,
  limits: BucketLimits,
  now: number,
  n: number,
  debtCapFactor: number = 1
): BucketState => {
  const refilled = refill(state, limits, now)
  const floor = -limits.burst * Math.max(0, debtCapFactor)
  // The floor holds even for a debit of nothing: a state already below it is raised to it.
  const debited = n > 0 ? refilled.tokens - n : refilled.tokens
  return { tokens: Math.max(floor, debited), updatedAt: refilled.updatedAt }
}
