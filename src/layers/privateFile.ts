import { randomBytes } from "node:crypto"
import { chmod, link, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises"
import { dirname } from "node:path"

/** Files that hold secrets (the admin token, the embedded database's password and port) are this user's alone. */
const PRIVATE = 0o600

const errorCode = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : undefined

/** A new file beside `path`, mode 0600 from its creation, holding `text`. */
const writeTemp = async (path: string, text: string): Promise<string> => {
  await mkdir(dirname(path), { recursive: true })
  const temp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`
  await writeFile(temp, text, { mode: PRIVATE, flag: "wx" })
  return temp
}

/**
 * Replace `path` with `text`, mode 0600. The file is written aside and renamed over, so a reader
 * sees the old content or the new, and never a moment where it is readable by others (writing over
 * an existing file keeps that file's mode).
 */
export const writePrivateFile = async (path: string, text: string): Promise<void> => {
  const temp = await writeTemp(path, text)
  try {
    await rename(temp, path)
  } finally {
    await rm(temp, { force: true })
  }
}

/** The trimmed content of `path`, or undefined when there is no such file. */
const readIfPresent = async (path: string): Promise<string | undefined> => {
  try {
    return (await readFile(path, "utf8")).trim()
  } catch (e) {
    if (errorCode(e) === "ENOENT") return undefined
    throw e
  }
}

/**
 * A secret kept in `path` (mode 0600) across restarts: the one there if `isValid` accepts it (its
 * mode is set back to 0600 if someone widened it), else a new one from `make`, written whole. When
 * two processes create it at once, both end up with the first one written.
 */
export const keepPrivateSecret = async (
  path: string,
  isValid: (value: string) => boolean,
  make: () => string
): Promise<{ readonly value: string; readonly created: boolean }> => {
  const existing = await readIfPresent(path)
  if (existing !== undefined && isValid(existing)) {
    await chmod(path, PRIVATE)
    return { value: existing, created: false }
  }
  const value = make()
  const temp = await writeTemp(path, `${value}\n`)
  try {
    if (existing !== undefined) {
      // Ours but unusable (empty, cut short): replace it.
      await rename(temp, path)
      return { value, created: true }
    }
    try {
      // link fails if the file appeared meanwhile, so the first one written wins.
      await link(temp, path)
      return { value, created: true }
    } catch (e) {
      if (errorCode(e) !== "EEXIST") throw e
      const theirs = await readIfPresent(path)
      if (theirs !== undefined && isValid(theirs)) return { value: theirs, created: false }
      await rename(temp, path)
      return { value, created: true }
    }
  } finally {
    await rm(temp, { force: true })
  }
}
