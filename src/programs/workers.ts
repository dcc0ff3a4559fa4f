import { Effect } from "effect"
import cluster, { type Worker } from "node:cluster"
import { AppConfig } from "../config/AppConfig.ts"
import { withModule } from "../layers/Logging.ts"
import { AdminToken } from "../services/AdminToken.ts"
import { Redacted } from "effect"

const waitForExit = (worker: Worker, timeoutMs: number) =>
  Effect.callback<void>((resume) => {
    if (worker.isDead()) return resume(Effect.void)
    const timer = setTimeout(() => {
      worker.process.kill("SIGKILL")
      resume(Effect.void)
    }, timeoutMs)
    worker.once("exit", () => {
      clearTimeout(timer)
      resume(Effect.void)
    })
  })

/**
 * LPO_WORKERS > 1: this (primary) process owns storage (the embedded database, migrations) and the
 * admin token, and runs one full server per worker; node:cluster shares the HTTP and UDP ports.
 * On SIGTERM each worker gets SIGTERM and the primary waits for them before closing storage.
 */
export const runWorkers = Effect.gen(function*() {
  const config = yield* AppConfig
  const admin = yield* AdminToken
  const workers: Array<Worker> = []
  let stopping = false
  yield* Effect.acquireRelease(
    Effect.sync(() => {
      for (let i = 0; i < config.lpoWorkers; i++) {
        workers.push(cluster.fork({ ADMIN_TOKEN: Redacted.value(admin.token), NODE_ID: `${config.nodeId}-w${i}`, TB_WORKER: "1" }))
      }
    }),
    () =>
      Effect.forEach(workers, (w) => {
        stopping = true
        w.process.kill("SIGTERM")
        return waitForExit(w, config.shutdownTimeoutMs)
      }, { concurrency: "unbounded", discard: true })
  )
  yield* Effect.logInfo("workers started", { workers: config.lpoWorkers })
  // A worker that dies unexpectedly is replaced, so one crash does not shrink the pool for good.
  cluster.on("exit", (worker, code, signal) => {
    const index = workers.indexOf(worker)
    if (stopping || index === -1 || signal === "SIGTERM") return
    workers[index] = cluster.fork({ ADMIN_TOKEN: Redacted.value(admin.token), NODE_ID: `${config.nodeId}-w${index}`, TB_WORKER: "1" })
    Effect.runFork(Effect.logWarning("worker replaced", { index, code }).pipe(withModule("workers")))
  })
  return yield* Effect.never
}).pipe(withModule("workers"))
