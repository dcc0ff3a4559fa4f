import { Context } from "effect"
import type { UsageFacts } from "../domain/usageChunk.ts"

/** What the partner stream counts, read at each scrape. */
export interface StreamCounts {
  readonly connections: number
  readonly opened: number
  readonly slowConsumerCloses: number
  readonly messagesSent: number
}

/** One batch the queued writer handled. */
export interface QueuedWriterBatch {
  readonly messages: number
  readonly stored: number
  readonly poison: number
  readonly rows: number
  readonly inserted: number
  readonly seconds: number
}

/** A family of values read when metrics are scraped (counts kept elsewhere, levels, health). */
export interface ScrapedFamily {
  readonly name: string
  readonly help: string
  /** `counter`: only ever grows (a reset of its source shows as a counter reset). */
  readonly type: "counter" | "gauge"
  readonly labelNames: ReadonlyArray<string>
  /** How the workers' values of a gauge combine under LPO_WORKERS > 1 (default: summed). */
  readonly acrossWorkers?: "sum" | "min" | "max"
  readonly read: () => ReadonlyArray<{ readonly labels: Readonly<Record<string, string>>; readonly value: number }>
}

/**
 * Process metrics (spec "Metrics"): the recording side, called by the code that knows the facts.
 * `answered` is synchronous and cheap: the usage sink calls it for every answered request and
 * webhook delivery, on the serving thread. The default records nothing, so a program or test
 * that does not serve metrics need not provide it.
 */
export interface MetricsRecorder {
  readonly answered: (facts: UsageFacts) => void
  /** The partner stream's own counts, read at each scrape. */
  readonly streamHub: (read: () => StreamCounts) => void
  readonly queuedWriterBatch: (batch: QueuedWriterBatch) => void
  readonly queuedWriterRetry: () => void
  /** Values another part keeps, exposed as they are at each scrape. */
  readonly addScraped: (family: ScrapedFamily) => void
  /** The Prometheus text exposition of everything recorded. */
  readonly exposition: () => Promise<{ readonly contentType: string; readonly body: string }>
}

const ignore = () => {}

export const NO_METRICS: MetricsRecorder = {
  answered: ignore,
  streamHub: ignore,
  queuedWriterBatch: ignore,
  queuedWriterRetry: ignore,
  addScraped: ignore,
  exposition: () => Promise.resolve({ contentType: "text/plain; version=0.0.4; charset=utf-8", body: "" })
}

export const Metrics = Context.Reference<MetricsRecorder>("tb/Metrics", { defaultValue: () => NO_METRICS })
