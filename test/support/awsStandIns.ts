import { SQSClient } from "@aws-sdk/client-sqs"
import { randomUUID } from "node:crypto"
import { createServer, type ServerResponse } from "node:http"
import {
  closeServer, jsonProtocolHandler, listenLoopback, type RecordedRequest, replyJson, STAND_IN_AWS_ENV, type StandIn
} from "../../src/simulators/awsJsonProtocol.ts"

/**
 * Loopback stand-ins for the AWS services the platform calls. SQS lives in src/simulators (the
 * bench runs it too); Secrets Manager (AWS JSON 1.1, `X-Amz-Target: secretsmanager.<Op>`) is only
 * needed by tests. Point the SDK at them with AWS_ENDPOINT_URL_SQS /
 * AWS_ENDPOINT_URL_SECRETS_MANAGER and AWS_TEST_ENV.
 */
export type { RecordedRequest, StandIn } from "../../src/simulators/awsJsonProtocol.ts"
export {
  SQS_MAX_BATCH_BYTES, SQS_MAX_BATCH_ENTRIES, type SqsStandIn, type SqsStandInOptions, startSqsStandIn
} from "../../src/simulators/sqsStandIn.ts"

/** Dummy credentials and region: the SDK signs requests, the stand-ins do not check signatures. */
export const AWS_TEST_ENV = STAND_IN_AWS_ENV

/** The installed SDK's SQS client pointed at a stand-in with the dummy credentials, without touching process.env. */
export const sqsClientFor = (standIn: StandIn): SQSClient =>
  new SQSClient({
    endpoint: standIn.url,
    region: STAND_IN_AWS_ENV.AWS_REGION,
    credentials: { accessKeyId: STAND_IN_AWS_ENV.AWS_ACCESS_KEY_ID, secretAccessKey: STAND_IN_AWS_ENV.AWS_SECRET_ACCESS_KEY }
  })

const SECRETS_JSON = "application/x-amz-json-1.1"

/** Secrets Manager: GetSecretValue for the configured secrets (name → SecretString). */
export const startSecretsManagerStandIn = async (secrets: Readonly<Record<string, string>>): Promise<StandIn> => {
  const requests: Array<RecordedRequest> = []
  const handle = (operation: string, body: Record<string, unknown>, res: ServerResponse) => {
    if (operation !== "GetSecretValue") return replyJson(res, SECRETS_JSON, 400, { __type: "UnknownOperationException", Message: operation })
    const name = String(body["SecretId"] ?? "")
    const value = secrets[name]
    if (value === undefined) {
      return replyJson(res, SECRETS_JSON, 400, { __type: "ResourceNotFoundException", Message: "Secrets Manager can't find the specified secret." })
    }
    return replyJson(res, SECRETS_JSON, 200, {
      ARN: `arn:aws:secretsmanager:us-east-1:000000000000:secret:${name}-AbCdEf`,
      Name: name,
      VersionId: randomUUID(),
      SecretString: value,
      VersionStages: ["AWSCURRENT"],
      CreatedDate: Math.floor(Date.now() / 1000)
    })
  }
  const server = createServer(jsonProtocolHandler(SECRETS_JSON, "secretsmanager", requests, handle))
  const url = await listenLoopback(server)
  return { url, requests, close: closeServer(server) }
}
