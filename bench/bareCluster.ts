import cluster from "node:cluster"

/**
 * Run a bare baseline server, alone or one per worker (node:cluster): prints `ready <port>` once
 * every instance listens, and stops on SIGTERM/SIGINT. `serve` starts one instance and reports
 * its port.
 */
export const runBareServer = (workers: number, serve: (onBound: (port: number) => void) => void): void => {
  if (workers > 1 && cluster.isPrimary) {
    let bound = 0
    cluster.on("message", (_worker, message: unknown) => {
      if (typeof message === "number" && ++bound === workers) process.stdout.write(`ready ${message}\n`)
    })
    for (let i = 0; i < workers; i++) cluster.fork()
    const stop = (): void => {
      for (const worker of Object.values(cluster.workers ?? {})) worker?.kill()
      process.exit(0)
    }
    process.on("SIGTERM", stop)
    process.on("SIGINT", stop)
  } else if (cluster.isWorker) {
    serve((port) => process.send?.(port))
    // A worker must not outlive its primary.
    process.on("disconnect", () => process.exit(0))
  } else {
    serve((port) => process.stdout.write(`ready ${port}\n`))
    process.on("SIGTERM", () => process.exit(0))
  }
}
