import { Config, Context, Effect, Layer, Option, Schema } from "effect"
import { hostname } from "node:os"
import { resolve } from "node:path"

/** The spec's server types: which listeners `tb serve` runs. `ALL` (the whole platform) is the default. */
export const SERVER_TYPES = ["APP_SERVER", "REPORT_SERVER", "APP_REPORT_SERVER", "WEBHOOK_SERVER", "ALL"] as const
export type ServerType = (typeof SERVER_TYPES)[number]

const optionalRedacted = (name: string) => Config.Redacted(name).pipe(Config.option)
const optionalString = (name: string) => Config.String(name).pipe(Config.option)

/** Every environment setting of the spec's "Configuration" table, with its embedded default. */
export const appConfig = Config.all({
  serverType: Config.Literals(SERVER_TYPES, "SERVER_TYPE").pipe(Config.withDefault("ALL" as const)),
  databaseUrl: optionalRedacted("DATABASE_URL"),
  databaseReaderUrl: optionalRedacted("DATABASE_READER_URL"),
  valkeyUrl: optionalRedacted("VALKEY_URL").pipe(
    Config.flatMap((v) => Option.isSome(v) ? Config.succeed(v) : optionalRedacted("CACHE_URL"))
  ),
  sqsQueueUrl: optionalString("SQS_QUEUE_URL"),
  feeds: Config.Literals(["live", "simulated"], "FEEDS").pipe(Config.withDefault("live" as const)),
  lpoHttpPort: Config.Port("LPO_HTTP_PORT").pipe(Config.withDefault(8080)),
  lpoUdpPort: Config.Port("LPO_UDP_PORT").pipe(Config.withDefault(2679)),
  lrsHttpPort: Config.Port("LRS_HTTP_PORT").pipe(Config.withDefault(9090)),
  lrsUdpPort: Config.Port("LRS_UDP_PORT").pipe(Config.withDefault(2680)),
  bindHost: Config.String("BIND_HOST").pipe(Config.withDefault("0.0.0.0")),
  dbSecretName: optionalString("DB_SECRET_NAME"),
  awsRegion: optionalString("AWS_REGION"),
  dataDir: Config.String("DATA_DIR").pipe(Config.withDefault("./data"), Config.map((d) => resolve(d))),
  nodeId: Config.String("NODE_ID").pipe(Config.withDefault(hostname())),
  region: Config.String("REGION").pipe(Config.withDefault("local")),
  shutdownTimeoutMs: Config.Int("SHUTDOWN_TIMEOUT_MS").pipe(Config.withDefault(10_000)),
  lpoWorkers: Config.Int("LPO_WORKERS").pipe(Config.withDefault(1)),
  // 0 = a port the OS picks (tests, several servers on one machine); the bound port is logged.
  metricsPort: Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65_535 })), "METRICS_PORT").pipe(Config.withDefault(9464)),
  cloudwatchNamespacePrefix: optionalString("CLOUDWATCH_NAMESPACE_PREFIX")
})

export type AppConfigShape = Config.Success<typeof appConfig>

export class AppConfig extends Context.Service<AppConfig, AppConfigShape>()("tb/AppConfig") {
  static readonly layer = Layer.effect(AppConfig, appConfig)
  static readonly layerFrom = (shape: AppConfigShape) => Layer.succeed(AppConfig, shape)
}

/** The package version, reported in every envelope. */
export const packageVersion: Effect.Effect<string> = Effect.promise(async () => {
  const { readFile } = await import("node:fs/promises")
  // dist/src/config → the package root; src/config under the test runner; a Lambda bundle keeps one beside it.
  const text = await readFile(new URL("../../../package.json", import.meta.url), "utf8")
    .catch(() => readFile(new URL("../../package.json", import.meta.url), "utf8"))
    .catch(() => readFile(new URL("./package.json", import.meta.url), "utf8"))
  const parsed: unknown = JSON.parse(text)
  return typeof parsed === "object" && parsed !== null && "version" in parsed && typeof parsed.version === "string"
    ? parsed.version
    : "0.0.0"
})
