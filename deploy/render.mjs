#!/usr/bin/env node
// Fills the ${NAME} placeholders of deploy/**/*.json from the environment:
//   node deploy/render.mjs OUT_DIR [deploy/ecs/BeastMain.json …]   (default: every JSON file)
// Each output keeps its path under OUT_DIR (OUT_DIR/ecs/BeastMain.json) and is ready for
// `aws … --cli-input-json file://OUT_DIR/…`. A placeholder whose variable is unset stops it, naming
// the variable and the file; values are JSON-escaped, and every output must parse. docs/deploying.md
// lists the variables.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const here = dirname(fileURLToPath(import.meta.url))
const [out, ...only] = process.argv.slice(2)
if (out === undefined) {
  console.error("usage: node deploy/render.mjs OUT_DIR [deploy/…/file.json …]")
  process.exit(2)
}
const walk = (dir) => readdirSync(dir, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith(".json") ? [join(dir, e.name)] : [])
const files = only.length > 0 ? only.map((f) => resolve(f)) : walk(here)
const missing = new Map()
const rendered = files.map((file) => {
  const text = readFileSync(file, "utf8").replace(/\$\{([A-Z][A-Z0-9_]*)\}/g, (whole, name) => {
    const value = process.env[name]
    if (value === undefined || value === "") {
      missing.set(name, [...(missing.get(name) ?? []), relative(here, file)])
      return whole
    }
    return JSON.stringify(value).slice(1, -1)
  })
  return { file, text }
})
if (missing.size > 0) {
  for (const [name, where] of missing) console.error(`${name} is not set (used by ${where.join(", ")})`)
  process.exit(2)
}
for (const { file, text } of rendered) {
  JSON.parse(text)
  const target = join(resolve(out), relative(here, file))
  mkdirSync(dirname(target), { recursive: true })
  writeFileSync(target, text)
  console.log(target)
}
