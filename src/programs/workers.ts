import { Effect } from "effect"
import cluster, { type Worker } from "node:cluster"
import { AppConfig } from "../config/AppConfig.ts"
import { relayWorkerBus } from "../layers/workerBus.ts"
import { withModule, runDetachedLog } from "../layers/Logging.ts"
import { AdminToken } from "../services/AdminToken.ts"
import { serveClusterMetrics } from "./metrics/layer.ts"
import { Option, Redacted } from "effect"

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
  relayWorkerBus()
  yield* serveClusterMetrics
  yield* Effect.logInfo("workers started", { workers: config.lpoWorkers })
  if (Option.isNone(config.valkeyUrl)) {
    // Without a shared cache each worker is its own node for limits and quotas (as for nodes while
    // Valkey is down); key invalidations and parameter changes still reach every worker (workerBus).
    yield* Effect.logWarning("LPO_WORKERS > 1 without VALKEY_URL: rate limits and quotas are per worker; set VALKEY_URL to share them")
  }
  // A worker that dies unexpectedly is replaced, so one crash does not shrink the pool for good;
  // a worker that keeps dying is replaced more and more slowly (1 s doubling to a minute).
  const restarts: Array<number> = []
  cluster.on("exit", (worker, code, signal) => {
    const index = workers.indexOf(worker)
    if (stopping || index === -1 || signal === "SIGTERM") return
    const delayMs = Math.min(60_000, 1_000 * 2 ** Math.min(restarts[index] ?? 0, 6))
    restarts[index] = (restarts[index] ?? 0) + 1
    runDetachedLog(Effect.logWarning("worker died; replacing it", { index, code, delay_ms: delayMs }).pipe(withModule("workers")))
    setTimeout(() => {
      if (!stopping) workers[index] = cluster.fork({ ADMIN_TOKEN: Redacted.value(admin.token), NODE_ID: `${config.nodeId}-w${index}`, TB_WORKER: "1" })
    }, delayMs).unref()
  })
  return yield* Effect.never
}).pipe(withModule("workers"))
