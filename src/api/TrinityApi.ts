/**
 * The one HTTP API definition: every HTTP route of every listener is declared here, with its
 * Schema-checked inputs, its envelope and its declared errors. The server routes with it, and
 * `/openapi.json` and `/docs` are generated from it, so the document cannot drift from the code.
 * The price routes are answered by the raw fast path but declared here all the same.
 */
import { HttpApi, OpenApi } from "effect/http-api"
import { AdminGroup } from "./AdminGroup.ts"
import { DocsGroup } from "./DocsGroup.ts"
import { LpoGroup } from "./LpoGroup.ts"
import { LrsGroup } from "./LrsGroup.ts"
import { ReceiptGroup } from "./ReceiptGroup.ts"
import { WebhookGroup } from "./WebhookGroup.ts"

export class TrinityApi extends HttpApi.make("trinity-beast")
  .add(LpoGroup)
  .add(AdminGroup)
  .add(LrsGroup)
  .add(WebhookGroup)
  .add(ReceiptGroup)
  .add(DocsGroup)
  .annotateMerge(OpenApi.annotations({
    title: "Trinity Beast",
    description: "Real-time crypto prices per API key (LPO), operator endpoints (admin), usage reports (LRS, on LRS_HTTP_PORT), webhook management and purchases (on LPO_HTTP_PORT). Every JSON answer is the 12-field envelope; " +
      "errors carry a `code` whose HTTP status is fixed (see each response). Send the key as `X-API-Key: <key>` or `Authorization: Bearer <key>`."
  })) {}

/**
 * What the report server's own listener (LRS_HTTP_PORT) routes: the report routes and the API's
 * documentation. Same id and groups as TrinityApi, so the handlers of one serve the other.
 */
export class LrsListenerApi extends HttpApi.make("trinity-beast").add(LrsGroup).add(WebhookGroup).add(ReceiptGroup).add(DocsGroup) {}
