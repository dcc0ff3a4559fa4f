import { Effect } from "effect"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { messageOf } from "../../domain/errorMessage.ts"
import type { MetricsRecorder } from "../../services/Metrics.ts"
import { cannotListen } from "../../services/StartupError.ts"
import { withModule } from "../Logging.ts"

/**
 * The Prometheus listener (spec "Metrics"): `GET /metrics` on its own port, as the OpenTelemetry
 * Prometheus exporter has it, so scraping never competes with the APIs' ports or their limits.
 * Plain text, no key: bind it where only the scraper reaches it. Closed with its scope.
 */
export const serveMetrics = (metrics: Pick<MetricsRecorder, "exposition">, host: string, port: number) =>
  Effect.gen(function*() {
    const server: Server = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0]
      if (path !== "/metrics") {
        res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("not found: metrics are at /metrics\n")
        return
      }
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, { "content-type": "text/plain; charset=utf-8", allow: "GET, HEAD" }).end("method not allowed\n")
        return
      }
      metrics.exposition().then(
        ({ body, contentType }) => res.writeHead(200, { "content-type": contentType, "cache-control": "no-store" }).end(req.method === "HEAD" ? undefined : body),
        (e: unknown) => res.writeHead(500, { "content-type": "text/plain; charset=utf-8" }).end(`metrics failed: ${messageOf(e)}\n`)
      )
    })
    server.keepAliveTimeout = 65_000
    const bound = yield* Effect.acquireRelease(
      Effect.callback<number, ReturnType<typeof cannotListen>>((resume) => {
        server.once("error", (e) => resume(Effect.fail(cannotListen("METRICS_PORT", host, port, e))))
        server.listen(port, host, () => resume(Effect.succeed((server.address() as AddressInfo).port)))
      }),
      () => Effect.callback<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
    )
    yield* Effect.logInfo(`metrics listening on http://${host}:${bound}/metrics`).pipe(withModule("metrics"))
    return bound
  })
