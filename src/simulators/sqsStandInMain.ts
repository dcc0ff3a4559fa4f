import { startSqsStandIn } from "./sqsStandIn.ts"

/**
 * The SQS stand-in as its own process, so its work is not billed to whoever measures the producer
 * (`npm run bench`):
 *
 *   node dist/src/simulators/sqsStandInMain.js [port]      (0 or none: any free port)
 *
 * Prints `ready <port> <queueUrl>` once listening; `GET /_stats` on that port reports the messages
 * and usage rows received. Exits on SIGTERM / SIGINT.
 */
const port = Number(process.argv[2] ?? "0")
if (!(Number.isInteger(port) && port >= 0 && port < 65_536)) {
  console.error(`usage: sqsStandInMain.js [port]  (got ${process.argv[2]})`)
  process.exit(2)
}
const sqs = await startSqsStandIn({ port })
const stop = () => void sqs.close().then(() => process.exit(0))
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
console.log(`ready ${new URL(sqs.url).port} ${sqs.queueUrl}`)
