import { randomBytes } from "node:crypto"
import { constants } from "node:fs"
import { link, mkdir, open, rename, rm, writeFile } from "node:fs/promises"
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

/** What `path` holds: nothing, this user's own regular file (its trimmed text), or something not to trust. */
type Kept =
  | { readonly kind: "absent" }
  | { readonly kind: "own"; readonly text: string }
  | { readonly kind: "unusable" }

/**
 * Never follow a link planted at `path` (reading it would take a file the planter knows as our
 * secret, and chmod would change the target's mode), and never block on a FIFO planted there.
 */
const OPEN_OWN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK

/**
 * Read `path` through one handle: a regular file owned by this process's user is read and set to
 * mode 0600 through that handle (someone may have widened it); a symbolic link (ELOOP), another
 * user's file or anything else that is not a regular file is unusable, and is left untouched.
 */
const readOwn = async (path: string): Promise<Kept> => {
  let handle
  try {
    handle = await open(path, OPEN_OWN_FLAGS)
  } catch (e) {
    const code = errorCode(e)
    if (code === "ENOENT") return { kind: "absent" }
    if (code === "ELOOP") return { kind: "unusable" }
    throw e
  }
  try {
    const stat = await handle.stat()
    const uid = process.getuid?.()
    if (!stat.isFile() || (uid !== undefined && stat.uid !== uid)) return { kind: "unusable" }
    if ((stat.mode & 0o777) !== PRIVATE) await handle.chmod(PRIVATE)
    return { kind: "own", text: (await handle.readFile("utf8")).trim() }
  } finally {
    await handle.close()
  }
}

/**
 * A secret kept in `path` (mode 0600) across restarts: the one there if it is this user's own
 * regular file and `isValid` accepts it (its mode is set back to 0600 if someone widened it), else
 * a new one from `make`, written whole. Whatever else is at `path` (a symbolic link, another user's
 * file, a directory, a FIFO) is never followed or read: the new file is renamed over it, which
 * replaces a link itself, not its target; when that fails (a directory, a sticky directory that is
 * not ours) the error says so. When two processes create it at once, both end up with the first
 * one written.
 */
export const keepPrivateSecret = async (
  path: string,
  isValid: (value: string) => boolean,
  make: () => string
): Promise<{ readonly value: string; readonly created: boolean }> => {
  const existing = await readOwn(path)
  if (existing.kind === "own" && isValid(existing.text)) return { value: existing.text, created: false }
  const value = make()
  const temp = await writeTemp(path, `${value}\n`)
  try {
    if (existing.kind !== "absent") {
      // Unusable (empty, cut short, a link, not ours): replace it.
      await replaceWith(temp, path)
      return { value, created: true }
    }
    try {
      // link fails if the file appeared meanwhile (a link included, which it does not follow), so the first one written wins.
      await link(temp, path)
      return { value, created: true }
    } catch (e) {
      if (errorCode(e) !== "EEXIST") throw e
      const theirs = await readOwn(path)
      if (theirs.kind === "own" && isValid(theirs.text)) return { value: theirs.text, created: false }
      await replaceWith(temp, path)
      return { value, created: true }
    }
  } finally {
    await rm(temp, { force: true })
  }
}

/** Rename `temp` over `path`; a failure names what is in the way. */
const replaceWith = async (temp: string, path: string): Promise<void> => {
  try {
    await rename(temp, path)
  } catch (e) {
    throw new Error(`${path} is not a file of this user's and cannot be replaced (${errorCode(e) ?? String(e)}); remove it`)
  }
}
