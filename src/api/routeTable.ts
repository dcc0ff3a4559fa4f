import { HttpApi, type HttpApiGroup } from "effect/http-api"

export interface ApiRoute {
  readonly method: string
  readonly path: string
}

/** Every (method, path) an API declares, in declaration order. */
export const routesOf = <Id extends string, Groups extends HttpApiGroup.Constraint>(api: HttpApi.HttpApi<Id, Groups>): ReadonlyArray<ApiRoute> => {
  const routes: Array<ApiRoute> = []
  HttpApi.reflect(api, {
    onGroup: () => {},
    onEndpoint: ({ endpoint }) => void routes.push({ method: endpoint.method, path: endpoint.path })
  })
  return routes
}

const pathPattern = (path: string): RegExp =>
  new RegExp(`^${path.split("/").map((s) => (s.startsWith(":") ? "[^/]+" : s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))).join("/")}$`)

/**
 * The methods a path answers to (HEAD wherever GET is), or an empty list for an unknown path:
 * what a 405's `Allow` header and a CORS preflight need.
 */
export const allowedMethods = (routes: ReadonlyArray<ApiRoute>): ((path: string) => ReadonlyArray<string>) => {
  const patterns = routes.map((r) => ({ method: r.method, pattern: pathPattern(r.path) }))
  return (path) => {
    const methods = new Set<string>()
    for (const p of patterns) {
      if (!p.pattern.test(path)) continue
      methods.add(p.method)
      if (p.method === "GET") methods.add("HEAD")
    }
    return [...methods]
  }
}

/** The route template (`/webhooks/:id`) a path is served by, or undefined for a path no route serves. */
export const routeTemplate = (routes: ReadonlyArray<ApiRoute>): ((path: string) => string | undefined) => {
  const patterns = routes.map((r) => ({ route: r.path, pattern: pathPattern(r.path) }))
  return (path) => patterns.find((p) => p.pattern.test(path))?.route
}
