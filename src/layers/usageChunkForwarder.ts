import type { UsageChunk } from "../domain/usageChunk.ts"
import { type UsageSinkStats, ZERO_USAGE_STATS } from "../services/UsageSink.ts"

/**
 * On the usage thread: the serving thread's chunks are batched (`batchRows()` rows, or
 * `flushMs()` after the first one waits) and handed to the writer as they are (SQS ships their
 * columns; the database writes its insert's parameters from them). A chunk is acknowledged once
 * written, so a thread that dies before leaves it with the serving thread, which sends it again
 * (ids make a second write harmless). When a write fails, its chunks go to `fallback` (the usage
 * thread spools them, which the batcher replays) and are then acknowledged, and for `bypassMs`
 * after a failure every chunk takes that path, so a destination that is down is not tried twice
 * for every batch. So does every chunk past `maxRows()` waiting here while a write hangs.
 */
export interface ChunkForwarderOptions {
  readonly write: (chunks: ReadonlyArray<UsageChunk>) => Promise<void>
  /** Put a chunk's rows where they survive this thread (the spool). Throws if the chunk's rows cannot be made. */
  readonly fallback: (chunk: UsageChunk) => void
  readonly ack: (seq: number) => void
  /** A chunk whose rows could not be handed anywhere: reported, then acknowledged. */
  readonly lost: (seq: number, error: unknown) => void
  readonly batchRows: () => number
  readonly flushMs: () => number
  /** Rows this forwarder holds (waiting and being written) before further chunks go to `fallback`. */
  readonly maxRows: () => number
  readonly bypassMs?: number
  readonly now?: () => number
}

export interface ChunkForwarder {
  readonly add: (seq: number, chunk: UsageChunk) => void
  /** Write what waits and wait for writes in flight (shutdown). Never rejects. */
  readonly flush: () => Promise<void>
  /** Rows written, batches, rows waiting here, failed writes; spool counts are the sink's. */
  readonly stats: () => UsageSinkStats
}

interface Waiting {
  readonly seq: number
  readonly chunk: UsageChunk
}

export const makeChunkForwarder = (options: ChunkForwarderOptions): ChunkForwarder => {
  const now = options.now ?? Date.now
  const bypassMs = options.bypassMs ?? 5_000
  let waiting: Array<Waiting> = []
  let waitingRows = 0
  let inFlightRows = 0
  let writing: Promise<void> | undefined
  let timer: ReturnType<typeof setTimeout> | undefined
  let bypassUntil = 0
  let stats: UsageSinkStats = ZERO_USAGE_STATS

  const toSink = (c: Waiting) => {
    try {
      options.fallback(c.chunk)
    } catch (error) {
      options.lost(c.seq, error)
    }
    options.ack(c.seq)
  }

  const write = (): Promise<void> => {
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
    const batch = waiting
    const rows = waitingRows
    waiting = []
    waitingRows = 0
    if (batch.length === 0) return Promise.resolve()
    inFlightRows = rows
    const started = now()
    return options.write(batch.map((c) => c.chunk)).then(
      () => {
        stats = { ...stats, written: stats.written + rows, batches: stats.batches + 1, lastBatchMs: now() - started }
        for (const c of batch) options.ack(c.seq)
      },
      () => {
        stats = { ...stats, failures: stats.failures + 1 }
        bypassUntil = now() + bypassMs
        for (const c of batch) toSink(c)
      }
    ).finally(() => {
      inFlightRows = 0
    })
  }

  /** One write at a time; what arrives meanwhile goes in the next one. */
  const kick = () => {
    if (writing !== undefined) return
    writing = write().finally(() => {
      writing = undefined
      if (waitingRows >= options.batchRows()) kick()
      else if (waiting.length > 0) arm()
    })
  }

  const arm = () => {
    if (timer === undefined) timer = setTimeout(() => {
      timer = undefined
      kick()
    }, options.flushMs())
  }

  return {
    add: (seq, chunk) => {
      const c: Waiting = { seq, chunk }
      if (now() < bypassUntil || waitingRows + inFlightRows >= options.maxRows()) return toSink(c)
      waiting.push(c)
      waitingRows += chunk.rows
      if (waitingRows >= options.batchRows()) kick()
      else arm()
    },
    flush: async () => {
      while (writing !== undefined || waiting.length > 0) {
        if (writing !== undefined) await writing
        else kick()
      }
    },
    stats: () => ({ ...stats, buffered: waitingRows + inFlightRows })
  }
}
