import type { Histogram, Registry } from "prom-client"

/** One labelled series of a histogram: what the request path holds and calls. */
export interface HistogramSeries {
  readonly observe: (value: number) => void
}

interface SeriesState {
  readonly labels: Readonly<Record<string, string>>
  /** Observations per bucket (not cumulative); the last slot is above every bound. */
  readonly counts: Float64Array
  sum: number
  count: number
}

/**
 * A histogram for the request path: a series is a few numbers, and an observation is a bucket
 * search and three additions, with nothing allocated. prom-client's own Histogram allocates and
 * hashes its label object on every observe, which cost the server ~2 µs a request
 * (bench/README.md). prom-client still renders it: the Registry asks each metric for `get()`
 * (name, help, type and the values with their metric names), for the text format and for
 * cluster aggregation alike.
 */
export const makeSeriesHistogram = (options: {
  readonly name: string
  readonly help: string
  readonly buckets: ReadonlyArray<number>
  readonly registry: Registry
}): { readonly series: (labels: Readonly<Record<string, string>>) => HistogramSeries } => {
  const bounds = Float64Array.from(options.buckets)
  const all: Array<SeriesState> = []

  const valuesOf = (s: SeriesState) => {
    const values: Array<{ readonly metricName: string; readonly labels: Record<string, string | number>; readonly value: number }> = []
    let cumulative = 0
    for (let i = 0; i < bounds.length; i++) {
      cumulative += s.counts[i]!
      values.push({ metricName: `${options.name}_bucket`, labels: { ...s.labels, le: bounds[i]! }, value: cumulative })
    }
    values.push({ metricName: `${options.name}_bucket`, labels: { ...s.labels, le: "+Inf" }, value: s.count })
    values.push({ metricName: `${options.name}_sum`, labels: { ...s.labels }, value: s.sum })
    values.push({ metricName: `${options.name}_count`, labels: { ...s.labels }, value: s.count })
    return values
  }

  const metric = {
    name: options.name,
    help: options.help,
    type: "histogram",
    aggregator: "sum",
    get: () => Promise.resolve({ name: options.name, help: options.help, type: "histogram", aggregator: "sum", values: all.flatMap(valuesOf) }),
    reset: () => {
      for (const s of all) {
        s.counts.fill(0)
        s.sum = 0
        s.count = 0
      }
    }
  }
  // The Registry's type names its own classes, but it needs only `name` and `get()` (and `reset()`).
  options.registry.registerMetric(metric as unknown as Histogram)

  return {
    series: (labels) => {
      const s: SeriesState = { labels, counts: new Float64Array(bounds.length + 1), sum: 0, count: 0 }
      all.push(s)
      return {
        observe: (value) => {
          let i = 0
          while (i < bounds.length && value > bounds[i]!) i++
          s.counts[i]!++
          s.sum += value
          s.count++
        }
      }
    }
  }
}
