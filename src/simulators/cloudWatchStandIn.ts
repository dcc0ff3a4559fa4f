import { createServer, type ServerResponse } from "node:http"
import { closeServer, jsonProtocolHandler, listenLoopback, type RecordedRequest, replyJson, type StandIn } from "./awsJsonProtocol.ts"

/**
 * A loopback stand-in for Amazon CloudWatch's PutMetricData, speaking what the installed
 * @aws-sdk/client-cloudwatch speaks: AWS JSON 1.0 (`X-Amz-Target:
 * GraniteServiceVersion20100801.PutMetricData`, `application/x-amz-json-1.0`; the SDK moved to it
 * from the query protocol) with query-compatible errors (`x-amzn-query-error:
 * InvalidParameterValue;Sender`). It checks what the real service refuses: a missing or `AWS/`
 * namespace, more than 1,000 datums, a datum without a name, both Value and Values, more than 150
 * Values or Counts of another length, a timestamp over two weeks old or two hours ahead.
 *
 * `mode`: `accept` stores the datums; `refuse` answers every call InvalidParameterValue (400);
 * `unavailable` answers ServiceUnavailable (503), which the SDK retries and then reports.
 */
export interface CloudWatchDatumRecord {
  readonly namespace: string
  readonly name: string
  readonly unit: string | undefined
  readonly timestamp: number | undefined
  readonly value: number | undefined
  readonly values: ReadonlyArray<number> | undefined
  readonly counts: ReadonlyArray<number> | undefined
}

export interface CloudWatchStandIn extends StandIn {
  readonly datums: Array<CloudWatchDatumRecord>
  mode: "accept" | "refuse" | "unavailable"
}

const CONTENT_TYPE = "application/x-amz-json-1.0"
const TARGET_PREFIX = "GraniteServiceVersion20100801"
const MAX_DATUMS = 1_000
const MAX_VALUES = 150
const TWO_WEEKS_S = 14 * 86_400
const TWO_HOURS_S = 2 * 3_600

const invalid = (res: ServerResponse, message: string) =>
  replyJson(res, CONTENT_TYPE, 400, { __type: "com.amazonaws.cloudwatch#InvalidParameterValueException", message }, {
    "x-amzn-query-error": "InvalidParameterValue;Sender"
  })

/** Why CloudWatch would refuse this datum, or undefined. */
const problemOf = (d: Record<string, unknown>, nowS: number): string | undefined => {
  if (typeof d["MetricName"] !== "string" || d["MetricName"] === "") return "MetricName is required"
  const values = d["Values"]
  const counts = d["Counts"]
  if (d["Value"] !== undefined && values !== undefined) return "Value and Values cannot both be given"
  if (values !== undefined && (!Array.isArray(values) || values.length > MAX_VALUES)) return `Values: at most ${MAX_VALUES}`
  if (counts !== undefined && (!Array.isArray(counts) || !Array.isArray(values) || counts.length !== values.length)) return "Counts must match Values"
  const ts = d["Timestamp"]
  if (ts !== undefined && (typeof ts !== "number" || ts < nowS - TWO_WEEKS_S || ts > nowS + TWO_HOURS_S)) return "Timestamp out of range"
  return undefined
}

export const startCloudWatchStandIn = async (): Promise<CloudWatchStandIn> => {
  const requests: Array<RecordedRequest> = []
  const datums: Array<CloudWatchDatumRecord> = []
  const handle = (operation: string, body: Record<string, unknown>, res: ServerResponse) => {
    if (operation !== "PutMetricData") return replyJson(res, CONTENT_TYPE, 400, { __type: "UnknownOperationException", message: operation })
    if (standIn.mode === "unavailable") {
      return replyJson(res, CONTENT_TYPE, 503, { __type: "com.amazonaws.cloudwatch#ServiceUnavailable", message: "stand-in unavailable" }, {
        "x-amzn-query-error": "ServiceUnavailable;Receiver"
      })
    }
    if (standIn.mode === "refuse") return invalid(res, "stand-in refuses")
    const namespace = body["Namespace"]
    if (typeof namespace !== "string" || namespace === "" || namespace.startsWith("AWS/")) return invalid(res, "Namespace is required and may not start with AWS/")
    const data = body["MetricData"]
    if (!Array.isArray(data) || data.length === 0 || data.length > MAX_DATUMS) return invalid(res, `MetricData: 1 to ${MAX_DATUMS} datums`)
    const nowS = Date.now() / 1000
    for (const d of data as Array<Record<string, unknown>>) {
      const problem = problemOf(d, nowS)
      if (problem !== undefined) return invalid(res, problem)
    }
    for (const d of data as Array<Record<string, unknown>>) {
      datums.push({
        namespace,
        name: d["MetricName"] as string,
        unit: d["Unit"] as string | undefined,
        timestamp: d["Timestamp"] as number | undefined,
        value: d["Value"] as number | undefined,
        values: d["Values"] as Array<number> | undefined,
        counts: d["Counts"] as Array<number> | undefined
      })
    }
    return replyJson(res, CONTENT_TYPE, 200, {})
  }
  const server = createServer(jsonProtocolHandler(CONTENT_TYPE, TARGET_PREFIX, requests, handle))
  const url = await listenLoopback(server)
  const standIn: CloudWatchStandIn = { url, requests, datums, mode: "accept", close: closeServer(server) }
  return standIn
}
