/**
 * The main figures of one service for one minute, as published to CloudWatch: counts, and request
 * latencies as CloudWatch's Values/Counts (each latency rounded to one of ~10 values a decade, so
 * a minute holds at most ~60 distinct values: under the 150 a datum takes, and CloudWatch can
 * still give percentiles from them).
 */
export interface MinuteFigures {
  /** Epoch ms of the minute's start. */
  readonly minute: number
  requests: number
  serverErrors: number
  clientErrors: number
  rateLimited: number
  quotaExceeded: number
  /** Rounded latency in milliseconds → requests. */
  readonly latencyMs: Map<number, number>
}

export const MINUTE_MS = 60_000

const STEPS_PER_DECADE = 10

/** Steps from 1 ns (10^-6 ms) to 10^6 ms, each step's value computed once. */
const LOWEST_STEP = -6 * STEPS_PER_DECADE
const STEP_VALUES = Array.from({ length: 13 * STEPS_PER_DECADE + 1 }, (_, i) => Number((10 ** ((i + LOWEST_STEP) / STEPS_PER_DECADE)).toPrecision(3)))

/** A latency rounded to the nearest of 10 log-spaced values per decade, at 3 significant digits. */
export const roundLatencyMs = (ms: number): number => {
  if (!(ms > 0)) return 0
  const step = Math.round(Math.log10(ms) * STEPS_PER_DECADE)
  return STEP_VALUES[Math.min(Math.max(step - LOWEST_STEP, 0), STEP_VALUES.length - 1)]!
}

export const emptyMinute = (minute: number): MinuteFigures => ({
  minute, requests: 0, serverErrors: 0, clientErrors: 0, rateLimited: 0, quotaExceeded: 0, latencyMs: new Map()
})

/** Adds one answered request to its minute. */
export const addRequest = (m: MinuteFigures, status: number, code: string, latencyUs: number): void => {
  m.requests++
  if (status >= 500) m.serverErrors++
  else if (status >= 400) m.clientErrors++
  if (code === "RATE_LIMITED") m.rateLimited++
  else if (code === "QUOTA_EXCEEDED") m.quotaExceeded++
  const ms = roundLatencyMs(latencyUs / 1000)
  m.latencyMs.set(ms, (m.latencyMs.get(ms) ?? 0) + 1)
}

/** One CloudWatch datum, in the shape PutMetricData takes (MetricData entries). */
export interface Datum {
  readonly MetricName: string
  readonly Timestamp: Date
  readonly Unit: "Count" | "Milliseconds"
  readonly Value?: number
  readonly Values?: Array<number>
  readonly Counts?: Array<number>
}

/** The datums of one minute; latency only when the minute had requests. */
export const datumsOf = (m: MinuteFigures): Array<Datum> => {
  const Timestamp = new Date(m.minute)
  const count = (MetricName: string, Value: number): Datum => ({ MetricName, Timestamp, Unit: "Count", Value })
  const datums = [
    count("Requests", m.requests),
    count("ServerErrors", m.serverErrors),
    count("ClientErrors", m.clientErrors),
    count("RateLimited", m.rateLimited),
    count("QuotaExceeded", m.quotaExceeded)
  ]
  if (m.latencyMs.size > 0) {
    const values = [...m.latencyMs.keys()].sort((a, b) => a - b)
    datums.push({ MetricName: "Latency", Timestamp, Unit: "Milliseconds", Values: values, Counts: values.map((v) => m.latencyMs.get(v) ?? 0) })
  }
  return datums
}
