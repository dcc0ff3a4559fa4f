import { randomUUID } from "node:crypto"
import type { IncomingMessage, Server, ServerResponse } from "node:http"

/**
 * What the loopback AWS stand-ins share: the AWS JSON protocol framing (`X-Amz-Target:
 * <prefix>.<Op>`, a JSON body, a JSON reply with `x-amzn-requestid`), request recording, and the
 * listen / close plumbing. Signatures are not verified, but the Authorization header is recorded
 * so tests can check requests were signed for the right service.
 */

export interface RecordedRequest {
  readonly target: string
  readonly contentType: string
  readonly authorization: string
  readonly body: Record<string, unknown>
}

export interface StandIn {
  /** Endpoint origin, e.g. http://127.0.0.1:43121 */
  readonly url: string
  readonly requests: Array<RecordedRequest>
  readonly close: () => Promise<void>
}

/** Dummy credentials and region: the SDK signs requests, the stand-ins do not check signatures. */
export const STAND_IN_AWS_ENV = {
  AWS_ACCESS_KEY_ID: "AKIDTESTSTANDIN",
  AWS_SECRET_ACCESS_KEY: "test-secret-standin",
  AWS_REGION: "us-east-1",
  AWS_EC2_METADATA_DISABLED: "true"
} as const

/** A request's whole body as UTF-8 text (every loopback stand-in reads its requests this way). */
export const readBody = (req: IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    req.on("error", reject)
  })

/** Listens on 127.0.0.1 (`port` 0: any free port) and resolves with the origin URL. */
export const listenLoopback = (server: Server, port = 0): Promise<string> =>
  new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, "127.0.0.1", () => {
      const address = server.address()
      resolve(`http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`)
    })
  })

export const closeServer = (server: Server) => () =>
  new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  })

export const replyJson = (
  res: ServerResponse,
  contentType: string,
  status: number,
  body: unknown,
  headers: Record<string, string> = {}
): void => {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    "content-type": contentType,
    "content-length": Buffer.byteLength(text),
    "x-amzn-requestid": randomUUID(),
    ...headers
  })
  res.end(text)
}

/** A request listener for one JSON-protocol service: parses target and body, records them, hands them to `handle`. */
export const jsonProtocolHandler = (
  contentType: string,
  targetPrefix: string,
  requests: Array<RecordedRequest>,
  handle: (operation: string, body: Record<string, unknown>, res: ServerResponse) => void | Promise<void>
) =>
(req: IncomingMessage, res: ServerResponse): void => {
  void readBody(req).then(async (text) => {
    const target = String(req.headers["x-amz-target"] ?? "")
    const parsed: unknown = text === "" ? {} : JSON.parse(text)
    const body = typeof parsed === "object" && parsed !== null ? parsed as Record<string, unknown> : {}
    requests.push({
      target,
      contentType: String(req.headers["content-type"] ?? ""),
      authorization: String(req.headers["authorization"] ?? ""),
      body
    })
    if (req.method !== "POST" || !target.startsWith(`${targetPrefix}.`)) {
      return replyJson(res, contentType, 400, { __type: "UnknownOperationException", message: `unsupported target ${target}` })
    }
    await handle(target.slice(targetPrefix.length + 1), body, res)
  }).catch((e: unknown) => replyJson(res, contentType, 500, { __type: "InternalFailure", message: String(e) }))
}
