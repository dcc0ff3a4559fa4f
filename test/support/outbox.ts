import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"

/** The text parts of the .eml files in `DATA_DIR/outbox` sent to `to`. */
export const mailsTo = (dataDir: string, to: string): Array<string> => {
  const dir = join(dataDir, "outbox")
  let files: Array<string> = []
  try {
    files = readdirSync(dir)
  } catch {
    return []
  }
  return files.map((f) => readFileSync(join(dir, f), "utf8")).filter((m) => m.includes(`\r\nTo: ${to}\r\n`)).map((m) => {
    const part = m.split("Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")[1] ?? ""
    return part.split("\r\n--tb-")[0] ?? ""
  })
}
