/**
 * The Stripe stand-in as a process, for a whole purchase on a laptop (docs/api.md, "Purchases"):
 * `node dist/src/simulators/stripeStandInMain.js [port]` (default 12111) prints its URL, to use as
 * STRIPE_API_BASE, and runs until it is stopped.
 */
import { startStripeStandIn } from "./stripeStandIn.ts"

const port = Number(process.argv[2] ?? process.env["STRIPE_STAND_IN_PORT"] ?? 12111)
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error("usage: stripeStandInMain.js [port]")
  process.exit(2)
}
const standIn = await startStripeStandIn({ port })
console.log(`Stripe stand-in on ${standIn.url} (STRIPE_API_BASE=${standIn.url}; any sk_test_… key)`)
const stop = () => void standIn.close().then(() => process.exit(0))
process.once("SIGINT", stop)
process.once("SIGTERM", stop)
