/** The `tb` CLI's streams and exit codes (spec: results on stdout, logs on stderr; 0 done, 1 failed, 2 bad usage). */
import { describe, expect, it } from "vitest"
import { runCli } from "./support/server.ts"

describe("tb stress", () => {
  it.each(["--help", "-h"])("%s prints the usage on stdout and exits 0", async (flag) => {
    const r = await runCli(["stress", flag], {})
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^usage: tb stress /)
    expect(r.stdout).toContain("--duration")
    expect(r.stderr).toBe("")
  })

  it("bad usage exits 2 with the problem and the usage on stderr, nothing on stdout", async () => {
    const r = await runCli(["stress", "--bogus"], {})
    expect(r.code).toBe(2)
    expect(r.stdout).toBe("")
    expect(r.stderr).toMatch(/^tb stress: unknown argument --bogus\nusage: tb stress /)
  })
})
