/** Error codes of the response envelope (spec: "Error codes and statuses"). */
export const ERROR_STATUS = {
  OK: 200,
  BAD_REQUEST: 400,
  MISSING_API_KEY: 401,
  INVALID_API_KEY: 401,
  KEY_REVOKED: 403,
  KEY_EXPIRED: 403,
  LRS_NOT_ENABLED: 403,
  STREAM_NOT_ENABLED: 403,
  UNKNOWN_ASSET: 404,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  RATE_LIMITED: 429,
  QUOTA_EXCEEDED: 429,
  NO_FRESH_PRICE: 503,
  SYSTEM_BUSY: 503,
  MAINTENANCE: 503,
  INTERNAL: 500,
  // Receipt processor (spec "Receipt processor").
  PAYMENT_NOT_COMPLETE: 409,
  NO_SUBSCRIPTION: 409
} as const

export type ResponseCode = keyof typeof ERROR_STATUS
export type ErrorCode = Exclude<ResponseCode, "OK">

export const RESPONSE_CODES = Object.keys(ERROR_STATUS) as ReadonlyArray<ResponseCode>

export const statusOf = (code: ResponseCode): number => ERROR_STATUS[code]
