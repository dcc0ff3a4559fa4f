import { startSimulators, type SimulatorsOptions } from "../simulators/index.ts"

/**
 * FEEDS=simulated: the exchange simulators as their own process (started by FeedsLive), so the
 * fake exchanges' work is not billed to the server being measured. Protocol with the parent: it
 * sends the SimulatorsOptions, this answers `{ urls }` once every simulator listens; exits on
 * SIGTERM or when the parent goes away.
 */
process.once("message", (options: SimulatorsOptions) => {
  void startSimulators(options).then((sims) => {
    const stop = () => void sims.close().then(() => process.exit(0))
    process.on("SIGTERM", stop)
    process.on("SIGINT", stop)
    process.on("disconnect", stop)
    process.send?.({ urls: sims.urls })
  })
})
