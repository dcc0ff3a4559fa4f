/**
 * CPU time (user + system) of a server's process tree, read from /proc (Linux). A server is the
 * root process plus its descendants running the same script (node:cluster workers); every other
 * descendant (the embedded database, the exchange simulators) and any extra pid passed in (the
 * SQS stand-in) is a helper. On a shared 2-core box, CPU per request moves far less than req/s.
 */
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync, readlinkSync } from "node:fs"
import * as path from "node:path"

export type CpuRole = "server" | "helper"

/** Cumulative CPU per process at one instant. */
export type CpuSample = ReadonlyMap<number, { readonly role: CpuRole; readonly ms: number }>

export interface CpuDelta {
  readonly serverMs: number
  readonly helperMs: number
  /** Helper processes seen (0: the server has none). */
  readonly helpers: number
}

const clockTicksPerSecond = ((): number => {
  try {
    const ticks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim())
    return Number.isInteger(ticks) && ticks > 0 ? ticks : 100
  } catch {
    return 100
  }
})()

interface ProcStat {
  readonly ppid: number
  readonly cpuMs: number
}

/** Fields 4 (ppid), 14 (utime) and 15 (stime) of /proc/<pid>/stat; the name (field 2) may hold spaces. */
const readStat = (pid: number): ProcStat | undefined => {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "latin1")
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ")
    const ticks = Number(fields[11]) + Number(fields[12])
    return { ppid: Number(fields[1]), cpuMs: (ticks * 1000) / clockTicksPerSecond }
  } catch {
    return undefined // gone meanwhile
  }
}

/** argv[1] as an absolute path (node:cluster forks workers with it resolved, the parent may have a relative one). */
const scriptOf = (pid: number): string | undefined => {
  try {
    const script = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[1]
    return script === undefined ? undefined : path.resolve(readlinkSync(`/proc/${pid}/cwd`), script)
  } catch {
    return undefined
  }
}

export const canMeasureCpu = (): boolean => readStat(process.pid) !== undefined

/** CPU ms (user + system) of one process so far; undefined when it cannot be read. */
export const processCpuMs = (pid: number): number | undefined => readStat(pid)?.cpuMs

/** Samples `rootPid` and its descendants, plus `helperPids` (and their descendants) as helpers. */
export const sampleCpu = (rootPid: number, helperPids: ReadonlyArray<number> = []): CpuSample => {
  const stats = new Map<number, ProcStat>()
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/u.test(entry)) continue
    const stat = readStat(Number(entry))
    if (stat !== undefined) stats.set(Number(entry), stat)
  }
  const childrenOf = new Map<number, Array<number>>()
  for (const [pid, { ppid }] of stats) childrenOf.set(ppid, [...(childrenOf.get(ppid) ?? []), pid])
  const rootScript = scriptOf(rootPid)
  const sample = new Map<number, { role: CpuRole; ms: number }>()
  const visit = (pid: number, underHelper: boolean): void => {
    const stat = stats.get(pid)
    if (stat === undefined || sample.has(pid)) return
    const role: CpuRole = !underHelper && (pid === rootPid || scriptOf(pid) === rootScript) ? "server" : "helper"
    sample.set(pid, { role, ms: stat.cpuMs })
    for (const child of childrenOf.get(pid) ?? []) visit(child, role === "helper")
  }
  visit(rootPid, false)
  for (const pid of helperPids) visit(pid, true)
  return sample
}

/** CPU spent between two samples by the processes present in both (or started in between). */
export const cpuBetween = (before: CpuSample, after: CpuSample): CpuDelta => {
  let serverMs = 0
  let helperMs = 0
  let helpers = 0
  for (const [pid, { role, ms }] of after) {
    const spent = ms - (before.get(pid)?.ms ?? 0)
    if (role === "server") serverMs += spent
    else {
      helperMs += spent
      helpers++
    }
  }
  return { serverMs, helperMs, helpers }
}
