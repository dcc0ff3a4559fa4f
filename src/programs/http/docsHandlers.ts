/** `/openapi.json` and `/docs`, generated from the API definition the server routes with. */
import { Effect } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { HttpApiBuilder, HttpApiScalar, OpenApi } from "effect/http-api"
import { TrinityApi } from "../../api/TrinityApi.ts"

/** The definition with this build's version in its document. */
const apiOfVersion = (version: string) => TrinityApi.annotateMerge(OpenApi.annotations({ version }))

/** Scalar's page (its script is bundled in `effect`, so /docs works offline), rendered once on first use. */
const scalarPage = (version: string) =>
  Effect.promise(async () => {
    const { handler, dispose } = HttpRouter.toWebHandler(HttpApiScalar.layer(apiOfVersion(version), { path: "/docs" }), { disableLogger: true })
    try {
      return await (await handler(new Request("http://localhost/docs"))).text()
    } finally {
      await dispose()
    }
  })

export const docsHandlers = (version: string) =>
  HttpApiBuilder.group(TrinityApi, "docs", (handlers) =>
    Effect.gen(function*() {
      const spec = OpenApi.fromApi(apiOfVersion(version))
      const page = yield* Effect.cached(scalarPage(version))
      return handlers
        .handleRaw("openapi", () => Effect.succeed(HttpServerResponse.jsonUnsafe(spec)))
        .handleRaw("docs", () => Effect.map(page, (html) => HttpServerResponse.html(html)))
    }))
