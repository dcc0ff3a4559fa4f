import { Effect } from "effect"
import { type ChildProcess, fork } from "node:child_process"
import { fileURLToPath } from "node:url"

/**
 * Run a helper program (the embedded database, the exchange simulators) as a child process tied
 * to this scope: fork it, send `init` over IPC, wait for its first message (ready, or
 * `{ startError }`: one line saying why it could not start), and on release send
 * SIGTERM and wait for it to exit (SIGKILL after 10 s). The child exits by itself if this
 * process goes away (IPC disconnect).
 *
 * `programUrl` is resolved against src/programs: built code runs the .js there, tests running the
 * sources run the .ts (Node 24 strips types).
 */
export const forkChildService = <Ready>(
  program: string,
  args: ReadonlyArray<string>,
  init: unknown,
  decodeReady: (message: unknown) => Ready | undefined
) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly child: ChildProcess; readonly ready: Ready }, Error>((resume) => {
      const extension = import.meta.url.endsWith(".ts") ? "ts" : "js"
      const script = fileURLToPath(new URL(`../programs/${program}.${extension}`, import.meta.url))
      const child = fork(script, [...args], { stdio: ["ignore", "inherit", "inherit", "ipc"], execArgv: [] })
      const onExit = (code: number | null) => resume(Effect.fail(new Error(`${program} exited (${code}) before it was ready`)))
      child.once("exit", onExit)
      child.once("message", (m: unknown) => {
        child.off("exit", onExit)
        // A child that cannot start says why in one line (`{ startError }`), then exits.
        if (typeof m === "object" && m !== null && "startError" in m && typeof m.startError === "string") {
          return resume(Effect.fail(new Error(m.startError)))
        }
        const ready = decodeReady(m)
        if (ready === undefined) {
          child.kill("SIGKILL")
          return resume(Effect.fail(new Error(`${program} sent an unexpected first message`)))
        }
        resume(Effect.succeed({ child, ready }))
      })
      if (init !== undefined) child.send(init as object)
    }),
    ({ child }) =>
      Effect.callback<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
        child.once("exit", () => {
          clearTimeout(timer)
          resume(Effect.void)
        })
        child.kill("SIGTERM")
      })
  ).pipe(Effect.map(({ ready }) => ready))
