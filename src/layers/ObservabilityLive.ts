import { ConfigProvider, Effect, Layer } from "effect"
import { FetchHttpClient } from "effect/http"
import { Otlp, OtlpSerialization } from "effect/observability"
import { packageVersion } from "../config/AppConfig.ts"

/**
 * Traces, metrics and logs over OTLP/HTTP (JSON), configured by the standard OpenTelemetry
 * environment (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_<SIGNAL>_EXPORTER,
 * OTEL_SDK_DISABLED, …): without an endpoint it exports nothing. Log lines still go to stderr as JSON as well.
 */
export const ObservabilityLive = Layer.unwrap(Effect.gen(function*() {
  const serviceVersion = yield* packageVersion
  // The OpenTelemetry spec's default for OTEL_<SIGNAL>_EXPORTER is "otlp"; Effect's is none.
  const env: Record<string, string> = { OTEL_TRACES_EXPORTER: "otlp", OTEL_METRICS_EXPORTER: "otlp", OTEL_LOGS_EXPORTER: "otlp" }
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v
  return Otlp.layerFromConfig({
    resource: { serviceName: env["OTEL_SERVICE_NAME"] ?? "trinity-beast", serviceVersion },
    loggerMergeWithExisting: true
  }).pipe(
    Layer.provide(Layer.mergeAll(OtlpSerialization.layerJson, FetchHttpClient.layer)),
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord(env)))
  )
}))
