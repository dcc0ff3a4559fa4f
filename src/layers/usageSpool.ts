import { Schema } from "effect"
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { threadId } from "node:worker_threads"
import { UsageBatchJson, type UsageRow } from "../domain/usage.ts"

/**
 * A batch as UsageBatchJson text. Rows are already UsageRows (plain values), so this is the text
 * the Schema's encoder would write; a plain stringify spares the serving thread, which spills to
 * the spool when the usage thread falls behind, a per-field Schema walk. Replays still decode.
 */
const encodeBatch = (rows: ReadonlyArray<UsageRow>): string => JSON.stringify({ rows })
export const decodeSpoolBatch = Schema.decodeUnknownSync(UsageBatchJson)

/** The spool of a data directory: the serving thread, the usage thread and its batcher share it. */
export const usageSpoolDir = (dataDir: string) => join(dataDir, "spool")

/**
 * Spool: batches that could not be written yet, one JSON file each, written atomically
 * (tmp + rename) so a crash mid-write leaves no half file. Synchronous and throwing: it runs only
 * on the sink's loop and at shutdown, never per request; every caller wraps it in Effect.try.
 * A file that does not decode is renamed to `<name>.bad` and no longer listed. Names carry the
 * process and thread, so the serving thread and the usage thread never write the same file.
 */
export const makeSpool = (dir: string) => {
  let seq = 0
  return {
    dir,
    put: (rows: ReadonlyArray<UsageRow>) => {
      mkdirSync(dir, { recursive: true })
      const name = `usage-${Date.now()}-${process.pid}-${threadId}-${seq++}.json`
      writeFileSync(join(dir, `${name}.tmp`), encodeBatch(rows))
      renameSync(join(dir, `${name}.tmp`), join(dir, name))
    },
    files: (): ReadonlyArray<string> => existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".json")).sort() : [],
    readText: (file: string) => readFileSync(join(dir, file), "utf8"),
    remove: (file: string) => unlinkSync(join(dir, file)),
    quarantine: (file: string) => renameSync(join(dir, file), join(dir, `${file}.bad`))
  }
}
