/**
 * A latency histogram with bounded relative error (DDSketch-style): log-spaced buckets, so any
 * quantile it answers is within about 1 % of the exact value however many rows it covers, and two
 * sketches merge by adding the counts of equal buckets (days merge into a month, groups into a total).
 *
 * Latencies are integer microseconds. Bucket `i ≥ 0` holds the values x with
 * `gamma^(i-1) < x ≤ gamma^i`, i.e. `i = ceil(ln x / ln gamma)` (1 µs is bucket 0); every latency
 * ≤ 0 shares bucket -1 (value 0). PostgreSQL computes the same index with `bucketSql`, so it can
 * `GROUP BY` buckets itself and ship only (bucket, count) pairs.
 *
 * Why 0.4 % and not 1 %: answers are whole microseconds. A bucket narrower than 1 µs holds at most
 * one integer, which is then answered exactly; a wider one starts above 1/(gamma-1) ≈ 125 µs, where
 * its midpoint is within `a` and rounding it to an integer adds at most 0.5/125 = 0.4 %: 0.8 % in all.
 */

export const SKETCH_RELATIVE_ACCURACY = 0.004
export const SKETCH_GAMMA = (1 + SKETCH_RELATIVE_ACCURACY) / (1 - SKETCH_RELATIVE_ACCURACY)
const LN_GAMMA = Math.log(SKETCH_GAMMA)

/** The bucket of latencies ≤ 0. */
export const ZERO_BUCKET = -1

/**
 * Bucket counts as parallel arrays, `buckets` strictly ascending and every count > 0: the layout of
 * the SQL columns (`latency_buckets int[]`, `latency_counts bigint[]`). An empty sketch has none.
 */
export interface LatencySketch {
  readonly buckets: ReadonlyArray<number>
  readonly counts: ReadonlyArray<number>
}

export const EMPTY_SKETCH: LatencySketch = { buckets: [], counts: [] }

/** The bucket index of a latency in µs (see the module doc). */
export const bucketOf = (latencyUs: number): number =>
  latencyUs <= 0 ? ZERO_BUCKET : Math.ceil(Math.log(latencyUs) / LN_GAMMA)

/**
 * The same index in SQL, for an expression `column` holding integer µs. ln(gamma) is written with
 * the digits that read back as the very double used here, so both sides divide by the same number.
 */
export const bucketSql = (column: string): string =>
  `(CASE WHEN ${column} <= 0 THEN ${ZERO_BUCKET} ELSE ceil(ln((${column})::float8) / ${String(LN_GAMMA)}::float8)::int END)`

/**
 * Bytes per (bucket, count) pair of the packed form: int2 bucket (buckets run from -1 to ~2690 for
 * int4 latencies), int4 count, big-endian. 6 bytes keep a day's sketch under PostgreSQL's ~2 kB
 * TOAST threshold, so it is read inline, not decompressed. A count past 2^31-1 (one key, one day,
 * one value, one 0.8 %-wide bucket) fails the refresh with "integer out of range", never wraps.
 */
export const PACKED_PAIR_BYTES = 6

/**
 * SQL aggregate packing (bucket, count) rows into one bytea (the packed form), buckets ascending:
 * what a client decodes with `unpackSketch` far faster than two SQL arrays.
 */
export const packedSketchSql = (bucketColumn: string, countColumn: string): string =>
  `string_agg(int2send((${bucketColumn})::int2) || int4send((${countColumn})::int4), ''::bytea ORDER BY ${bucketColumn})`

/** Calls `add(bucket, count)` for every pair of a packed sketch (see `packedSketchSql`). */
export const forEachPackedPair = (packed: Uint8Array, add: (bucket: number, count: number) => void): void => {
  const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength)
  for (let at = 0; at + PACKED_PAIR_BYTES <= packed.byteLength; at += PACKED_PAIR_BYTES) {
    add(view.getInt16(at), view.getInt32(at + 2))
  }
}

/** The sketch a packed bytea holds. */
export const unpackSketch = (packed: Uint8Array): LatencySketch => {
  const buckets: Array<number> = []
  const counts: Array<number> = []
  forEachPackedPair(packed, (bucket, count) => {
    buckets.push(bucket)
    counts.push(count)
  })
  return { buckets, counts }
}

/** The packed form of a sketch (what `packedSketchSql` makes in PostgreSQL); RangeError past int2/int4. */
export const packSketch = (sketch: LatencySketch): Uint8Array => {
  const packed = new Uint8Array(sketch.buckets.length * PACKED_PAIR_BYTES)
  const view = new DataView(packed.buffer)
  for (let i = 0; i < sketch.buckets.length; i++) {
    const bucket = sketch.buckets[i]!
    const count = sketch.counts[i]!
    if (bucket < -32_768 || bucket > 32_767 || count < 0 || count > 2_147_483_647) {
      throw new RangeError(`packSketch: bucket ${bucket} with count ${count} does not fit int2/int4`)
    }
    view.setInt16(i * PACKED_PAIR_BYTES, bucket)
    view.setInt32(i * PACKED_PAIR_BYTES + 2, count)
  }
  return packed
}

const representatives = new Map<number, number>()

/** The smallest integer ≥ 1 in `bucket` or above, from a guess (gamma^i can sit an ulp across ln's rounding). */
const lowestInteger = (bucket: number, guess: number): number => {
  let x = Math.max(1, guess)
  while (x > 1 && bucketOf(x - 1) >= bucket) x--
  while (bucketOf(x) < bucket) x++
  return x
}

/** The largest integer in `bucket` or below (0 when none is ≥ 1), from a guess. */
const highestInteger = (bucket: number, guess: number): number => {
  let x = Math.max(1, guess)
  while (bucketOf(x + 1) <= bucket) x++
  while (x >= 1 && bucketOf(x) > bucket) x--
  return x
}

/**
 * The integer µs that stands for every latency in `bucket`: the integer nearest the harmonic middle
 * of the integers the bucket holds, so the relative error to the lowest and the highest of them is
 * about equal (≤ a + 0.5/lowest; see the module doc).
 */
export const bucketValue = (bucket: number): number => {
  if (bucket < 0) return 0
  const cached = representatives.get(bucket)
  if (cached !== undefined) return cached
  const low = lowestInteger(bucket, Math.floor(SKETCH_GAMMA ** (bucket - 1)) + 1)
  const high = highestInteger(bucket, Math.floor(SKETCH_GAMMA ** bucket))
  const value = high < low
    // No integer falls in this bucket (only non-integer input reaches it): its geometric-ish middle.
    ? (2 * SKETCH_GAMMA ** bucket) / (SKETCH_GAMMA + 1)
    : Math.min(high, Math.max(low, Math.round((2 * low * high) / (low + high))))
  representatives.set(bucket, value)
  return value
}

/** A sketch from (bucket, count) pairs in any order, equal buckets added, zero counts dropped. */
export const sketchFromPairs = (pairs: Iterable<readonly [bucket: number, count: number]>): LatencySketch => {
  const byBucket = new Map<number, number>()
  for (const [bucket, count] of pairs) {
    if (count !== 0) byBucket.set(bucket, (byBucket.get(bucket) ?? 0) + count)
  }
  const buckets = [...byBucket.keys()].filter((b) => byBucket.get(b) !== 0).sort((a, b) => a - b)
  return { buckets, counts: buckets.map((b) => byBucket.get(b)!) }
}

/** The sketch of some latencies (µs). */
export const sketchOf = (latencies: Iterable<number>): LatencySketch => {
  const pairs: Array<readonly [number, number]> = []
  for (const latency of latencies) pairs.push([bucketOf(latency), 1])
  return sketchFromPairs(pairs)
}

/** Both sketches' counts added (what the sketch of both sets of latencies is). */
export const mergeSketches = (a: LatencySketch, b: LatencySketch): LatencySketch => {
  const buckets: Array<number> = []
  const counts: Array<number> = []
  let i = 0
  let j = 0
  while (i < a.buckets.length || j < b.buckets.length) {
    const ba = i < a.buckets.length ? a.buckets[i]! : Number.POSITIVE_INFINITY
    const bb = j < b.buckets.length ? b.buckets[j]! : Number.POSITIVE_INFINITY
    if (ba === bb) {
      buckets.push(ba)
      counts.push(a.counts[i++]! + b.counts[j++]!)
    } else if (ba < bb) {
      buckets.push(ba)
      counts.push(a.counts[i++]!)
    } else {
      buckets.push(bb)
      counts.push(b.counts[j++]!)
    }
  }
  return { buckets, counts }
}

/** How many latencies the sketch holds. */
export const sketchCount = (sketch: LatencySketch): number => {
  let n = 0
  for (const c of sketch.counts) n += c
  return n
}

/**
 * The q-quantile (0 ≤ q ≤ 1) with PostgreSQL `percentile_disc(q)`'s rank rule: the value of rank
 * max(1, ceil(q·n)) in ascending order (the smallest value whose cumulative fraction is ≥ q),
 * computed in doubles as PostgreSQL does. Answered as its bucket's integer µs; undefined when empty.
 */
export const quantile = (sketch: LatencySketch, q: number): number | undefined => {
  const n = sketchCount(sketch)
  if (n === 0) return undefined
  const rank = Math.max(1, Math.min(n, Math.ceil(q * n)))
  let seen = 0
  for (let i = 0; i < sketch.buckets.length; i++) {
    seen += sketch.counts[i]!
    if (seen >= rank) return bucketValue(sketch.buckets[i]!)
  }
  return bucketValue(sketch.buckets[sketch.buckets.length - 1]!)
}

const ENCODING_VERSION = "1:"

/**
 * Compact text for a sketch (Valkey values, logs): `1:` then one entry per bucket, comma-separated,
 * `<delta>` or `<delta>x<count>` (count omitted when 1), where delta is the bucket minus the
 * previous bucket (minus -1 for the first, so the zero bucket is delta 0). `1:` alone is empty.
 * Example: buckets [-1, 0, 3] with counts [2, 1, 5] → `1:0x2,1,3x5`.
 */
export const encodeSketch = (sketch: LatencySketch): string => {
  const entries: Array<string> = []
  let previous = ZERO_BUCKET
  for (let i = 0; i < sketch.buckets.length; i++) {
    const bucket = sketch.buckets[i]!
    const count = sketch.counts[i]!
    entries.push(count === 1 ? String(bucket - previous) : `${bucket - previous}x${count}`)
    previous = bucket
  }
  return ENCODING_VERSION + entries.join(",")
}

const ENTRY = /^(0|[1-9][0-9]*)(?:x([1-9][0-9]*))?$/

/** The sketch `encodeSketch` wrote, or undefined for any other text (never a partial sketch). */
export const decodeSketch = (text: string): LatencySketch | undefined => {
  if (!text.startsWith(ENCODING_VERSION)) return undefined
  const body = text.slice(ENCODING_VERSION.length)
  if (body === "") return EMPTY_SKETCH
  const buckets: Array<number> = []
  const counts: Array<number> = []
  let previous = ZERO_BUCKET
  for (const entry of body.split(",")) {
    const match = ENTRY.exec(entry)
    if (match === null) return undefined
    const delta = Number(match[1])
    // Strictly ascending: only the first entry (the zero bucket) may have delta 0.
    if (delta === 0 && buckets.length > 0) return undefined
    const count = match[2] === undefined ? 1 : Number(match[2])
    if (!Number.isSafeInteger(delta) || !Number.isSafeInteger(count)) return undefined
    previous += delta
    buckets.push(previous)
    counts.push(count)
  }
  return { buckets, counts }
}
