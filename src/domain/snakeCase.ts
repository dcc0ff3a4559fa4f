/** JSON field names are snake_case everywhere (spec: "HTTP edge"); operational figures are built in camelCase. */
export const snakeCaseName = (name: string): string => name.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase()

/** A JSON-shaped value with every object key in snake_case; arrays and plain values as they are. */
export const snakeCaseKeys = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(snakeCaseKeys)
  if (typeof value !== "object" || value === null) return value
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [snakeCaseName(k), snakeCaseKeys(v)]))
}
