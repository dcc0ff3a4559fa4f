/**
 * `tb demo [--url U] [--key K] [--json]`: the walk-through a new subscriber runs against a
 * server: key → price → prices → UDP → stream → report, each over the real wire, each with the
 * command that does the same by hand.
 *
 * It never creates a key. Making keys is the operator's act (the admin token), a key's plaintext
 * is shown once, and each run would leave one more key in the table; a demo that only reads is
 * safe to point at any server. Without --key it says how to get one (tb keys create, POST
 * /admin/keys with DATA_DIR/admin-token, or a subscription) and exits 1.
 *
 * Plain async code, like tb stress: a short-lived client whose steps are a few sequential calls on
 * the wire, using none of the server's services or layers.
 *
 * Exit: 0 when no step failed (skipped steps, those the key's tier does not include, are not
 * failures), 1 when one did, 2 for a malformed --url or port variable.
 */
import { renderFooter, renderHeader, renderStep, demoDocument, palette, useColour } from "./render.ts"
import {
  type DemoContext,
  keyPrefix,
  keyStep,
  notRun,
  priceStep,
  pricesStep,
  reportStep,
  type StepName,
  type StepResult,
  stopsTheRest,
  streamStep,
  udpStep
} from "./steps.ts"
import { demoTargets } from "./targets.ts"

export interface DemoOptions {
  readonly url: string | undefined
  readonly key: string | undefined
  readonly json: boolean
}

export interface DemoIo {
  readonly env: Readonly<Record<string, string | undefined>>
  readonly stdout: (text: string) => void
  readonly stderr: (text: string) => void
  readonly stdoutIsTty: boolean
}

const processIo = (): DemoIo => ({
  env: process.env,
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
  stdoutIsTty: process.stdout.isTTY === true
})

const LATER_STEPS: ReadonlyArray<readonly [StepName, (ctx: DemoContext, key: string) => Promise<StepResult>]> = [
  ["price", priceStep],
  ["prices", pricesStep],
  ["udp", udpStep],
  ["stream", streamStep],
  ["report", reportStep]
]

/** Runs the demo; answers the exit code. */
export const runDemo = async (options: DemoOptions, io: DemoIo = processIo()): Promise<number> => {
  const targets = demoTargets(io.env, options.url)
  if (typeof targets === "string") {
    io.stderr(`tb demo: ${targets}\n`)
    return 2
  }
  const key = options.key?.trim() === "" ? undefined : options.key?.trim()
  const ctx: DemoContext = { targets, key, dataDir: io.env["DATA_DIR"] ?? "./data", startedAt: Date.now() }
  const keyShown = key === undefined ? undefined : keyPrefix(key)
  const p = palette(!options.json && useColour(io.env, io.stdoutIsTty))
  // On a terminal, the step under way shows until its result replaces it.
  const pending = !options.json && io.stdoutIsTty
  const show = (r: StepResult) => {
    if (pending) io.stdout("\r\u001b[K")
    if (!options.json) io.stdout(`${renderStep(r, p)}\n`)
  }
  const running = (step: StepName) => {
    if (pending) io.stdout(p.dim(`…     ${step}`))
  }

  if (!options.json) io.stdout(`${renderHeader(targets, keyShown, p)}\n`)
  const results: Array<StepResult> = []
  running("key")
  const first = await keyStep(ctx)
  results.push(first)
  show(first)
  let stoppedBy: StepResult | undefined = stopsTheRest(first) ? first : undefined
  for (const [name, step] of LATER_STEPS) {
    let r: StepResult
    if (stoppedBy !== undefined || key === undefined) {
      r = notRun(name, `the ${(stoppedBy ?? first).step} step failed`)
    } else {
      running(name)
      r = await step(ctx, key)
      if (stopsTheRest(r)) stoppedBy = r
    }
    results.push(r)
    show(r)
  }
  if (options.json) io.stdout(`${JSON.stringify(demoDocument(targets, keyShown, results))}\n`)
  else io.stdout(`${renderFooter(results, p)}\n`)
  return results.some((r) => r.status === "failed") ? 1 : 0
}
