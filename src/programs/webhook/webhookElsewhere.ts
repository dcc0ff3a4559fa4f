/**
 * The webhook routes on a listener that is not the LPO's (the report server's): every listener
 * serves the one API definition, and these answer NOT_FOUND (service WEBHOOK) naming where
 * webhooks are managed.
 */
import { HttpApiBuilder } from "effect/http-api"
import { WebhookApi } from "../../api/WebhookGroup.ts"
import type { Edge } from "../http/edge.ts"

const DETAIL = "webhooks are managed on the LPO's port, LPO_HTTP_PORT (default 8080)"

export const webhookOnOtherListener = (edge: Edge) =>
  HttpApiBuilder.group(WebhookApi, "webhook", (handlers) => {
    const notHere = edge.servedElsewhere("WEBHOOK", DETAIL)
    return handlers.handleRaw("configure", notHere).handleRaw("verify", notHere).handleRaw("status", notHere)
      .handleRaw("getAssets", notHere).handleRaw("setAssets", notHere).handleRaw("remove", notHere)
  })
