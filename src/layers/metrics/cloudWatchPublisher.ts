import { Duration, Effect, Schedule } from "effect"
import { addRequest, type Datum, datumsOf, emptyMinute, MINUTE_MS, type MinuteFigures } from "../../domain/minuteFigures.ts"
import { CloudWatch, CLOUDWATCH_MAX_DATUMS } from "../../services/CloudWatch.ts"
import type { ScrapedFamily } from "../../services/Metrics.ts"

/** The services whose figures go to CloudWatch, each to `<prefix>/<service>`. */
export const PUBLISHED_SERVICES = ["LPO", "LRS"] as const
type Published = (typeof PUBLISHED_SERVICES)[number]
const isPublished = (service: string): service is Published => service === "LPO" || service === "LRS"

/**
 * The minutes being counted, per service. `add` is what the request path pays: a comparison with
 * the service's current minute (a map lookup for a late request of an earlier minute) and a few
 * increments. A minute is taken (and published) once it has ended.
 */
export const makeMinuteBook = () => {
  const open = new Map<Published, Map<number, MinuteFigures>>(PUBLISHED_SERVICES.map((s) => [s, new Map()]))
  const current = new Map<Published, MinuteFigures>()
  return {
    add: (service: string, status: number, code: string, latencyUs: number, at: number) => {
      if (!isPublished(service)) return
      const minute = at - (at % MINUTE_MS)
      let m = current.get(service)
      if (m === undefined || m.minute !== minute) {
        const minutes = open.get(service)!
        m = minutes.get(minute)
        if (m === undefined) minutes.set(minute, m = emptyMinute(minute))
        if (minute >= (current.get(service)?.minute ?? 0)) current.set(service, m)
      }
      addRequest(m, status, code, latencyUs)
    },
    /** Minutes that ended by `now` (every minute when `all`), oldest first. */
    take: (now: number, all: boolean) => {
      const taken: Array<{ readonly service: Published; readonly figures: MinuteFigures }> = []
      for (const [service, minutes] of open) {
        for (const [minute, figures] of minutes) {
          if (!all && minute + MINUTE_MS > now) continue
          taken.push({ service, figures })
          minutes.delete(minute)
          if (current.get(service) === figures) current.delete(service)
        }
      }
      return taken.sort((a, b) => a.figures.minute - b.figures.minute)
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
  /** The longest the last publish may take at shutdown: part of SHUTDOWN_TIMEOUT_MS. */
  readonly finalPublishMs: number
}

/**
 * Publishes the book's closed minutes every `intervalMs` (a minute in production), in batched
 * PutMetricData calls (one per namespace, up to 1,000 datums each), off the request path. What
 * CloudWatch refuses is dropped and counted; what fails otherwise is kept for the next try, up to
 * `maxPendingDatums`, past which the oldest is dropped and counted: memory never grows without
 * bound. At shutdown the minute in progress is published too (one try, within `finalPublishMs`). Returns the counts as a
 * scraped family for /metrics.
 */
export const runCloudWatchPublisher = (book: MinuteBook, options: CloudWatchPublisherOptions) =>
  Effect.gen(function*() {
    const cloudWatch = yield* CloudWatch
    const pending = new Map<Published, Array<Datum>>(PUBLISHED_SERVICES.map((s) => [s, []]))
    const counts = { sent: 0, refused: 0, dropped: 0, failedCalls: 0 }

    /** Past the bound, the oldest datums go first, whichever namespace they belong to. */
    const bound = () => {
      let total = 0
      for (const d of pending.values()) total += d.length
      while (total > options.maxPendingDatums) {
        let oldest: Array<Datum> | undefined
        for (const datums of pending.values()) {
          if (datums.length > 0 && (oldest === undefined || datums[0]!.Timestamp < oldest[0]!.Timestamp)) oldest = datums
        }
        if (oldest === undefined) return
        oldest.shift()
        counts.dropped++
        total--
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

    yield* Effect.addFinalizer(() => publish(true).pipe(Effect.timeout(Duration.millis(options.finalPublishMs)), Effect.ignore))
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
