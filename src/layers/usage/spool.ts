import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { threadId } from "node:worker_threads"

/** The spool of a data directory: the serving thread and the usage thread share it. */
export const usageSpoolDir = (dataDir: string) => join(dataDir, "spool")

const SPOOL_SUFFIX = ".ndjson"

/**
 * The usage spool: batches not written yet, as the same `usage_log` message bodies the queue
 * carries (src/domain/usageQueueMessage.ts), one body per line (a body is JSON text, which holds
 * no raw newline), one file per batch. A file is written atomically (tmp + rename), so a crash
 * mid-write leaves no half file. Replay reads a file's bodies and writes them through the same
 * writer call as a live batch (pipeline.ts).
 *
 * Synchronous and throwing: it runs on the usage thread's pipeline and at the serving thread's
 * shutdown, never per request; every caller catches. Names carry the process and thread, so the
 * serving thread and the usage thread never write the same file.
 */
export interface UsageSpool {
  readonly dir: string
  /** Writes the bodies as one new file. */
  readonly put: (bodies: ReadonlyArray<string>) => void
  /** Spool files, oldest first. */
  readonly files: () => ReadonlyArray<string>
  readonly read: (file: string) => ReadonlyArray<string>
  readonly remove: (file: string) => void
  /** Renames a file to `<name>.bad`: kept for the operator, no longer replayed. */
  readonly quarantine: (file: string) => void
  /** Writes bodies the destination refused straight to a `.bad` file. */
  readonly putRefused: (bodies: ReadonlyArray<string>) => void
  /** Files waiting to be replayed, and their bytes (the metrics' spool gauges). */
  readonly backlog: () => { readonly files: number; readonly bytes: number }
}

export const makeUsageSpool = (dir: string): UsageSpool => {
  let seq = 0
  const write = (bodies: ReadonlyArray<string>, suffix: string) => {
    mkdirSync(dir, { recursive: true })
    const name = `usage-${Date.now()}-${process.pid}-${threadId}-${seq++}${suffix}`
    writeFileSync(join(dir, `${name}.tmp`), bodies.join("\n") + "\n")
    renameSync(join(dir, `${name}.tmp`), join(dir, name))
  }
  const spool: UsageSpool = {
    dir,
    put: (bodies) => write(bodies, SPOOL_SUFFIX),
    files: () => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(SPOOL_SUFFIX)).sort() : []),
    read: (file) => readFileSync(join(dir, file), "utf8").split("\n").filter((line) => line !== ""),
    remove: (file) => unlinkSync(join(dir, file)),
    quarantine: (file) => renameSync(join(dir, file), join(dir, `${file}.bad`)),
    putRefused: (bodies) => write(bodies, `${SPOOL_SUFFIX}.bad`),
    backlog: () => {
      const files = spool.files()
      let bytes = 0
      for (const f of files) bytes += statSync(join(dir, f), { throwIfNoEntry: false })?.size ?? 0
      return { files: files.length, bytes }
    }
  }
  return spool
}
