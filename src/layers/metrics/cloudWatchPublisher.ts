import { Duration, Effect, Schedule } from "effect"
import { addRequest, type Datum, datumsOf, emptyMinute, MINUTE_MS, type MinuteFigures } from "../../domain/minuteFigures.ts"
import { CloudWatch, CLOUDWATCH_MAX_DATUMS } from "../../services/CloudWatch.ts"
import type { ScrapedFamily } from "../../services/Metrics.ts"

/** The services whose figures go to CloudWatch, each to `<prefix>/<service>`. */
export const PUBLISHED_SERVICES = ["LPO", "LRS"] as const
type Published = (typeof PUBLISHED_SERVICES)[number]
const isPublished = (service: string): service is Published => service === "LPO" || service === "LRS"

/**
 * The minutes being counted, per service. `add` is what the request path pays: a map lookup and a
 * few increments. A minute is closed (and published) once a later one has begun.
 */
export const makeMinuteBook = () => {
  const open = new Map<Published, MinuteFigures>()
  const closed: Array<{ readonly service: Published; readonly figures: MinuteFigures }> = []
  return {
    add: (service: string, status: number, code: string, latencyUs: number, at: number) => {
      if (!isPublished(service)) return
      const minute = at - (at % MINUTE_MS)
      let m = open.get(service)
      if (m === undefined || m.minute !== minute) {
        if (m !== undefined) closed.push({ service, figures: m })
        open.set(service, m = emptyMinute(minute))
      }
      addRequest(m, status, code, latencyUs)
    },
    /** Minutes that ended before `now` (every minute when `all`), oldest first. */
    take: (now: number, all: boolean) => {
      for (const [service, m] of open) {
        if (all || m.minute + MINUTE_MS <= now) {
          closed.push({ service, figures: m })
          open.delete(service)
        }
      }
      return closed.splice(0, closed.length)
    }
  }
}
export type MinuteBook = ReturnType<typeof makeMinuteBook>

export interface CloudWatchPublisherOptions {
  /** e.g. `TrinityBeast`: figures go to `TrinityBeast/LPO` and `TrinityBeast/LRS`. */
  readonly prefix: string
  readonly intervalMs: number
  /** Datums kept for a later try while CloudWatch fails; past it the oldest are dropped (and counted). */
  readonly maxPendingDatums: number
}

/**
 * Publishes the book's closed minutes every `intervalMs` (a minute in production), in batched
 * PutMetricData calls (one per namespace, up to 1,000 datums each), off the request path. What
 * CloudWatch refuses is dropped and counted; what fails otherwise is kept for the next try, up to
 * `maxPendingDatums`, past which the oldest is dropped and counted: memory never grows without
 * bound. At shutdown the minute in progress is published too (one try). Returns the counts as a
 * scraped family for /metrics.
 */
export const runCloudWatchPublisher = (book: MinuteBook, options: CloudWatchPublisherOptions) =>
  Effect.gen(function*() {
    const cloudWatch = yield* CloudWatch
    const pending = new Map<Published, Array<Datum>>(PUBLISHED_SERVICES.map((s) => [s, []]))
    const counts = { sent: 0, refused: 0, dropped: 0, failedCalls: 0 }

    const bound = () => {
      let total = 0
      for (const d of pending.values()) total += d.length
      for (const service of PUBLISHED_SERVICES) {
        const datums = pending.get(service)!
        while (total > options.maxPendingDatums && datums.length > 0) {
          const excess = Math.min(total - options.maxPendingDatums, datums.length)
          datums.splice(0, excess)
          counts.dropped += excess
          total -= excess
        }
      }
    }

    const sendOne = (service: Published) =>
      Effect.gen(function*() {
        const datums = pending.get(service)!
        while (datums.length > 0) {
          const batch = datums.slice(0, CLOUDWATCH_MAX_DATUMS)
          const outcome = yield* cloudWatch.put(`${options.prefix}/${service}`, batch).pipe(Effect.result)
          if (outcome._tag === "Success") {
            counts.sent += batch.length
          } else if (outcome.failure.refused) {
            counts.refused += batch.length
            yield* Effect.logWarning("CloudWatch refused metric data; dropped", { namespace: `${options.prefix}/${service}`, datums: batch.length, reason: outcome.failure.message })
          } else {
            counts.failedCalls++
            return yield* Effect.logWarning("CloudWatch unavailable; metric data kept for the next try", { pending: datums.length, reason: outcome.failure.message })
          }
          datums.splice(0, batch.length)
        }
      })

    const publish = (all: boolean) =>
      Effect.gen(function*() {
        for (const { service, figures } of book.take(Date.now(), all)) pending.get(service)!.push(...datumsOf(figures))
        bound()
        for (const service of PUBLISHED_SERVICES) yield* sendOne(service)
      })

    yield* Effect.addFinalizer(() => publish(true).pipe(Effect.timeout(Duration.seconds(5)), Effect.ignore))
    yield* publish(false).pipe(Effect.repeat(Schedule.spaced(Duration.millis(options.intervalMs))), Effect.forkScoped)

    const family: ScrapedFamily = {
      name: "tb_cloudwatch_datums_total",
      help: "CloudWatch metric datums by outcome: sent, refused (by CloudWatch, dropped), dropped (kept too long while CloudWatch failed)",
      type: "counter",
      labelNames: ["outcome"],
      read: () => [
        { labels: { outcome: "sent" }, value: counts.sent },
        { labels: { outcome: "refused" }, value: counts.refused },
        { labels: { outcome: "dropped" }, value: counts.dropped }
      ]
    }
    return family
  })
