/**
 * The response envelope as HttpApi schemas: one success envelope per payload, and one error
 * envelope per HTTP status whose `code` can only be a code of that status (spec: "The response
 * envelope"). Declared on every endpoint, so the OpenAPI document shows what a client receives.
 */
import { Schema } from "effect"
import { HttpApiSchema } from "effect/http-api"
import { SERVICES } from "../domain/envelope.ts"
import { ERROR_STATUS, type ErrorCode } from "../domain/errorCodes.ts"
import { LANGS } from "../domain/messages.ts"

const service = Schema.Literals(SERVICES).annotate({ description: "Which service answered." })
const message = Schema.String.annotate({ description: "Human-readable, in `lang`." })
/** The fields after `data`, in the spec's order (so every answer, fast path or not, reads the same). */
const envelopeTail = {
  request_id: Schema.String.annotate({ description: "Unique per request; echoes X-Request-Id when the client sent a valid one." }),
  timestamp: Schema.String.annotate({ description: "RFC 3339 server time." }),
  latency_us: Schema.Int.annotate({ description: "Server-side handling time in microseconds." }),
  node: Schema.String,
  region: Schema.String,
  version: Schema.String,
  lang: Schema.Literals(LANGS).annotate({ description: "Language of `message` (`?lang=` or Accept-Language; default en)." })
}

/** A success envelope around `data`. */
export const OkEnvelope = <D extends Schema.Top>(data: D) =>
  Schema.Struct({ success: Schema.Literal(true), service, code: Schema.Literal("OK"), message, data, ...envelopeTail })

/** What an error envelope's `data` holds: a sentence saying what was wrong (English, for logs and support). */
export const ErrorData = Schema.NullOr(Schema.Struct({ error: Schema.String }))

export const errorCodesOf = (status: number): ReadonlyArray<ErrorCode> =>
  (Object.keys(ERROR_STATUS) as Array<keyof typeof ERROR_STATUS>).filter((c): c is ErrorCode => c !== "OK" && ERROR_STATUS[c] === status)

const errorEnvelope = (status: number) =>
  Schema.Struct({ success: Schema.Literal(false), service, code: Schema.Literals(errorCodesOf(status)), message, data: ErrorData, ...envelopeTail }).pipe(
    HttpApiSchema.status(status)
  ).annotate({ identifier: `Error${status}`, description: `codes: ${errorCodesOf(status).join(", ")}` })

/** One error envelope per status the spec gives codes for. */
export const Error400 = errorEnvelope(400)
export const Error401 = errorEnvelope(401)
export const Error403 = errorEnvelope(403)
export const Error404 = errorEnvelope(404)
export const Error405 = errorEnvelope(405)
export const Error429 = errorEnvelope(429)
export const Error500 = errorEnvelope(500)
export const Error503 = errorEnvelope(503)

/** Every error envelope has this type; which status it is sent with follows from its code. */
export type ErrorEnvelope = typeof Error400.Type

/** The errors any endpoint can answer at the edge (malformed input, wrong method, overload, a bug). */
export const edgeErrors = [Error400, Error405, Error500, Error503] as const
