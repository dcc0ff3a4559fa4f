/**
 * The report routes on a listener that is not the report server's (the LPO's): every listener
 * serves the one API definition, and these answer NOT_FOUND (service LPO: the LPO answered) naming
 * where reports are served.
 */
import { HttpApiBuilder } from "effect/http-api"
import { LrsListenerApi } from "../../api/TrinityApi.ts"
import type { Edge } from "../http/edge.ts"

const DETAIL = "reports are served by the report server (LRS) on LRS_HTTP_PORT (default 9090)"

export const lrsOnOtherListener = (edge: Edge) =>
  HttpApiBuilder.group(LrsListenerApi, "lrs", (handlers) => {
    const notHere = edge.servedElsewhere("LPO", DETAIL)
    return handlers.handleRaw("usage", notHere).handleRaw("summary", notHere).handleRaw("key", notHere)
  })
