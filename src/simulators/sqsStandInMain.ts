import { startSqsStandIn } from "./sqsStandIn.ts"

/**
 * The SQS stand-in as its own process, so its work is not billed to whoever measures the producer
 * or the queued writer (`npm run bench`):
 *
 *   node dist/src/simulators/sqsStandInMain.js [port] [--visibility-timeout=S] [--max-receive-count=N]
 *
 * port 0 or none: any free port. --visibility-timeout: the queue's default (30 s) for receives
 * that name none. --max-receive-count: the redrive policy (messages received N times go to the
 * dead-letter list instead). Prints `ready <port> <queueUrl>` once listening; `GET /_stats` on
 * that port reports the messages and usage rows received and the queue's state (inQueue,
 * inFlight, deleted, deadLetters). Exits on SIGTERM / SIGINT.
 */
const USAGE = "usage: sqsStandInMain.js [port] [--visibility-timeout=S] [--max-receive-count=N]"

const fail = (problem: string): never => {
  console.error(`${USAGE}  (${problem})`)
  process.exit(2)
}

const flags = new Map<string, string>()
const positional: Array<string> = []
for (const arg of process.argv.slice(2)) {
  const flag = /^--([a-z-]+)=(.*)$/.exec(arg)
  if (flag === null) positional.push(arg)
  else flags.set(flag[1]!, flag[2]!)
}
for (const name of flags.keys()) {
  if (name !== "visibility-timeout" && name !== "max-receive-count") fail(`unknown option --${name}`)
}

const port = Number(positional[0] ?? "0")
if (positional.length > 1 || !(Number.isInteger(port) && port >= 0 && port < 65_536)) fail(`got port ${positional.join(" ")}`)

const numberFlag = (name: string, valid: (n: number) => boolean): number | undefined => {
  const text = flags.get(name)
  if (text === undefined) return undefined
  const n = Number(text)
  return text !== "" && valid(n) ? n : fail(`got --${name}=${text}`)
}
const visibilityTimeoutSeconds = numberFlag("visibility-timeout", (n) => n >= 0 && n <= 43_200)
const maxReceiveCount = numberFlag("max-receive-count", (n) => Number.isInteger(n) && n >= 1)

const sqs = await startSqsStandIn({
  port,
  ...(visibilityTimeoutSeconds === undefined ? {} : { visibilityTimeoutSeconds }),
  ...(maxReceiveCount === undefined ? {} : { maxReceiveCount })
})
const stop = () => void sqs.close().then(() => process.exit(0))
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
console.log(`ready ${new URL(sqs.url).port} ${sqs.queueUrl}`)
