import { assert, describe, it } from "vitest"
import { execFileSync } from "node:child_process"
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { keepPrivateSecret } from "../src/layers/privateFile.ts"

/**
 * The secret files (the admin token, the embedded database's password) live in DATA_DIR, where
 * another hand may have planted something. Only this user's own regular file is ever read or
 * chmodded; anything else is replaced without being followed.
 */
const freshDir = () => mkdtempSync(join(tmpdir(), "tb-private-file-"))
const longEnough = (value: string) => value.length >= 16
const NEW_SECRET = "a-new-secret-made-here"
const keep = (path: string) => keepPrivateSecret(path, longEnough, () => NEW_SECRET)
const modeOf = (path: string) => (statSync(path).mode & 0o777).toString(8)

/** A file the planter knows, readable by everyone, outside DATA_DIR. */
const plantedTarget = () => {
  const target = join(freshDir(), "known-file")
  writeFileSync(target, "content-the-planter-knows\n")
  chmodSync(target, 0o644)
  return target
}

/** What is at `path` now is a regular file of ours, mode 0600, holding `value`. */
const assertReplacedWith = (path: string, value: string) => {
  const stat = lstatSync(path)
  assert.isTrue(stat.isFile(), "a regular file, not a link")
  assert.strictEqual(stat.uid, process.getuid?.() ?? stat.uid)
  assert.strictEqual(modeOf(path), "600")
  assert.strictEqual(readFileSync(path, "utf8").trim(), value)
}

describe("keepPrivateSecret never trusts what it did not make", () => {
  it("a symbolic link is not followed: its target keeps its mode and content, and is not taken as the secret", async () => {
    const target = plantedTarget()
    const path = join(freshDir(), "secret")
    symlinkSync(target, path)
    const kept = await keep(path)
    assert.deepStrictEqual(kept, { value: NEW_SECRET, created: true })
    assert.strictEqual(modeOf(target), "644")
    assert.strictEqual(readFileSync(target, "utf8"), "content-the-planter-knows\n")
    assertReplacedWith(path, NEW_SECRET)
  })

  it("a link to a file of ours is not followed either", async () => {
    const dir = freshDir()
    const ours = join(dir, "ours")
    writeFileSync(ours, "one-of-our-own-long-files\n", { mode: 0o644 })
    const path = join(dir, "secret")
    symlinkSync(ours, path)
    assert.strictEqual((await keep(path)).value, NEW_SECRET)
    assert.strictEqual(modeOf(ours), "644")
    assertReplacedWith(path, NEW_SECRET)
  })

  it("a dangling link is replaced, and nothing is created where it pointed", async () => {
    const nowhere = join(freshDir(), "not-there")
    const path = join(freshDir(), "secret")
    symlinkSync(nowhere, path)
    assert.strictEqual((await keep(path)).value, NEW_SECRET)
    assert.throws(() => lstatSync(nowhere))
    assertReplacedWith(path, NEW_SECRET)
  })

  it.skipIf(process.getuid?.() !== 0)("another user's file is not taken as the secret, nor chmodded (as root)", async () => {
    const path = join(freshDir(), "secret")
    writeFileSync(path, "content-the-planter-knows\n", { mode: 0o644 })
    chownSync(path, 65_534, 65_534)
    assert.strictEqual((await keep(path)).value, NEW_SECRET)
    assertReplacedWith(path, NEW_SECRET)
  })

  it("a FIFO is replaced without waiting for a writer", async () => {
    const path = join(freshDir(), "secret")
    execFileSync("mkfifo", [path])
    assert.strictEqual((await keep(path)).value, NEW_SECRET)
    assertReplacedWith(path, NEW_SECRET)
  }, 10_000)

  it("a directory in the way is an error that names the path", async () => {
    const path = join(freshDir(), "secret")
    mkdirSync(path)
    const error = await keep(path).then(() => undefined, (e: unknown) => e)
    assert.instanceOf(error, Error)
    assert.include((error as Error).message, path)
    assert.notInclude((error as Error).message, "\n")
  })

  it("this user's own file is kept, and set back to 0600 if widened", async () => {
    const path = join(freshDir(), "secret")
    writeFileSync(path, "a-secret-of-a-previous-start\n", { mode: 0o644 })
    chmodSync(path, 0o644)
    assert.deepStrictEqual(await keep(path), { value: "a-secret-of-a-previous-start", created: false })
    assertReplacedWith(path, "a-secret-of-a-previous-start")
  })
})
