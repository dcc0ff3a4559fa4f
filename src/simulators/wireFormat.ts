/** Small helpers the exchange simulators share for reading client JSON and printing values. */

export type ClientMessage = { readonly [key: string]: unknown }

/** A client frame as a JSON object, or undefined when it is not one. */
export const parseClientJson = (raw: string): ClientMessage | undefined => {
  try {
    const value: unknown = JSON.parse(raw)
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as ClientMessage) : undefined
  } catch {
    return undefined
  }
}

export const isClientMessage = (value: unknown): value is ClientMessage =>
  typeof value === "object" && value !== null && !Array.isArray(value)

export const stringsOf = (value: unknown): ReadonlyArray<string> =>
  Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : []

/** Decimal string with precision suited to the magnitude, as exchanges print prices. */
export const formatDecimal = (value: number): string => {
  const abs = Math.abs(value)
  const decimals = abs >= 1_000 ? 2 : abs >= 1 ? 4 : abs >= 0.01 ? 6 : 8
  return value.toFixed(decimals)
}

/** A price as a JSON number with the same precision (Kraken v2 sends numbers). */
export const roundedPrice = (value: number): number => Number(formatDecimal(value))

/** Size/volume string with 8 decimals, as most venues print quantities. */
export const formatQuantity = (value: number): string => value.toFixed(8)

/** ISO-8601 UTC with microseconds ("2022-10-19T23:28:22.061769Z"), as Coinbase and Kraken print. */
export const isoMicros = (ms: number): string => {
  const micros = String(Math.floor((ms % 1) * 1000)).padStart(3, "0")
  return `${new Date(Math.floor(ms)).toISOString().slice(0, -1)}${micros}Z`
}
