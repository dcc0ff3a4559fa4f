import { Effect } from "effect"
import { Migrator } from "effect/sql"
import schema from "./0001_schema.ts"
import seed from "./0002_seed.ts"
import usageIndexes from "./0003_usage_indexes.ts"
import loadtestTier from "./0004_loadtest_tier.ts"
import usageSingleIndex from "./0005_usage_single_index.ts"
import seedAdditions from "./0006_seed_additions.ts"
import apiKeyUsageMonthly from "./0007_api_key_usage_monthly.ts"
import usageDailyRollup from "./0008_usage_daily_rollup.ts"
import seedSyncRowDays from "./0009_seed_sync_row_days.ts"
import webhooks from "./0010_webhooks.ts"
import receipts from "./0011_receipts.ts"
import { maintainUsagePartitions } from "./partitions.ts"

const runMigrator = Migrator.make({})

/** Schema and seed migrations, then today's usage partitions. Idempotent. */
export const migrate = Effect.gen(function*() {
  const applied = yield* runMigrator({
    loader: Migrator.fromRecord({
      "0001_schema": schema,
      "0002_seed": seed,
      "0003_usage_indexes": usageIndexes,
      "0004_loadtest_tier": loadtestTier,
      "0005_usage_single_index": usageSingleIndex,
      "0006_seed_additions": seedAdditions,
      "0007_api_key_usage_monthly": apiKeyUsageMonthly,
      "0008_usage_daily_rollup": usageDailyRollup,
      "0009_seed_sync_row_days": seedSyncRowDays,
      "0010_webhooks": webhooks,
      "0011_receipts": receipts
    }),
    table: "tb_migrations"
  })
  const partitions = yield* maintainUsagePartitions({ now: Date.now(), daysAhead: 7, retentionDays: 93 })
  return { applied, partitions }
})
