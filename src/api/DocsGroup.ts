/** The API's own description: the OpenAPI document and a page to read it, both without a key. */
import { Schema } from "effect"
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "effect/http-api"

export class DocsGroup extends HttpApiGroup.make("docs").add(
  HttpApiEndpoint.get("openapi", "/openapi.json", { success: Schema.Record(Schema.String, Schema.Unknown) })
    .annotate(OpenApi.Description, "This document (OpenAPI 3.1), generated from the definition the server routes with."),
  HttpApiEndpoint.get("docs", "/docs", { success: Schema.String.pipe(HttpApiSchema.asText({ contentType: "text/html" })) })
    .annotate(OpenApi.Description, "A readable reference page for this document (Scalar, served from the package; no CDN).")
).annotate(OpenApi.Title, "Documentation") {}
