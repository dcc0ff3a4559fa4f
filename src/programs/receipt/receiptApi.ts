/**
 * The receipt routes' handlers on the LPO's listener (envelope service RECEIPT). Every answer is
 * made here as a response (not through the declared schemas) so the status follows the spec's
 * code, including 409, and /stripe/webhook reads the raw body its signature was made over.
 */
import { Effect, Layer } from "effect"
import { HttpServerResponse } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import { ReceiptApi } from "../../api/ReceiptGroup.ts"
import { statusOf } from "../../domain/errorCodes.ts"
import type { Edge } from "../http/edge.ts"
import { ReceiptLive } from "./layer.ts"
import { checkoutRoute, receiptRoute, type RouteAnswer, stripeWebhookRoute } from "./routes.ts"

export const receiptHandlers = (edge: Edge) =>
  HttpApiBuilder.group(ReceiptApi, "receipt", (handlers) =>
    Effect.gen(function*() {
      const context = yield* Effect.context<Effect.Services<ReturnType<typeof receiptRoute>>>()
      const respond = (source: object) => (answer: RouteAnswer) => {
        switch (answer._tag) {
          case "Ok":
            return HttpServerResponse.jsonUnsafe(edge.ok(source, "RECEIPT", answer.data), { status: 200 })
          case "Redirect":
            return HttpServerResponse.empty({ status: 302, headers: { location: answer.location } })
          case "Fail": {
            // A 503 carries Retry-After (the listener adds it); the edge's usage row gets the code.
            return HttpServerResponse.jsonUnsafe(edge.fail(source, "RECEIPT", answer.code, answer.detail), { status: statusOf(answer.code) })
          }
        }
      }
      const bodyOf = (request: { readonly text: Effect.Effect<string, unknown> }) => request.text.pipe(Effect.orElseSucceed(() => ""))
      return handlers
        .handleRaw("receipt", ({ request }) =>
          bodyOf(request).pipe(
            Effect.flatMap(receiptRoute),
            Effect.provideContext(context),
            Effect.map(respond(request.source)),
            Effect.withSpan("Receipt.receipt")
          ))
        .handleRaw("stripeWebhook", ({ request }) =>
          bodyOf(request).pipe(
            Effect.flatMap((body) => stripeWebhookRoute(body, request.headers["stripe-signature"])),
            Effect.provideContext(context),
            Effect.map(respond(request.source)),
            Effect.withSpan("Receipt.stripeWebhook")
          ))
        .handleRaw("checkout", ({ request }) => {
          const query = new URL(request.url, "http://localhost").searchParams
          return checkoutRoute(query.get("plan") ?? undefined, query.get("lang") ?? undefined).pipe(
            Effect.provideContext(context),
            Effect.map(respond(request.source)),
            Effect.withSpan("Receipt.checkout")
          )
        })
    })).pipe(Layer.provide(ReceiptLive))
