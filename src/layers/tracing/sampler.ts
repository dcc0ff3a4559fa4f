import type * as Tracer from "effect/Tracer"

/** The OTEL_TRACES_SAMPLER values honoured (the OpenTelemetry SDK's built-in samplers). */
export const SAMPLER_NAMES = [
  "always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"
] as const
export type SamplerName = typeof SAMPLER_NAMES[number]

/**
 * Whether a new span is recorded, from its parent (none: a root span). Sampled-out spans are
 * never handed to the exporter.
 */
export interface Sampler {
  readonly name: SamplerName
  /** The ratio of root spans sampled (traceidratio variants; 1 or 0 for the others). */
  readonly ratio: number
  readonly sample: (parent: Tracer.AnySpan | undefined) => boolean
}

/** 2^56: trace ids are compared on their last 56 bits (14 hex digits), the W3C "random" part. */
const RANDOM_SPACE = 2 ** 56

/**
 * A remote trace id's place in [0, 1): a trace the caller's sampler kept at ratio r is kept here
 * at the same r, whichever service looks at it (the decision is the trace id's, not a dice roll).
 */
const traceIdPosition = (traceId: string): number => {
  const tail = Number.parseInt(traceId.slice(-14), 16)
  return Number.isFinite(tail) ? tail / RANDOM_SPACE : 0
}

/**
 * The sampler OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG name (default parentbased_always_on,
 * as the OpenTelemetry SDKs). An unknown name or a ratio outside [0, 1] is refused with a message.
 *
 * Decisions:
 * - a root span: on, off, or kept with probability `ratio` (trace ids are random, so this is the
 *   same as a decision on the id, without needing the id before the span exists);
 * - a child of a span of this process: as its parent, for every sampler (a trace is kept whole);
 * - a child of a remote parent (a `traceparent` header): `parentbased_*` follow the caller's
 *   sampled flag; `always_*` are what they say; `traceidratio` decides on the trace id.
 */
export const makeSampler = (rawName: string | undefined, rawArg: string | undefined): Sampler | string => {
  const name = (rawName ?? "").trim().toLowerCase() || "parentbased_always_on"
  if (!(SAMPLER_NAMES as ReadonlyArray<string>).includes(name)) return `OTEL_TRACES_SAMPLER: unknown sampler ${JSON.stringify(name)}; one of ${SAMPLER_NAMES.join(", ")}`
  const sampler = name as SamplerName
  let ratio = sampler.endsWith("always_off") ? 0 : 1
  if (sampler.endsWith("traceidratio")) {
    const arg = (rawArg ?? "").trim()
    ratio = arg === "" ? 1 : Number(arg)
    if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) return `OTEL_TRACES_SAMPLER_ARG: ${JSON.stringify(rawArg)} is not a ratio between 0 and 1`
  }
  const parentBased = sampler.startsWith("parentbased_")
  const root = ratio >= 1 ? () => true : ratio <= 0 ? () => false : () => Math.random() < ratio
  return {
    name: sampler,
    ratio,
    sample: (parent) => {
      if (parent === undefined) return root()
      if (parent._tag === "Span" || parentBased) return parent.sampled
      if (sampler === "traceidratio") return traceIdPosition(parent.traceId) < ratio
      return ratio > 0
    }
  }
}
