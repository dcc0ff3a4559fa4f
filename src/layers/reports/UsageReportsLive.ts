import { Effect, Layer, Option } from "effect"
import { AppConfig } from "../../config/AppConfig.ts"
import { UsageReportsDatabase } from "./UsageReportsDatabase.ts"
import { usageReportsMirrorLayer } from "./UsageReportsMirror.ts"

/**
 * Where /reports/usage reads rows: with VALKEY_URL the sync's mirror plus the reader for the rows
 * newer than its high-water mark (the database alone whenever the mirror cannot answer); without
 * (the embedded default) straight from the database.
 */
export const UsageReportsLive = Layer.unwrap(Effect.map(AppConfig, (config) =>
  Option.isNone(config.valkeyUrl) ? UsageReportsDatabase : usageReportsMirrorLayer(config.valkeyUrl.value)))
