import { Config, Effect, Layer, Option, Schema } from "effect"
import { appConfig } from "../../config/AppConfig.ts"
import { decodeQueueMessage } from "../../domain/usageQueueMessage.ts"
import { DatabaseLive } from "../../layers/DatabaseLive.ts"
import { withModule } from "../../layers/Logging.ts"
import { MigrationsLive } from "../../layers/MigrationsLive.ts"
import { SqsLive } from "../../layers/SqsLive.ts"
import { checkSqsQueueUrl } from "../../layers/usage/UsageWriterSqs.ts"
import { malformedSetting } from "../../services/StartupError.ts"
import { BaseLive } from "../layers.ts"
import { metricsLayer } from "../metrics/layer.ts"
import { runPoller } from "./poller.ts"

const MAX_RECEIVERS = 64

/** The poller's own settings (environment); `--receivers` wins over QUEUED_WRITER_RECEIVERS. */
export const queuedWriterConfig = Config.all({
  receivers: Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: MAX_RECEIVERS })), "QUEUED_WRITER_RECEIVERS").pipe(
    Config.withDefault(4)
  ),
  // SQS takes 0 to 43200 s; 0 would hand a batch to the next receive at once.
  visibilityTimeoutSeconds: Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 43_200 })), "QUEUED_WRITER_VISIBILITY_TIMEOUT_SECONDS").pipe(
    Config.withDefault(30)
  )
})

/**
 * `tb queued-writer`: SQS_QUEUE_URL required (one line and exit 2 without it), the database
 * migrated, then the poller until SIGTERM. Logs go to stderr (the CLI provides LoggingLive).
 */
export const queuedWriterProgram = (receiversFlag: Option.Option<number>) =>
  Effect.gen(function*() {
    const config = yield* appConfig
    if (Option.isNone(config.sqsQueueUrl)) {
      return yield* malformedSetting("SQS_QUEUE_URL", "required by tb queued-writer (the usage-log queue's URL)")
    }
    const queueUrl = config.sqsQueueUrl.value
    yield* checkSqsQueueUrl(queueUrl)
    const settings = yield* queuedWriterConfig
    const receivers = Option.getOrElse(receiversFlag, () => settings.receivers)
    if (receivers < 1 || receivers > MAX_RECEIVERS) return yield* malformedSetting("--receivers", `expected 1 to ${MAX_RECEIVERS} receives in flight`)
    const layer = Layer.mergeAll(SqsLive(queueUrl), MigrationsLive.pipe(Layer.provideMerge(DatabaseLive)), metricsLayer({ queuedWriter: true })).pipe(
      Layer.provideMerge(BaseLive)
    )
    return yield* runPoller({ receivers, visibilityTimeoutSeconds: settings.visibilityTimeoutSeconds, decode: decodeQueueMessage }).pipe(
      Effect.provide(layer)
    )
  }).pipe(withModule("queued-writer"))
