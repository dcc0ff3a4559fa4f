import { readdirSync, readFileSync } from "node:fs"
import { dirname, join, normalize, relative } from "node:path"
import { describe, expect, it } from "vitest"

const SRC = join(import.meta.dirname, "..", "src")
/** domain ← services (and the API definition, configuration) ← layers (and simulators) ← programs. */
const RANK: Record<string, number> = { domain: 0, api: 1, services: 1, config: 1, layers: 2, simulators: 2, programs: 3 }

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []))

const kindOf = (file: string): string => relative(SRC, file).split("/")[0]!

describe("layout", () => {
  it("imports flow one way: domain ← services ← layers ← programs", () => {
    const upward: Array<string> = []
    for (const file of sourceFiles(SRC)) {
      for (const [, spec] of readFileSync(file, "utf8").matchAll(/from "(\.[^"]+)"/g)) {
        const target = normalize(join(dirname(file), spec!))
        const from = kindOf(file)
        const to = kindOf(target)
        if ((RANK[to] ?? 99) > (RANK[from] ?? -1) || (from === "simulators" && to === "layers")) upward.push(`${relative(SRC, file)} → ${relative(SRC, target)}`)
      }
    }
    expect(upward).toEqual([])
  })

  it("every source file belongs to one of the kinds", () => {
    expect(sourceFiles(SRC).map(kindOf).filter((k) => RANK[k] === undefined)).toEqual([])
  })

  it("services hold interfaces only: no Layer is built there", () => {
    const implementations = sourceFiles(join(SRC, "services")).filter((f) => /\bLayer\.(effect|succeed|sync|unwrap|scoped)\b/.test(readFileSync(f, "utf8")))
    expect(implementations.map((f) => relative(SRC, f))).toEqual([])
  })
})
