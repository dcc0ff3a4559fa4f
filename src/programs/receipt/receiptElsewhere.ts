/**
 * The receipt routes on a listener that is not the LPO's (the report server's): every listener
 * serves the one API definition, and these answer NOT_FOUND (service RECEIPT) naming where
 * purchases are processed.
 */
import { HttpApiBuilder } from "effect/http-api"
import { ReceiptApi } from "../../api/ReceiptGroup.ts"
import type { Edge } from "../http/edge.ts"

const DETAIL = "purchases are processed on the LPO's port, LPO_HTTP_PORT (default 8080)"

export const receiptOnOtherListener = (edge: Edge) =>
  HttpApiBuilder.group(ReceiptApi, "receipt", (handlers) => {
    const notHere = edge.servedElsewhere("RECEIPT", DETAIL)
    return handlers.handleRaw("receipt", notHere).handleRaw("stripeWebhook", notHere).handleRaw("checkout", notHere)
  })
