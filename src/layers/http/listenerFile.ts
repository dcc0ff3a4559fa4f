import { readFile, rm } from "node:fs/promises"
import { join } from "node:path"
import { writePrivateFile } from "../privateFile.ts"

/**
 * `DATA_DIR/lpo-http.json` (mode 0600): which process serves the LPO's HTTP port for this data
 * directory. A local client that sends the admin token (`tb keys revoke`) checks it first, so the
 * token goes only to a live server of ours, never to whatever else took the port while it was down.
 */
export interface ListenerRecord {
  readonly pid: number
  readonly port: number
}

export const listenerFile = (dataDir: string) => join(dataDir, "lpo-http.json")

export const writeListenerRecord = (dataDir: string, record: ListenerRecord): Promise<void> =>
  writePrivateFile(listenerFile(dataDir), JSON.stringify(record))

/** Remove the record if it is still this process's (a worker leaving while others serve keeps theirs). */
export const removeListenerRecord = async (dataDir: string): Promise<void> => {
  const record = await readListenerRecord(dataDir)
  if (record?.pid === process.pid) await rm(listenerFile(dataDir), { force: true })
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export const readListenerRecord = async (dataDir: string): Promise<ListenerRecord | undefined> => {
  try {
    const parsed: unknown = JSON.parse(await readFile(listenerFile(dataDir), "utf8"))
    if (typeof parsed !== "object" || parsed === null || !("pid" in parsed) || !("port" in parsed)) return undefined
    const { pid, port } = parsed
    return typeof pid === "number" && typeof port === "number" ? { pid, port } : undefined
  } catch {
    return undefined
  }
}

/** The live server of this data directory on `port`, if there is one. */
export const liveListenerOn = async (dataDir: string, port: number): Promise<boolean> => {
  const record = await readListenerRecord(dataDir)
  return record !== undefined && record.port === port && isAlive(record.pid)
}
