// The container's health check (Dockerfile HEALTHCHECK, and the healthCheck of each ECS task
// definition in deploy/ecs): exit 0 when the program this container runs answers, 1 when not.
// Plain JavaScript so the image runs it without a build. What it probes:
//   tb serve, SERVER_TYPE ALL / APP_SERVER / APP_REPORT_SERVER → LPO  GET /health        (200)
//   tb serve, SERVER_TYPE REPORT_SERVER                        → LRS  GET /openapi.json  (200; the LRS has no /health)
//   tb serve, SERVER_TYPE WEBHOOK_SERVER; tb queued-writer     → GET /metrics on METRICS_PORT (200; no other listener)
//   any other command (sync, migrate, keys): nothing to probe  → 0
// The command and `--mode` come from the container's main process (/proc/1/cmdline), or from
// this script's own arguments (`node scripts/healthcheck.mjs serve --mode REPORT_SERVER`).
import { readFileSync } from "node:fs"

const TIMEOUT_MS = 4_000

/** The `tb` arguments of the container's main process, when it runs the CLI. */
const mainProcessArgs = () => {
  try {
    const argv = readFileSync("/proc/1/cmdline", "utf8").split("\0").filter((a) => a !== "")
    const cli = argv.findIndex((a) => a.endsWith("cli.js") || a.endsWith("/tb") || a === "tb")
    return cli === -1 ? undefined : argv.slice(cli + 1)
  } catch {
    return undefined
  }
}

const args = process.argv.length > 2 ? process.argv.slice(2) : (mainProcessArgs() ?? ["serve"])
const command = args[0] ?? "serve"
const modeFlag = args.findIndex((a) => a === "--mode" || a.startsWith("--mode="))
const mode = modeFlag === -1
  ? (process.env["SERVER_TYPE"] ?? "ALL")
  : (args[modeFlag].includes("=") ? args[modeFlag].slice("--mode=".length) : (args[modeFlag + 1] ?? ""))

const bind = process.env["BIND_HOST"]
const host = bind === undefined || bind === "" || bind === "0.0.0.0" || bind === "::" ? "127.0.0.1" : bind
const port = (name, fallback) => process.env[name] ?? String(fallback)
const url = (portName, fallback, path) => `http://${host.includes(":") ? `[${host}]` : host}:${port(portName, fallback)}${path}`

const target = (() => {
  if (command === "queued-writer") return url("METRICS_PORT", 9464, "/metrics")
  if (command !== "serve") return undefined
  switch (mode) {
    case "ALL":
    case "APP_SERVER":
    case "APP_REPORT_SERVER":
      return url("LPO_HTTP_PORT", 8080, "/health")
    case "REPORT_SERVER":
      return url("LRS_HTTP_PORT", 9090, "/openapi.json")
    case "WEBHOOK_SERVER":
      return url("METRICS_PORT", 9464, "/metrics")
    default:
      return "unknown"
  }
})()

if (target === undefined) {
  console.log(`healthcheck: tb ${command} has no listener to probe`)
  process.exit(0)
}
if (target === "unknown") {
  console.log(`healthcheck: unknown server type ${JSON.stringify(mode)}`)
  process.exit(1)
}
try {
  const response = await fetch(target, { signal: AbortSignal.timeout(TIMEOUT_MS) })
  await response.arrayBuffer()
  console.log(`healthcheck: ${target} → ${response.status}`)
  process.exit(response.status === 200 ? 0 : 1)
} catch (e) {
  console.log(`healthcheck: ${target} → ${e instanceof Error ? e.message : String(e)}`)
  process.exit(1)
}
