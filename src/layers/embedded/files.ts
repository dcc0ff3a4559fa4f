import { randomBytes } from "node:crypto"
import { readFile } from "node:fs/promises"
import { join } from "node:path"

/**
 * The embedded database's files in DATA_DIR, shared by the database process that serves it
 * (src/programs/embeddedPostgres.ts) and its clients (the server, its workers and usage thread,
 * the CLI). Both files are mode 0600: whoever can read them can reach the database.
 */

/** Which process serves the embedded database, and on which loopback port: `{ pid, url }`. */
export const ownerFile = (dataDir: string) => join(dataDir, "embedded-postgres.json")

/** The password every client must prove (SCRAM-SHA-256): generated once, kept across restarts. */
export const passwordFile = (dataDir: string) => join(dataDir, "embedded-postgres-password")

/** 32 random bytes, base64url: what `newEmbeddedPassword` makes; anything shorter is not ours. */
export const isEmbeddedPassword = (value: string) => /^[A-Za-z0-9_-]{43,}$/.test(value)

export const newEmbeddedPassword = () => randomBytes(32).toString("base64url")

/** The password in DATA_DIR, or undefined when there is none (no embedded database has run there). */
export const readEmbeddedPassword = async (dataDir: string): Promise<string | undefined> => {
  try {
    const value = (await readFile(passwordFile(dataDir), "utf8")).trim()
    return isEmbeddedPassword(value) ? value : undefined
  } catch {
    return undefined
  }
}
