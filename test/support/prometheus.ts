import parsePrometheusTextFormat, { type ParsedFamily } from "parse-prometheus-text-format"

export interface Scrape {
  readonly text: string
  readonly contentType: string
  /** Every family, parsed by parse-prometheus-text-format (which throws on a malformed line). */
  readonly families: ReadonlyMap<string, ParsedFamily>
}

/** An exposition's text, parsed. */
export const parseScrape = (text: string, contentType: string): Scrape => ({
  text, contentType, families: new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]))
})

export const scrape = async (url: string): Promise<Scrape> => {
  const res = await fetch(url)
  if (res.status !== 200) throw new Error(`scrape ${url}: ${res.status}`)
  return parseScrape(await res.text(), res.headers.get("content-type") ?? "")
}

/** The value of a counter or gauge series whose labels include `labels`; undefined when there is none. */
export const valueOf = (s: Scrape, name: string, labels: Readonly<Record<string, string>> = {}): number | undefined => {
  const family = s.families.get(name)
  const sample = family?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
  return sample?.value === undefined ? undefined : Number(sample.value)
}

/**
 * `<name>_count` of a histogram series with exactly these labels. Read from the sample lines: the
 * parser above folds a histogram's labelled series into one, so it cannot tell them apart.
 */
export const histogramCount = (s: Scrape, name: string, labels: Readonly<Record<string, string>>): number | undefined => {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort().join(",")
  for (const line of s.text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$/.exec(line)
    if (m === null || m[1] !== `${name}_count`) continue
    if (m[2]!.split(",").sort().join(",") === wanted) return Number(m[3])
  }
  return undefined
}
