/**
 * `npm run package:lambda`: one zip per Lambda entry of package.json `exports`, under dist/lambda/:
 * `index.mjs` (the entry and everything it imports, bundled by esbuild into one ES module; handler
 * string `index.handler`, Node.js 22+ runtime) and a package.json carrying the version. The AWS SDK
 * is bundled too, so the function runs the versions the tests ran rather than the runtime's.
 */
import { build } from "esbuild"
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import yazl from "yazl"

/** The Lambda entries: the name of the zip, and the source of its `handler`. */
export const LAMBDAS = [
  { name: "queued-writer", entry: "src/programs/lambda/queuedWriter.ts" },
  { name: "receipt", entry: "src/programs/lambda/receipt.ts" }
] as const

const root = fileURLToPath(new URL("../../../", import.meta.url))

/** CommonJS dependencies (ioredis, the AWS SDK's) call require(), which an ES module lacks. */
const REQUIRE_SHIM = "import { createRequire as __tbCreateRequire } from 'node:module'; const require = __tbCreateRequire(import.meta.url);"

const zipOf = (files: ReadonlyArray<{ readonly path: string; readonly name: string }>, out: string) =>
  new Promise<void>((resolve, reject) => {
    const zip = new yazl.ZipFile()
    for (const f of files) zip.addFile(f.path, f.name)
    zip.outputStream.pipe(createWriteStream(out)).on("close", () => resolve()).on("error", reject)
    zip.end()
  })

const main = async () => {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { readonly name: string; readonly version: string }
  for (const lambda of LAMBDAS) {
    const dir = join(root, "dist", "lambda", lambda.name)
    mkdirSync(dir, { recursive: true })
    await build({
      entryPoints: [join(root, lambda.entry)],
      outfile: join(dir, "index.mjs"),
      bundle: true,
      platform: "node",
      target: "node22",
      format: "esm",
      banner: { js: REQUIRE_SHIM },
      legalComments: "none",
      logLevel: "warning"
    })
    writeFileSync(join(dir, "package.json"), JSON.stringify({ name: `${pkg.name}-${lambda.name}`, version: pkg.version, type: "module" }, null, 2) + "\n")
    const zipPath = join(root, "dist", "lambda", `${lambda.name}.zip`)
    await zipOf([{ path: join(dir, "index.mjs"), name: "index.mjs" }, { path: join(dir, "package.json"), name: "package.json" }], zipPath)
    console.log(`${zipPath}`)
  }
}

main().catch((e: unknown) => {
  console.error(`package:lambda failed: ${e instanceof Error ? e.message : String(e)}`)
  process.exit(1)
})
