/**
 * The usage-row gate for requests without a valid key (spec "Storage"): each client address gets
 * at most `perSecond` rows per second of `created_at`; the caller only counts the rest. Pure and
 * allocation-light: two reused maps (this second's and the previous second's counts), so a row
 * that arrives late (a key looked up in the database first) still counts in its own second.
 * Memory is bounded: a map is cleared when its second is over, and holds at most `maxAddresses`
 * addresses; rows of further addresses in that second are refused, so many addresses cannot grow
 * it (and the rows written stay below `maxAddresses * perSecond` a second).
 */
export interface AnonymousRowGate {
  /** Whether the row of a request from `address` received at `createdAtMs` may be written. */
  readonly admit: (address: string, createdAtMs: number, perSecond: number) => boolean
  /** Addresses counted in the current and the previous second. */
  readonly trackedAddresses: () => number
}

/**
 * A row stamped more than this many seconds before the current window is taken for a clock
 * stepped back: the windows restart at its second instead of refusing every row until the clock
 * catches up.
 */
const CLOCK_STEP_BACK_S = 10

export const makeAnonymousRowGate = (options: { readonly maxAddresses: number }): AnonymousRowGate => {
  const maxAddresses = Math.max(0, Math.floor(options.maxAddresses))
  let second = Number.NEGATIVE_INFINITY
  let current = new Map<string, number>()
  let previous = new Map<string, number>()

  /** The counts of second `s`, moving the window forward when `s` is newer; undefined: too old. */
  const countsOf = (s: number): Map<string, number> | undefined => {
    if (s === second) return current
    if (s === second - 1) return previous
    if (!Number.isFinite(s)) return undefined
    if (s < second && s >= second - CLOCK_STEP_BACK_S) return undefined
    if (s === second + 1) {
      const older = previous
      previous = current
      current = older
    } else {
      previous.clear()
    }
    current.clear()
    second = s
    return current
  }

  return {
    admit: (address, createdAtMs, perSecond) => {
      if (!(perSecond >= 1)) return false
      const counts = countsOf(Math.floor(createdAtMs / 1000))
      if (counts === undefined) return false
      const n = counts.get(address)
      if (n === undefined) {
        if (counts.size >= maxAddresses) return false
        counts.set(address, 1)
        return true
      }
      if (n >= perSecond) return false
      counts.set(address, n + 1)
      return true
    },
    trackedAddresses: () => current.size + previous.size
  }
}
