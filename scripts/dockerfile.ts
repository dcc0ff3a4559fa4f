/**
 * A reader for the subset of Dockerfile and .dockerignore syntax this repository's image uses, shared
 * by scripts/dockerfile-steps.ts (which runs the steps) and test/dockerfile.test.ts (which checks
 * their shape). Anything outside that subset is an error, never silently skipped, so the steps
 * script cannot drift from the Dockerfile unnoticed.
 */

export interface Instruction {
  readonly keyword: string
  /** `--name=value` flags before the arguments (COPY --from, RUN --mount, HEALTHCHECK --interval, …). */
  readonly flags: ReadonlyArray<readonly [string, string]>
  readonly args: string
  readonly line: number
}

export interface Stage {
  readonly name: string
  readonly base: string
  readonly line: number
  readonly instructions: ReadonlyArray<Instruction>
}

export interface Dockerfile {
  /** ARGs declared before the first FROM, with their defaults. */
  readonly globalArgs: Readonly<Record<string, string>>
  readonly stages: ReadonlyArray<Stage>
}

const KNOWN = new Set(["FROM", "ARG", "ENV", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE", "HEALTHCHECK", "STOPSIGNAL", "ENTRYPOINT", "CMD", "LABEL"])

/** `${NAME}` and `$NAME` from `vars`; an unknown name is an error (Docker would make it empty). */
export const substitute = (text: string, vars: Readonly<Record<string, string>>): string =>
  text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_, braced: string | undefined, bare: string | undefined) => {
    const name = braced ?? bare!
    const value = vars[name]
    if (value === undefined) throw new Error(`\$${name} is not defined`)
    return value
  })

const splitFlags = (text: string): { readonly flags: Array<readonly [string, string]>; readonly rest: string } => {
  const flags: Array<readonly [string, string]> = []
  let rest = text.trimStart()
  for (;;) {
    const m = /^--([a-z-]+)=(\S+)\s*/.exec(rest)
    if (m === null) return { flags, rest }
    flags.push([m[1]!, m[2]!])
    rest = rest.slice(m[0].length)
  }
}

/** Logical instructions: comments dropped, `\` continuations joined. */
export const parseDockerfile = (text: string): Dockerfile => {
  const globalArgs: Record<string, string> = {}
  const stages: Array<{ name: string; base: string; line: number; instructions: Array<Instruction> }> = []
  const lines = text.split("\n")
  for (let i = 0; i < lines.length; i++) {
    const start = i
    let logical = lines[i]!
    if (/^\s*(#|$)/.test(logical)) continue
    while (logical.trimEnd().endsWith("\\")) {
      logical = logical.trimEnd().slice(0, -1)
      i++
      while (i < lines.length && /^\s*#/.test(lines[i]!)) i++
      if (i >= lines.length) throw new Error(`line ${start + 1}: continuation at the end of the file`)
      logical += " " + lines[i]!.trim()
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(logical)
    if (m === null) throw new Error(`line ${start + 1}: not an instruction: ${logical}`)
    const keyword = m[1]!.toUpperCase()
    if (!KNOWN.has(keyword)) throw new Error(`line ${start + 1}: ${keyword} is not handled by scripts/dockerfile.ts`)
    const { flags, rest } = splitFlags(m[2]!)
    const instruction: Instruction = { keyword, flags, args: rest.trim(), line: start + 1 }
    if (keyword === "FROM") {
      const from = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args)
      if (from === null) throw new Error(`line ${start + 1}: FROM <image> [AS <name>] expected`)
      stages.push({ name: from[2] ?? String(stages.length), base: substitute(from[1]!, globalArgs), line: start + 1, instructions: [] })
    } else if (stages.length === 0) {
      if (keyword !== "ARG") throw new Error(`line ${start + 1}: only ARG may come before FROM`)
      const arg = /^([A-Za-z_][A-Za-z0-9_]*)=(\S*)$/.exec(instruction.args)
      if (arg === null) throw new Error(`line ${start + 1}: ARG NAME=default expected`)
      globalArgs[arg[1]!] = arg[2]!
    } else {
      stages.at(-1)!.instructions.push(instruction)
    }
  }
  return { globalArgs, stages }
}

/** The exec form (`["a", "b"]`) as an argv, or undefined for the shell form. */
export const execForm = (args: string): ReadonlyArray<string> | undefined => {
  if (!args.trimStart().startsWith("[")) return undefined
  const parsed: unknown = JSON.parse(args)
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === "string")) throw new Error(`not a JSON array of strings: ${args}`)
  return parsed as ReadonlyArray<string>
}

/** `ENV A=1 B="two words"` as pairs. */
export const envPairs = (args: string): ReadonlyArray<readonly [string, string]> => {
  const pairs: Array<readonly [string, string]> = []
  const re = /\s*([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/y
  let position = 0
  while (args.slice(position).trim() !== "") {
    re.lastIndex = position
    const m = re.exec(args)
    if (m === null) throw new Error(`ENV NAME=value expected: ${args}`)
    const raw = m[2]!
    pairs.push([m[1]!, raw.startsWith("\"") ? (JSON.parse(raw) as string) : raw])
    position = re.lastIndex
  }
  if (pairs.length === 0) throw new Error(`ENV NAME=value expected: ${args}`)
  return pairs
}

/** HEALTHCHECK's options and its command (`HEALTHCHECK [--opt=v…] CMD …`). */
export const healthcheckOf = (instruction: Instruction): { readonly options: Readonly<Record<string, string>>; readonly command: ReadonlyArray<string> } => {
  const m = /^CMD\s+(.*)$/.exec(instruction.args)
  if (m === null) throw new Error(`line ${instruction.line}: HEALTHCHECK [options] CMD … expected`)
  const command = execForm(m[1]!) ?? ["/bin/sh", "-c", m[1]!]
  return { options: Object.fromEntries(instruction.flags), command }
}

/**
 * The build context a .dockerignore allows, in the one form this repository uses: `*` (exclude
 * everything), then `!path` lines (what the Dockerfile copies).
 */
export const contextAllowlist = (dockerignore: string): ReadonlyArray<string> => {
  const patterns = dockerignore.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"))
  if (patterns[0] !== "*") throw new Error(".dockerignore must start with `*` (an allowlist)")
  const rest = patterns.slice(1)
  const bad = rest.find((p) => !p.startsWith("!") || /[*?[\]]/.test(p))
  if (bad !== undefined) throw new Error(`.dockerignore: only \`!path\` lines (no wildcards) may follow \`*\`, found ${bad}`)
  return rest.map((p) => p.slice(1).replace(/^\/+|\/+$/g, ""))
}
