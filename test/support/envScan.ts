/**
 * The environment variables the code reads, found in its source text (src/**.ts), so deploy files
 * can be checked against what the code knows rather than against a hand-kept list:
 * - Config constructors (`Config.String("NAME")`, `Config.Port`, `Config.schema(…, "NAME")`, …):
 *   the call's last argument, when it is a string literal;
 * - helpers that wrap one (`const optionalString = (name: string) => Config.String(name)…`), at
 *   their call sites (`optionalString("NAME")`);
 * - `process.env["NAME"]` and `process.env.NAME`; `process.env[\`PREFIX_${…}\`]` gives a prefix;
 * - the Secrets service's names (`SECRET_NAMES`), which SecretsFromEnv reads from the environment;
 * - `OTEL_*` when a module that names OTEL_ variables hands the environment to OpenTelemetry.
 */
import { readdirSync, readFileSync } from "node:fs"
import { join, relative } from "node:path"

export interface EnvScan {
  /** Exact names, each with the files that read it. */
  readonly names: ReadonlyMap<string, ReadonlyArray<string>>
  /** Families read by prefix (`FEED_URL_` for `FEED_URL_<EXCHANGE>`). */
  readonly prefixes: ReadonlyMap<string, ReadonlyArray<string>>
}

const CONSTRUCTORS = "String|Redacted|Int|Port|Boolean|Number|Literals|Literal|schema|Url|Duration|NonEmptyString|LogLevel|Date|Integer|BigInt|Finite"
const ENV_NAME = /^[A-Z][A-Z0-9_]*$/

const sourceFiles = (dir: string): ReadonlyArray<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [])

/** The text between the parenthesis at `open` and its match (strings and templates skipped). */
const argumentsAt = (text: string, open: number): string => {
  let depth = 0
  for (let i = open; i < text.length; i++) {
    const c = text[i]!
    if (c === "\"" || c === "'" || c === "`") {
      for (i++; i < text.length && text[i] !== c; i++) if (text[i] === "\\") i++
      continue
    }
    if (c === "(" || c === "[" || c === "{") depth++
    if (c === ")" || c === "]" || c === "}") {
      depth--
      if (depth === 0) return text.slice(open + 1, i)
    }
  }
  return ""
}

/** The top-level arguments of a call (commas inside nested brackets or strings do not split). */
const topLevelArguments = (args: string): ReadonlyArray<string> => {
  const parts: Array<string> = []
  let depth = 0
  let start = 0
  for (let i = 0; i < args.length; i++) {
    const c = args[i]!
    if (c === "\"" || c === "'" || c === "`") {
      for (i++; i < args.length && args[i] !== c; i++) if (args[i] === "\\") i++
      continue
    }
    if (c === "(" || c === "[" || c === "{") depth++
    else if (c === ")" || c === "]" || c === "}") depth--
    else if (c === "," && depth === 0) {
      parts.push(args.slice(start, i).trim())
      start = i + 1
    }
  }
  parts.push(args.slice(start).trim())
  return parts.filter((p) => p !== "")
}

const stringLiteral = (expression: string): string | undefined => {
  const m = /^"([^"\\]*)"$|^'([^'\\]*)'$/.exec(expression)
  return m === null ? undefined : (m[1] ?? m[2])
}

export const scanEnv = (srcDir: string): EnvScan => {
  const names = new Map<string, Array<string>>()
  const prefixes = new Map<string, Array<string>>()
  const add = (map: Map<string, Array<string>>, name: string, file: string) => {
    const files = map.get(name) ?? []
    if (!files.includes(file)) files.push(file)
    map.set(name, files)
  }
  for (const path of sourceFiles(srcDir)) {
    const text = readFileSync(path, "utf8")
    const file = relative(join(srcDir, ".."), path)
    const lastLiteralArgument = (open: number) => {
      const last = topLevelArguments(argumentsAt(text, open)).at(-1)
      const name = last === undefined ? undefined : stringLiteral(last)
      if (name !== undefined && ENV_NAME.test(name)) add(names, name, file)
    }
    for (const m of text.matchAll(new RegExp(`\\bConfig\\.(?:${CONSTRUCTORS})\\(`, "g"))) lastLiteralArgument(m.index + m[0].length - 1)
    // Helpers that pass their string parameter to a Config constructor.
    for (const helper of text.matchAll(new RegExp(`\\bconst (\\w+) = \\((\\w+): string\\) =>\\s*Config\\.(?:${CONSTRUCTORS})\\(\\2\\)`, "g"))) {
      for (const call of text.matchAll(new RegExp(`\\b${helper[1]}\\(`, "g"))) lastLiteralArgument(call.index + call[0].length - 1)
    }
    for (const m of text.matchAll(/process\.env\[\s*"([A-Z][A-Z0-9_]*)"\s*\]|process\.env\.([A-Z][A-Z0-9_]*)\b/g)) add(names, (m[1] ?? m[2])!, file)
    for (const m of text.matchAll(/process\.env\[\s*`([A-Z][A-Z0-9_]*_)\$\{/g)) add(prefixes, m[1]!, file)
    const secretNames = /\bexport const SECRET_NAMES = \[([^\]]*)\] as const/.exec(text)
    if (secretNames !== null) {
      for (const literal of topLevelArguments(secretNames[1]!)) {
        const name = stringLiteral(literal)
        if (name !== undefined) add(names, name, file)
      }
    }
    // OpenTelemetry's configuration, handed the environment, reads the standard OTEL_* family.
    if (/\bprocess\.env\b/.test(text) && /"OTEL_[A-Z_]+"/.test(text)) add(prefixes, "OTEL_", file)
  }
  return { names, prefixes }
}

/** Whether the code reads `name`, exactly or through one of its prefixes. */
export const readsEnv = (scan: EnvScan, name: string): boolean =>
  scan.names.has(name) || [...scan.prefixes.keys()].some((p) => name.startsWith(p) && name.length > p.length)
