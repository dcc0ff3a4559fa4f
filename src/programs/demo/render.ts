/**
 * How `tb demo` shows its steps: readable lines for people, in colour on a terminal, or one JSON
 * document for scripts. Pure functions of the step results.
 */
import type { StepResult, StepStatus } from "./steps.ts"
import { STEP_NAMES } from "./steps.ts"
import type { DemoTargets } from "./targets.ts"

/**
 * Colour when stdout is a terminal, or when FORCE_COLOR asks for it (set, not "0" or "false");
 * never when NO_COLOR is set to anything but the empty string (https://no-color.org), nor on a
 * TERM=dumb terminal.
 */
export const useColour = (env: Readonly<Record<string, string | undefined>>, stdoutIsTty: boolean): boolean => {
  if ((env["NO_COLOR"] ?? "") !== "") return false
  const force = env["FORCE_COLOR"]
  if (force !== undefined) return force !== "0" && force !== "false"
  return stdoutIsTty && env["TERM"] !== "dumb"
}

type Paint = (text: string) => string

export interface Palette {
  readonly bold: Paint
  readonly dim: Paint
  readonly green: Paint
  readonly yellow: Paint
  readonly red: Paint
  readonly cyan: Paint
}

const sgr = (on: number, off: number): Paint => (text) => `\u001b[${on}m${text}\u001b[${off}m`
const plain: Paint = (text) => text

export const palette = (colour: boolean): Palette =>
  colour
    ? { bold: sgr(1, 22), dim: sgr(2, 22), green: sgr(32, 39), yellow: sgr(33, 39), red: sgr(31, 39), cyan: sgr(36, 39) }
    : { bold: plain, dim: plain, green: plain, yellow: plain, red: plain, cyan: plain }

const LABELS: Record<StepStatus, string> = { ok: "ok  ", skipped: "skip", failed: "FAIL", not_run: "--  " }

const label = (status: StepStatus, p: Palette): string => {
  const text = LABELS[status]
  return status === "ok" ? p.green(text) : status === "skipped" ? p.yellow(text) : status === "failed" ? p.red(p.bold(text)) : p.dim(text)
}

const TITLES: Record<StepResult["step"], string> = {
  key: "key",
  price: "price",
  prices: "prices",
  udp: "udp",
  stream: "stream",
  report: "report"
}

const udpAddress = (host: string, port: number): string => (host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`)

/** Where the continuation lines of a step start: under its summary. */
const INDENT = " ".repeat(18)

export const renderHeader = (targets: DemoTargets, keyShown: string | undefined, p: Palette): string =>
  [
    p.bold("Trinity Beast demo") + (keyShown === undefined ? "" : `  key ${keyShown}`),
    p.dim(`LPO ${targets.lpo}  ·  UDP ${udpAddress(targets.udpHost, targets.lpoUdpPort)}  ·  reports ${targets.lrs}`),
    ""
  ].join("\n")

/** One step: `ok   2 price   BTC/USD …`, its details, the command to try it by hand, and what to do next. */
export const renderStep = (r: StepResult, p: Palette): string => {
  const number = STEP_NAMES.indexOf(r.step) + 1
  const lines = [`${label(r.status, p)}  ${number} ${p.bold(TITLES[r.step].padEnd(8))}  ${r.summary}`]
  for (const detail of r.details) lines.push(`${INDENT}${p.dim(detail)}`)
  if (r.try !== null && r.status !== "not_run") lines.push(`${INDENT}${p.dim("try:")} ${p.cyan(r.try)}`)
  const nextPaint = r.status === "failed" ? p.yellow : (text: string) => text
  r.next.forEach((line, i) => lines.push(`${INDENT}${i === 0 ? p.bold("next:") : "     "} ${nextPaint(line)}`))
  return lines.join("\n")
}

export interface StatusCounts {
  readonly ok: number
  readonly skipped: number
  readonly failed: number
  readonly not_run: number
}

export const countStatuses = (results: ReadonlyArray<StepResult>): StatusCounts => ({
  ok: results.filter((r) => r.status === "ok").length,
  skipped: results.filter((r) => r.status === "skipped").length,
  failed: results.filter((r) => r.status === "failed").length,
  not_run: results.filter((r) => r.status === "not_run").length
})

export const renderFooter = (results: ReadonlyArray<StepResult>, p: Palette): string => {
  const c = countStatuses(results)
  const parts = [p.green(`${c.ok} ok`), p.yellow(`${c.skipped} skipped`), (c.failed > 0 ? p.red : plain)(`${c.failed} failed`)]
  if (c.not_run > 0) parts.push(p.dim(`${c.not_run} not run`))
  const verdict = c.failed > 0
    ? "Something did not work: see next: above."
    : c.skipped > 0
    ? "Everything this key's tier allows works; skipped steps need a larger tier."
    : "Everything works."
  return ["", `${parts.join(", ")}. ${verdict}`, p.dim("In the try: commands, $KEY is your key: KEY=tb_… first. The API reference: docs/api.md, or /docs on the server.")].join("\n")
}

/** The whole run for scripts (`--json`): the key is never in it, only its prefix. */
export const demoDocument = (targets: DemoTargets, keyShown: string | undefined, results: ReadonlyArray<StepResult>) => ({
  ok: results.every((r) => r.status !== "failed"),
  targets: {
    lpo: targets.lpo,
    lpo_udp: udpAddress(targets.udpHost, targets.lpoUdpPort),
    lrs: targets.lrs,
    lrs_udp: udpAddress(targets.udpHost, targets.lrsUdpPort)
  },
  key: keyShown ?? null,
  counts: countStatuses(results),
  steps: results
})
