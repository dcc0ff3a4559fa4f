/**
 * The Dockerfile's steps without a Docker engine (none runs where this project is built): reads
 * Dockerfile and .dockerignore, builds the context, runs every stage's WORKDIR / COPY / ENV / RUN /
 * USER in a clean temporary directory, then starts the final stage's ENTRYPOINT + CMD the way the
 * container would (PID 1 of a new PID namespace, as the image's USER), checks /health and the
 * HEALTHCHECK command, sends SIGTERM and expects exit 0. Run through scripts/dockerfile-steps.sh.
 *
 * What differs from a real build, and is printed at the end: the base image's filesystem is this
 * machine's (Debian here, bookworm-slim there), Node is the pinned npm `node` binary copied in as
 * the image's /usr/local/bin/node, npm is this machine's npm running on it (the image bundles its
 * own), and a RUN's `--mount=type=cache,target=/root/.npm` is this machine's npm cache.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { createSocket } from "node:dgram"
import { dirname, join, posix, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { contextAllowlist, envPairs, execForm, healthcheckOf, type Instruction, parseDockerfile, type Stage, substitute } from "./dockerfile.ts"

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..")
const keep = process.argv.includes("--keep")
/** `--ref=<commit>`: the context from that commit (git archive) instead of the working tree (what `docker build .` sends). */
const ref = process.argv.find((a) => a.startsWith("--ref="))?.slice("--ref=".length)
const started = Date.now()
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`
const say = (line: string) => console.log(`[${elapsed().padStart(7)}] ${line}`)
const fail: (line: string) => never = (line) => {
  console.error(`FAILED: ${line}`)
  process.exit(1)
}

/** The base image's `node` user (node:*-bookworm-slim's /etc/passwd). */
const USERS: Record<string, { readonly uid: number; readonly gid: number; readonly home: string }> = {
  root: { uid: 0, gid: 0, home: "/root" },
  node: { uid: 1000, gid: 1000, home: "/home/node" }
}
const userOf = (spec: string) => {
  const named = USERS[spec]
  if (named !== undefined) return named
  const m = /^(\d+)(?::(\d+))?$/.exec(spec)
  if (m === null) return fail(`USER ${spec}: not a user of the base image`)
  return { uid: Number(m[1]), gid: Number(m[2] ?? m[1]), home: "/" }
}

const dockerfile = parseDockerfile(readFileSync(join(repo, "Dockerfile"), "utf8"))
const allow = contextAllowlist(readFileSync(join(repo, ".dockerignore"), "utf8"))
const work = mkdtempSync("/tmp/tb-dockerfile-steps-")
chmodSync(work, 0o755) // the unprivileged user must reach the final stage's files
say(`work directory ${work}${keep ? " (kept)" : ""}`)
/** Containers still running: stopped (with everything in their namespace) when this script exits, failed or not. */
const running = new Set<ChildProcess>()
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL")
})
// Stopped from outside (Ctrl-C, a test runner's timeout): still stop the containers and clean up.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(signal, () => process.exit(1))

const cleanup = () => {
  if (!keep) rmSync(work, { recursive: true, force: true })
}
process.on("exit", cleanup)

// The build context: only what .dockerignore lets through.
const context = join(work, "context")
mkdirSync(context)
if (ref === undefined) {
  for (const path of allow) {
    if (!existsSync(join(repo, path))) fail(`.dockerignore allows ${path}, which does not exist`)
    cpSync(join(repo, path), join(context, path), { recursive: true })
  }
} else {
  const tar = join(work, "context.tar")
  const archive = spawnSync("git", ["-C", repo, "archive", "--output", tar, ref, "--", ...allow], { encoding: "utf8" })
  if (archive.status !== 0) fail(`git archive ${ref}: ${archive.stderr}`)
  if (spawnSync("tar", ["-xf", tar, "-C", context]).status !== 0) fail("tar -x of the context failed")
}
say(`context (${ref === undefined ? "working tree" : ref}): ${allow.join(", ")}`)

// The base image's /usr/local/bin: the pinned Node (this script runs on it) and an npm running on it.
const toolchain = join(work, "usr-local-bin")
mkdirSync(toolchain)
cpSync(process.execPath, join(toolchain, "node"))
chmodSync(toolchain, 0o755)
const npmCli = (() => {
  const which = spawnSync("sh", ["-c", "command -v npm"], { encoding: "utf8" }).stdout.trim()
  if (which === "") return fail("npm not found")
  const cli = join(dirname(realpathSync(which)), "npm-cli.js")
  return existsSync(cli) ? cli : fail(`npm-cli.js not beside ${realpathSync(which)}`)
})()
writeFileSync(join(toolchain, "npm"), `#!/bin/sh\nexec "${join(toolchain, "node")}" "${npmCli}" "$@"\n`, { mode: 0o755 })
const nodeVersion = spawnSync(join(toolchain, "node"), ["--version"], { encoding: "utf8" }).stdout.trim()
const npmVersion = spawnSync(join(toolchain, "npm"), ["--version"], { encoding: "utf8" }).stdout.trim()
const wanted = dockerfile.globalArgs["NODE_VERSION"]
if (wanted !== undefined && nodeVersion !== `v${wanted}`) fail(`Dockerfile NODE_VERSION ${wanted}, but this Node is ${nodeVersion}`)
say(`node ${nodeVersion} (the image's NODE_VERSION ${wanted ?? "?"}), npm ${npmVersion} (this machine's; the image bundles its own)`)
const hostNpmCache = spawnSync("npm", ["config", "get", "cache"], { encoding: "utf8" }).stdout.trim()
// How this machine reaches the registry (a TLS-intercepting proxy's CA), which the image would not need.
const registryTrust: Record<string, string> = {}
const hostCafile = spawnSync("npm", ["config", "get", "cafile"], { encoding: "utf8" }).stdout.trim()
if (hostCafile !== "" && hostCafile !== "null" && hostCafile !== "undefined") registryTrust["npm_config_cafile"] = hostCafile
if (process.env["NODE_EXTRA_CA_CERTS"] !== undefined) registryTrust["NODE_EXTRA_CA_CERTS"] = process.env["NODE_EXTRA_CA_CERTS"]

const PATH = `${toolchain}:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin`

interface StageState {
  readonly root: string
  workdir: string
  user: string
  env: Record<string, string>
  readonly meta: Map<string, Instruction>
  exposed: Array<string>
}
const states = new Map<string, StageState>()
/** A path inside a stage's filesystem. */
const inStage = (state: StageState, path: string) => join(state.root, posix.resolve(state.workdir, path))

const copy = (state: StageState, instruction: Instruction) => {
  const parts = instruction.args.split(/\s+/)
  if (parts.length < 2) fail(`line ${instruction.line}: COPY <src>… <dest>`)
  const dest = parts.at(-1)!
  const from = instruction.flags.find(([k]) => k === "from")?.[1]
  if (instruction.flags.some(([k]) => k !== "from")) fail(`line ${instruction.line}: only COPY --from is handled`)
  const sourceRoot = from === undefined ? context : (states.get(from)?.root ?? fail(`line ${instruction.line}: no stage ${from}`))
  for (const source of parts.slice(0, -1)) {
    const path = join(sourceRoot, from === undefined ? posix.normalize(source) : posix.resolve("/", source))
    if (!existsSync(path)) fail(`line ${instruction.line}: COPY ${source}: not in the ${from === undefined ? "context (.dockerignore?)" : `stage ${from}`}`)
    const target = dest.endsWith("/") && !statSync(path).isDirectory() ? join(inStage(state, dest), posix.basename(source)) : inStage(state, dest)
    mkdirSync(dirname(target), { recursive: true })
    // A directory's contents go into dest, as Docker copies them.
    cpSync(path, target, { recursive: true })
  }
}

const run = (state: StageState, instruction: Instruction) => {
  if (instruction.args.includes(state.workdir + "/") || new RegExp(`(^|\\s)${state.workdir}(\\s|$)`).test(instruction.args)) {
    fail(`line ${instruction.line}: RUN names ${state.workdir}; keep RUN paths relative to WORKDIR (this script maps WORKDIR, not shell words)`)
  }
  const env = { ...state.env, ...registryTrust }
  for (const [k, v] of instruction.flags) {
    if (k !== "mount") fail(`line ${instruction.line}: RUN --${k} is not handled`)
    if (v !== "type=cache,target=/root/.npm") fail(`line ${instruction.line}: only --mount=type=cache,target=/root/.npm is handled`)
    env["npm_config_cache"] = hostNpmCache
  }
  const argv = execForm(instruction.args) ?? ["/bin/sh", "-c", instruction.args]
  const user = userOf(state.user)
  const command = user.uid === 0 ? argv : ["setpriv", `--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups", "--", ...argv]
  const t = Date.now()
  const out = spawnSync(command[0]!, command.slice(1), { cwd: join(state.root, state.workdir), env, stdio: ["ignore", "inherit", "inherit"] })
  if (out.status !== 0) fail(`line ${instruction.line}: RUN ${instruction.args} exited ${out.status ?? out.signal}`)
  say(`  RUN ${instruction.args} (${((Date.now() - t) / 1000).toFixed(1)} s)`)
}

const runStage = (stage: Stage) => {
  const root = join(work, "stages", stage.name)
  mkdirSync(join(root, "root"), { recursive: true })
  const state: StageState = {
    root,
    workdir: "/",
    user: "root",
    env: { PATH, HOME: join(root, "root"), NODE_VERSION: dockerfile.globalArgs["NODE_VERSION"] ?? "" },
    meta: new Map(),
    exposed: []
  }
  states.set(stage.name, state)
  say(`stage ${stage.name} (FROM ${stage.base})`)
  for (const instruction of stage.instructions) {
    const args = instruction.keyword === "RUN" ? instruction.args : substitute(instruction.args, { ...dockerfile.globalArgs, ...state.env })
    switch (instruction.keyword) {
      case "WORKDIR":
        state.workdir = posix.resolve(state.workdir, args)
        mkdirSync(join(root, state.workdir), { recursive: true })
        break
      case "COPY":
        copy(state, { ...instruction, args })
        say(`  COPY ${instruction.flags.map(([k, v]) => `--${k}=${v} `).join("")}${args}`)
        break
      case "RUN":
        run(state, instruction)
        break
      case "ENV":
        for (const [k, v] of envPairs(args)) state.env[k] = v
        break
      case "USER":
        userOf(args)
        state.user = args
        break
      case "EXPOSE":
        state.exposed.push(...args.split(/\s+/))
        break
      case "ARG":
        break
      default:
        state.meta.set(instruction.keyword, instruction)
    }
  }
  return state
}

for (const stage of dockerfile.stages) runStage(stage)
const final = [...states.values()].at(-1)!
const appDir = join(final.root, final.workdir)

// ---- The container: ENTRYPOINT + CMD as PID 1, as the image's USER, with the image's ENV. ----
const freePort = (type: "tcp" | "udp") =>
  new Promise<number>((done, error) => {
    if (type === "tcp") {
      const server = createServer().listen(0, "127.0.0.1", () => {
        const port = (server.address() as { port: number }).port
        server.close(() => done(port))
      }).on("error", error)
    } else {
      const socket = createSocket("udp4").bind(0, "127.0.0.1", () => {
        const port = socket.address().port
        socket.close(() => done(port))
      }).on("error", error)
    }
  })

const user = userOf(final.user)
if (user.uid === 0) fail("the final stage runs as root")
const home = join(work, "home")
mkdirSync(home)
spawnSync("chown", [`${user.uid}:${user.gid}`, home])
const entrypoint = execForm(final.meta.get("ENTRYPOINT")?.args ?? "[]") ?? fail("ENTRYPOINT must be the exec form")
const cmd = execForm(final.meta.get("CMD")?.args ?? "[]") ?? fail("CMD must be the exec form")
const stopSignal = (final.meta.get("STOPSIGNAL")?.args ?? "SIGTERM") as NodeJS.Signals
const health = healthcheckOf(final.meta.get("HEALTHCHECK") ?? fail("no HEALTHCHECK"))

const ports = {
  LPO_HTTP_PORT: await freePort("tcp"),
  LPO_UDP_PORT: await freePort("udp"),
  LRS_HTTP_PORT: await freePort("tcp"),
  LRS_UDP_PORT: await freePort("udp"),
  METRICS_PORT: await freePort("tcp")
}
// DATA_DIR is the image's (ENV); everything else is the embedded default, with simulated feeds.
const containerEnv: Record<string, string> = {
  ...final.env,
  // DATA_DIR=/app/data in the image: the same directory of this stage's filesystem.
  ...(final.env["DATA_DIR"] === undefined ? {} : { DATA_DIR: join(final.root, final.env["DATA_DIR"]) }),
  HOME: home,
  HOSTNAME: "dockerfile-steps",
  FEEDS: "simulated",
  ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)]))
}
delete containerEnv["npm_config_cache"]

/** `argv` as PID 1 of a new PID namespace (own /proc), as the image's user, in WORKDIR. */
const startContainer = (argv: ReadonlyArray<string>, env: Record<string, string>, log: string) => {
  const resolved = argv[0] === "node" ? [join(toolchain, "node"), ...argv.slice(1)] : [...argv]
  // --kill-child: if this script dies, the namespace's PID 1, and with it everything in it, is killed.
  const child = spawn("unshare", ["--pid", "--fork", "--mount-proc", "--kill-child", "--", "setpriv", `--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups", "--", ...resolved], {
    cwd: appDir,
    env,
    stdio: ["ignore", "pipe", "pipe"]
  })
  running.add(child)
  child.once("exit", () => running.delete(child))
  let output = ""
  child.stdout.on("data", (b: Buffer) => (output += b.toString()))
  child.stderr.on("data", (b: Buffer) => (output += b.toString()))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => child.once("exit", (code, signal) => done({ code, signal })))
  return { child, exited, output: () => output, saveLog: () => writeFileSync(join(work, log), output) }
}

/** The host pid of the namespace's PID 1 (unshare's only child). */
const pid1Of = async (unshare: ChildProcess) => {
  for (let i = 0; i < 100; i++) {
    const children = readFileSync(`/proc/${unshare.pid}/task/${unshare.pid}/children`, "utf8").trim()
    if (children !== "") {
      const pid = Number(children.split(" ")[0])
      const status = readFileSync(`/proc/${pid}/status`, "utf8")
      // setpriv has exec'd node (whose main thread is named MainThread, so the exe tells).
      if (readlinkSync(`/proc/${pid}/exe`) === join(toolchain, "node")) return { pid, status }
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  return fail("the container's main process did not start")
}

const httpStatus = async (url: string) => {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2_000) })
    await response.arrayBuffer()
    return response.status
  } catch {
    return 0
  }
}

/** `promise`, or undefined after `ms` (the timer does not hold the process). */
const within = <A>(promise: Promise<A>, ms: number) =>
  new Promise<A | undefined>((done) => {
    const timer = setTimeout(() => done(undefined), ms)
    promise.then((a) => {
      clearTimeout(timer)
      done(a)
    })
  })

/** The HEALTHCHECK command, run inside the container: its PID namespace, its user, its environment. */
const healthcheck = (pid: number, env: Record<string, string>) =>
  spawnSync("nsenter", [`--target=${pid}`, "--pid", "--mount", `--wd=${appDir}`, "--", "setpriv", `--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups", "--",
    ...(health.command[0] === "node" ? [join(toolchain, "node"), ...health.command.slice(1)] : health.command)], { env, encoding: "utf8", timeout: 30_000 })

const serveArgs = [...entrypoint, ...cmd]
/** `tb serve` in one server type: PID 1 as the image's user, healthy by its HEALTHCHECK, then SIGTERM → exit 0. */
const serveOnce = async (serverType: string | undefined) => {
  const env = serverType === undefined ? containerEnv : { ...containerEnv, SERVER_TYPE: serverType }
  const label = serverType ?? "SERVER_TYPE unset (ALL)"
  say(`container ${label}: ${serveArgs.join(" ")} as ${final.user} (uid ${user.uid})`)
  const server = startContainer(serveArgs, env, `serve-${serverType ?? "default"}.log`)
  const { pid, status } = await pid1Of(server.child)
  const nsPid = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/)
  const uid = /^Uid:\s+(\d+)/m.exec(status)?.[1]
  if (nsPid?.at(-1) !== "1") fail(`the main process is not PID 1 in its namespace (NSpid ${nsPid?.join(" ")})`)
  if (uid !== String(user.uid)) fail(`the main process runs as uid ${uid}, not ${user.uid}`)
  say(`  main process: host pid ${pid}, PID 1 in its namespace, uid ${uid}`)
  const deadline = Date.now() + 120_000
  for (;;) {
    const probe = healthcheck(pid, env)
    if (probe.status === 0) {
      say(`  HEALTHCHECK ${health.command.join(" ")} → 0 (${probe.stdout.trim()})`)
      break
    }
    if (Date.now() > deadline) {
      server.saveLog()
      fail(`HEALTHCHECK still failing after 120 s: ${probe.stdout}${probe.stderr}\n${server.output().slice(-3000)}`)
    }
    const early = await within(server.exited, 500)
    if (early !== undefined) fail(`the server exited early: ${JSON.stringify(early)}\n${server.output().slice(-3000)}`)
  }
  if (serverType === undefined) {
    for (const url of [`http://127.0.0.1:${ports.LPO_HTTP_PORT}/health`, `http://127.0.0.1:${ports.LRS_HTTP_PORT}/openapi.json`, `http://127.0.0.1:${ports.METRICS_PORT}/metrics`]) {
      const code = await httpStatus(url)
      if (code !== 200) fail(`GET ${url} → ${code}`)
      say(`  GET ${url} → 200`)
    }
  }
  const stopAt = Date.now()
  process.kill(pid, stopSignal)
  const stopped = await within(server.exited, 60_000)
  server.saveLog()
  if (stopped === undefined) fail(`no exit within 60 s of ${stopSignal}`)
  if (stopped.code !== 0) fail(`exit ${JSON.stringify(stopped)} after ${stopSignal}\n${server.output().slice(-3000)}`)
  say(`  ${stopSignal} → exit 0 after ${Date.now() - stopAt} ms`)
}

await serveOnce(undefined)
// The task definitions' server types whose HEALTHCHECK probes something else than the LPO's /health.
if (!process.argv.includes("--quick")) {
  await serveOnce("REPORT_SERVER")
  await serveOnce("WEBHOOK_SERVER")
}

// The same image runs `tb sync`: without VALKEY_URL it must refuse with one line naming it (exit 2).
const sync = startContainer([...entrypoint, "sync"], containerEnv, "sync.log")
const syncExit = await within(sync.exited, 60_000)
sync.saveLog()
if (syncExit?.code !== 2 || !sync.output().includes("VALKEY_URL")) fail(`${[...entrypoint, "sync"].join(" ")} without VALKEY_URL: ${JSON.stringify(syncExit)} ${sync.output()}`)
say(`container: ${[...entrypoint, "sync"].join(" ")} (no VALKEY_URL) → exit 2: ${sync.output().trim().split("\n").at(-1)}`)

console.log(`OK in ${elapsed()}. Differences from a real image build: the base filesystem is this machine's, not ${dockerfile.stages.at(-1)!.base}; npm ${npmVersion} is this machine's; the npm cache mount is this machine's npm cache; this machine's registry CA settings are passed to npm.`)
