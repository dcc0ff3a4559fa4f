import { ConfigProvider, Effect, Layer } from "effect"
import { FetchHttpClient } from "effect/http"
import { Otlp, OtlpSerialization } from "effect/observability"
import { packageVersion } from "../config/AppConfig.ts"
import { layerRequestTracing } from "./tracing/requestTracing.ts"
import { makeSampler, type Sampler } from "./tracing/sampler.ts"

/** The OpenTelemetry environment as this process reads it: the spec's default exporter ("otlp") for every signal unless set. */
export const otelEnvironment = (source: Readonly<Record<string, string | undefined>> = process.env): Record<string, string> => {
  // The OpenTelemetry spec's default for OTEL_<SIGNAL>_EXPORTER is "otlp"; Effect's is none.
  const env: Record<string, string> = { OTEL_TRACES_EXPORTER: "otlp", OTEL_METRICS_EXPORTER: "otlp", OTEL_LOGS_EXPORTER: "otlp" }
  for (const [k, v] of Object.entries(source)) if (v !== undefined) env[k] = v
  return env
}

/**
 * Whether spans leave the process: an OTLP endpoint for traces, the otlp traces exporter, and the
 * SDK not disabled (the same test Effect's Otlp.layerFromConfig makes).
 */
export const tracesExported = (env: Readonly<Record<string, string>>): boolean => {
  if ((env["OTEL_SDK_DISABLED"] ?? "").trim().toLowerCase() === "true") return false
  const endpoint = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] ?? env["OTEL_EXPORTER_OTLP_ENDPOINT"]
  if (endpoint === undefined || endpoint.trim() === "") return false
  return (env["OTEL_TRACES_EXPORTER"] ?? "").split(",").some((e) => e.trim().toLowerCase() === "otlp")
}

/**
 * The sampler OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG name; a value it cannot use is
 * reported and the default (parentbased_always_on) used instead, as OpenTelemetry SDKs do.
 */
export const samplerFromEnv = (env: Readonly<Record<string, string>>) =>
  Effect.gen(function*() {
    const sampler = makeSampler(env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"])
    if (typeof sampler !== "string") return sampler
    yield* Effect.logWarning(`${sampler}; using parentbased_always_on`)
    return makeSampler(undefined, undefined) as Sampler
  })

/**
 * Traces, metrics and logs over OTLP/HTTP (JSON), configured by the standard OpenTelemetry
 * environment (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_<SIGNAL>_EXPORTER,
 * OTEL_SDK_DISABLED, …): without an endpoint it exports nothing. Log lines still go to stderr as JSON as well.
 * When traces are exported, every span goes through the OTEL_TRACES_SAMPLER sampler, and the raw
 * price listeners trace their requests (RequestTracing; docs/tracing.md).
 */
export const ObservabilityLive = Layer.unwrap(Effect.gen(function*() {
  const serviceVersion = yield* packageVersion
  const env = otelEnvironment()
  const otlp = Otlp.layerFromConfig({
    resource: { serviceName: env["OTEL_SERVICE_NAME"] ?? "trinity-beast", serviceVersion },
    loggerMergeWithExisting: true
  }).pipe(
    Layer.provide(Layer.mergeAll(OtlpSerialization.layerJson, FetchHttpClient.layer)),
    Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord(env)))
  )
  if (!tracesExported(env)) return otlp
  return layerRequestTracing(yield* samplerFromEnv(env)).pipe(Layer.provideMerge(otlp))
}))
