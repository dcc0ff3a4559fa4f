#!/usr/bin/env node
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { ConfigProvider, Console, Effect, Layer, Logger, Option, Runtime } from "effect"
import { Argument, CliError, Command, Flag } from "effect/cli"
import { SqlClient } from "effect/sql"
import cluster from "node:cluster"
import { appConfig, packageVersion, SERVER_TYPES, type ServerType } from "../config/AppConfig.ts"
import { LoggingLive, runDetachedLog, withModule } from "../layers/Logging.ts"
import { migrateLocked } from "../layers/MigrationsLive.ts"
import { ObservabilityLive } from "../layers/ObservabilityLive.ts"
import { SqsQueueUrlCheck } from "../layers/usage/UsageWriterSqs.ts"
import { AdminTokenLive } from "../layers/AdminTokenLive.ts"
import { ApiKeys, isKeyRequestError, type ListedKey } from "../services/ApiKeys.ts"
import { KeysLive, StorageLive, StorageUnmigratedLive } from "./layers.ts"
import { invalidateOnLocalServer } from "./localServerInvalidate.ts"
import { notBuiltLine, serveLayer } from "./serve.ts"
import { queuedWriterProgram } from "./queuedWriter/program.ts"
import { syncProgram } from "./sync/program.ts"
import { stressCli } from "./stress.ts"
import { runDemo } from "./demo/program.ts"
import { runWorkers } from "./workers.ts"

const json = Flag.Boolean("json").pipe(Flag.withDefault(false), Flag.withDescription("print JSON"))

/**
 * `--mode` wins over SERVER_TYPE. Effect's default ConfigProvider copies process.env when config
 * is first read (LOG_LEVEL, before any command runs), so setting process.env here is never seen;
 * instead the serve program, and every layer it builds, reads SERVER_TYPE from the flag first.
 */
const serverTypeFrom = (mode: Option.Option<ServerType>) =>
  Option.match(mode, {
    onNone: () => Layer.empty,
    onSome: (m) => ConfigProvider.layerAdd(ConfigProvider.fromEnvRecord({ SERVER_TYPE: m }), { asPrimary: true })
  })

/**
 * `npm start` runs the server under npm (the start script `exec`s node, so npm is the parent and
 * forwards SIGTERM and SIGINT to it). If npm goes away without forwarding one (SIGKILL, a crash),
 * the server would run on, re-parented, with nothing left to stop it: it shuts down as on SIGTERM.
 * Only under an npm script: a server a shell started and left running (nohup, &) keeps running.
 */
const stopWhenNpmIsGone = () => {
  if (process.env["npm_lifecycle_event"] === undefined) return
  const parent = process.ppid
  const watch = setInterval(() => {
    if (process.ppid === parent) return
    clearInterval(watch)
    runDetachedLog(Effect.logWarning("the npm process that started this server is gone; shutting down").pipe(withModule("serve")))
    process.kill(process.pid, "SIGTERM")
  }, 1_000)
  watch.unref()
}

const serve = Command.make("serve", {
  mode: Flag.Literals("mode", SERVER_TYPES).pipe(Flag.optional, Flag.withDescription("overrides SERVER_TYPE (default ALL)"))
}, ({ mode }) =>
  Effect.gen(function*() {
    const config = yield* appConfig
    if (config.lpoWorkers > 1 && cluster.isPrimary && process.env["TB_WORKER"] === undefined) {
      // Workers are stopped (scope) before storage closes (layer): they flush through it.
      return yield* Effect.scoped(runWorkers).pipe(Effect.provide(Layer.mergeAll(AdminTokenLive, SqsQueueUrlCheck).pipe(Layer.provideMerge(StorageLive))))
    }
    const layer = serveLayer(config.serverType)
    if (layer === undefined) {
      // A mode not built yet ends start-up with one line saying so.
      return yield* Effect.sync(() => {
        console.error(notBuiltLine(config.serverType))
        process.exitCode = 2
      })
    }
    stopWhenNpmIsGone()
    return yield* Layer.launch(layer)
  }).pipe(Effect.provide(serverTypeFrom(mode)))).pipe(Command.withDescription("run the server (--mode or SERVER_TYPE picks the listeners)"))

const migrate = Command.make("migrate", {}, () =>
  Effect.gen(function*() {
    const result = yield* migrateLocked
    yield* Console.log(JSON.stringify(result))
  }).pipe(Effect.provide(StorageUnmigratedLive))).pipe(Command.withDescription("apply schema migrations and seed data (idempotent)"))

const keysCreate = Command.make("create", {
  tier: Flag.String("tier"),
  email: Flag.String("email").pipe(Flag.optional),
  lrs: Flag.Boolean("lrs").pipe(Flag.withDefault(false)),
  json
}, ({ tier, email, lrs, json }) =>
  Effect.gen(function*() {
    const keys = yield* ApiKeys
    const created = yield* keys.create({ tier, email: Option.getOrUndefined(email), lrs: lrs ? true : undefined })
    yield* Console.log(json
      ? JSON.stringify(created)
      : `key:    ${created.key}\nkey_id: ${created.key_id}\ntier:   ${created.tier}\n(the key is shown only now; store it safely)`)
  }).pipe(Effect.provide(KeysLive)))

/** `tb keys list`: a header row, then one row per key, columns as wide as their widest cell. */
const keysTable = (list: ReadonlyArray<ListedKey>): string => {
  const minute = (rfc3339: string) => `${rfc3339.slice(0, 10)} ${rfc3339.slice(11, 16)}`
  const rows = [
    ["KEY_ID", "PREFIX", "TIER", "STATUS", "LRS", "CREATED (UTC)", "EXPIRES (UTC)", "EMAIL"],
    ...list.map((k) => [
      k.key_id, `${k.prefix}…`, k.tier, k.status, k.lrs_enabled ? "yes" : "no",
      minute(k.created_at), k.expires_at === null ? "never" : minute(k.expires_at), k.email ?? ""
    ])
  ]
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)))
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join("  ").trimEnd()).join("\n")
}

const keysList = Command.make("list", { json }, ({ json }) =>
  Effect.gen(function*() {
    const keys = yield* ApiKeys
    const list = yield* keys.list
    yield* Console.log(json ? JSON.stringify(list) : keysTable(list))
  }).pipe(Effect.provide(KeysLive)))

const keysRevoke = Command.make("revoke", { id: Argument.String("id") }, ({ id }) =>
  Effect.gen(function*() {
    const keys = yield* ApiKeys
    yield* keys.revoke(id)
    yield* invalidateOnLocalServer(id)
    yield* Console.log(`revoked ${id}`)
  }).pipe(Effect.provide(KeysLive)))

const keys = Command.make("keys").pipe(
  Command.withSubcommands([keysCreate, keysList, keysRevoke]),
  Command.withDescription("create, list and revoke API keys")
)

const usageCount = Command.make("usage-count", { json }, ({ json }) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM usage_logs`
    const n = rows[0]?.n ?? 0
    yield* Console.log(json ? JSON.stringify({ rows: n }) : String(n))
  }).pipe(Effect.provide(StorageLive))).pipe(Command.withDescription("count usage_logs rows (operations, benchmarks)"))

const queuedWriter = Command.make("queued-writer", {
  receivers: Flag.Int("receivers").pipe(Flag.optional, Flag.withDescription("receives in flight (default QUEUED_WRITER_RECEIVERS or 4)"))
}, ({ receivers }) => queuedWriterProgram(receivers)).pipe(
  Command.withDescription("long-running SQS consumer: usage messages from SQS_QUEUE_URL into usage_logs (until SIGTERM)")
)

const sync = Command.make("sync", {
  full: Flag.Boolean("full").pipe(Flag.withDefault(false), Flag.withDescription("reload the whole window (sync_row_days), as FORCE_FULL_SYNC=true")),
  json,
  lagHours: Flag.Int("lag-hours").pipe(Flag.optional, Flag.withDescription("re-read this many hours before the last run's end, for rows inserted late (default 24)")),
  batchSize: Flag.Int("batch-size").pipe(Flag.optional, Flag.withDescription("rows per Valkey pipeline (default 2000)"))
}, (flags) => syncProgram(flags)).pipe(
  Command.withDescription("copy usage_logs from the database reader into Valkey (usage:<id> hashes, day indexes), prune, refresh API keys and app:config")
)

const stress = Command.make("stress", {
  args: Argument.String("args").pipe(Argument.variadic())
}).pipe(Command.withDescription("load client: tb stress [--http URL] [--udp HOST:PORT] [--key KEY] [--asset BTC] [--connections 64] [--duration 10s] [--json]"))

const demo = Command.make("demo", {
  url: Flag.String("url").pipe(Flag.optional, Flag.withDescription("the LPO's base URL (default http://127.0.0.1:LPO_HTTP_PORT)")),
  key: Flag.String("key").pipe(Flag.optional, Flag.withDescription("your API key (without one, the demo says how to get one)")),
  json
}, ({ url, key, json }) =>
  Effect.promise(() => runDemo({ url: Option.getOrUndefined(url), key: Option.getOrUndefined(key), json })).pipe(
    Effect.flatMap((code) => Effect.sync(() => void (process.exitCode = code)))
  )).pipe(Command.withDescription("walk-through for a new subscriber: key, price, prices, UDP, stream, report (docs/demo.md)"))

const tb = Command.make("tb").pipe(
  Command.withSubcommands([serve, migrate, keys, usageCount, queuedWriter, sync, stress, demo]),
  Command.withDescription("Trinity Beast price oracle")
)

/** "SchemaError(Expected …\n  at [\"LPO_HTTP_PORT\"])" → "configuration error: LPO_HTTP_PORT: Expected …" */
const configErrorLine = (message: string): string => {
  const variable = /at \["([^"]+)"/.exec(message)?.[1] ?? "unknown setting"
  const reason = message.replace(/^SchemaError\(/, "").split("\n")[0]?.trim() ?? message
  return `configuration error: ${variable}: ${reason}`
}

const argv = process.argv.slice(2)
// The load client parses its own flags (it runs outside Effect for speed).
if (argv[0] === "stress") {
  void stressCli(argv.slice(1)).then((code) => process.exit(code))
} else {
  const program = Effect.flatMap(packageVersion, (version) => Command.run(tb, { version })).pipe(
    // A command line the CLI cannot take (unknown flag, a value not among the choices, a missing
    // option): it has printed what is wrong; that is bad usage (2), not a failure (1).
    Effect.catchIf(CliError.isCliError, (e) =>
      Effect.sync(() => {
        // ShowHelp carries the parse errors it was shown for; none: --help was asked for.
        process.exitCode = e._tag === "ShowHelp" && e.errors.length === 0 ? 0 : 2
      })),
    // A bad setting ends start-up with one line naming the variable, never a half-started server.
    Effect.catchTag("ConfigError", (e) =>
      Effect.sync(() => {
        console.error(configErrorLine(e.message))
        process.exitCode = 2
      })),
    // A wrong request (unknown tier, bad e-mail, LRS on a tier without it) is bad usage (2).
    Effect.catchTag("ApiKeysError", (e) =>
      Effect.sync(() => {
        console.error(`error: ${e.message}`)
        process.exitCode = isKeyRequestError(e) ? 2 : 1
      })),
    // A secret that is malformed (a short ADMIN_TOKEN) is bad configuration (2); Secrets Manager out of reach is 1.
    Effect.catchTag("SecretsError", (e) =>
      Effect.sync(() => {
        console.error(`secrets error: ${e.message}`)
        process.exitCode = e.reason === "Malformed" ? 2 : 1
      })),
    // A sync step that failed (Valkey or the database, after start-up): one line, exit 1.
    Effect.catchTag("SyncError", (e) =>
      Effect.sync(() => {
        console.error(`sync failed (${e.reason}): ${e.message}`)
        process.exitCode = 1
      })),
    // Storage that is misconfigured (2) or out of reach (1): one line naming the variable.
    Effect.catchTag("StartupError", (e) =>
      Effect.sync(() => {
        console.error(e.message)
        process.exitCode = e.reason === "Malformed" ? 2 : 1
      })),
    // Logging first, so the OTLP logger (when configured) joins the JSON one instead of replacing it.
    // Without LoggingLive (a bad LOG_LEVEL), Effect's default logger still writes to stderr.
    Effect.provide(Layer.mergeAll(
      NodeServices.layer,
      ObservabilityLive.pipe(
        Layer.catch(() => Layer.empty),
        Layer.provideMerge(LoggingLive.pipe(Layer.catch(() => Layer.succeed(Logger.LogToStderr, true))))
      )
    ))
  )
  const timeout = Number(process.env["SHUTDOWN_TIMEOUT_MS"] ?? 10_000)
  process.once("SIGTERM", () => {
    // Last resort: a shutdown that hangs past SHUTDOWN_TIMEOUT_MS must still end the process.
    setTimeout(() => {
      console.error(JSON.stringify({ level: "ERROR", module: "serve", message: `shutdown exceeded SHUTDOWN_TIMEOUT_MS=${timeout}; exiting` }))
      process.exit(1)
    }, timeout + 1000).unref()
  })
  NodeRuntime.runMain(program, {
    // An interrupt (SIGTERM) is a clean stop, unless the program set its own exit code (tb sync: 1 when cut short).
    teardown: (exit, onExit) => Runtime.defaultTeardown(exit, (code) => onExit(code === 130 ? (typeof process.exitCode === "number" ? process.exitCode : 0) : code))
  })
}
