/**
 * A report's time window from `from`/`to` (spec LRS): RFC 3339, or YYYY-MM-DD meaning that whole
 * UTC day (`to` included); default the last 24 h; at most 93 days back. Half-open: [from, to).
 */
const DAY_MS = 86_400_000
/** How far back a report may start: the spec's window, counted in whole UTC days. */
export const MAX_DAYS_BACK = 93

const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/

export interface ReportWindow {
  readonly from: number
  readonly to: number
}

/** The UTC day start of a time. */
export const dayStart = (ms: number): number => Math.floor(ms / DAY_MS) * DAY_MS

/** Epoch ms of a checked `from`/`to` (the Schema already checked the syntax); `end`: a date means the day's end. */
const timeOf = (s: string, end: boolean): number => {
  if (DATE_ONLY.test(s)) return Date.parse(`${s}T00:00:00Z`) + (end ? DAY_MS : 0)
  return Date.parse(s)
}

/** The window, or what is wrong with it (a BAD_REQUEST detail). */
export const reportWindow = (from: string | undefined, to: string | undefined, now: number): ReportWindow | string => {
  const end = to === undefined ? now : timeOf(to, true)
  const start = from === undefined ? end - DAY_MS : timeOf(from, false)
  if (!Number.isFinite(start) || !Number.isFinite(end)) return "from/to: expected YYYY-MM-DD or an RFC 3339 timestamp"
  if (start >= end) return "from must be before to"
  const earliest = dayStart(now) - MAX_DAYS_BACK * DAY_MS
  if (start < earliest) return `from is more than ${MAX_DAYS_BACK} days back (earliest ${new Date(earliest).toISOString().slice(0, 10)})`
  return { from: start, to: end }
}

/** Every UTC day (YYYY-MM-DD) the window touches, ascending. */
export const daysOf = (w: ReportWindow): ReadonlyArray<string> => {
  const days: Array<string> = []
  for (let d = dayStart(w.from); d < w.to; d += DAY_MS) days.push(new Date(d).toISOString().slice(0, 10))
  return days
}
