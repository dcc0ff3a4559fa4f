import { CloudWatchClient, PutMetricDataCommand } from "@aws-sdk/client-cloudwatch"
import { Effect, Layer } from "effect"
import { messageOf } from "../domain/errorMessage.ts"
import { CloudWatch, CloudWatchError } from "../services/CloudWatch.ts"

/** Errors that name a request CloudWatch may take later; every other 4xx is final. */
const RETRYABLE_CODES = new Set(["Throttling", "ThrottlingException", "RequestLimitExceeded", "InternalServiceFault", "ServiceUnavailable"])

const isRefusal = (cause: unknown): boolean => {
  if (typeof cause !== "object" || cause === null) return false
  const status = (cause as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode
  const name = (cause as { name?: string }).name ?? ""
  return status !== undefined && status >= 400 && status < 500 && status !== 429 && !RETRYABLE_CODES.has(name)
}

/**
 * `CloudWatch` over @aws-sdk/client-cloudwatch. Region, endpoint (AWS_ENDPOINT_URL_CLOUDWATCH) and
 * credentials come from the standard AWS environment; the client is destroyed with the layer.
 */
export const CloudWatchLive = Layer.effect(CloudWatch, Effect.gen(function*() {
  const client = yield* Effect.acquireRelease(Effect.sync(() => new CloudWatchClient({})), (c) => Effect.sync(() => c.destroy()))
  return CloudWatch.of({
    put: (namespace, datums) =>
      Effect.tryPromise({
        try: (abortSignal) => client.send(new PutMetricDataCommand({ Namespace: namespace, MetricData: [...datums] }), { abortSignal }),
        catch: (cause) => new CloudWatchError({ refused: isRefusal(cause), message: messageOf(cause) })
      }).pipe(Effect.asVoid)
  })
}))
