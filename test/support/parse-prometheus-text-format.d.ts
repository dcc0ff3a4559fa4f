/** The package ships no types: its output is prom2json's shape. */
declare module "parse-prometheus-text-format" {
  export interface ParsedSample {
    readonly labels?: Readonly<Record<string, string>>
    readonly value?: string
    readonly buckets?: Readonly<Record<string, string>>
    readonly count?: string
    readonly sum?: string
  }
  export interface ParsedFamily {
    readonly name: string
    readonly help: string
    readonly type: "COUNTER" | "GAUGE" | "HISTOGRAM" | "SUMMARY" | "UNTYPED"
    readonly metrics: ReadonlyArray<ParsedSample>
  }
  const parsePrometheusTextFormat: (text: string) => ReadonlyArray<ParsedFamily>
  export default parsePrometheusTextFormat
}
