import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { PARAM_NAMES, PARAM_PROFILES, PARAMS } from "../../domain/params.ts"
import { nonEmptyRows } from "../sqlRows.ts"
import { ASSET_MAP_SEED, EXCHANGE_SEED, TIER_SEED } from "../../domain/seedData.ts"

/** Seed data. ON CONFLICT DO NOTHING: re-running never overwrites what operators have changed. */
export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`INSERT INTO rate_limit_template ${sql.insert(nonEmptyRows(TIER_SEED.map((t) => ({ ...t }))))} ON CONFLICT (tier) DO NOTHING`
  yield* sql`INSERT INTO exchange_feeds ${
    sql.insert(nonEmptyRows(EXCHANGE_SEED.map(({ exchange, ws_url, rest_url, rest_budget_per_second }) => ({ exchange, ws_url, rest_url, rest_budget_per_second }))))
  } ON CONFLICT (exchange) DO NOTHING`
  for (let i = 0; i < ASSET_MAP_SEED.length; i += 500) {
    yield* sql`INSERT INTO exchange_asset_map ${sql.insert(nonEmptyRows(ASSET_MAP_SEED.slice(i, i + 500).map((r) => ({ ...r }))))}
      ON CONFLICT (exchange, asset, quote) DO NOTHING`
  }
  yield* sql`INSERT INTO application_parameters ${
    sql.insert(nonEmptyRows(PARAM_NAMES.map((name) => ({ name, value: PARAMS[name].default, value_type: PARAMS[name].type, description: PARAMS[name].description }))))
  } ON CONFLICT (name) DO NOTHING`
  const profileRows = Object.entries(PARAM_PROFILES).flatMap(([profile, values]) =>
    Object.entries(values).map(([name, value]) => ({ profile, name, value: String(value) }))
  )
  yield* sql`INSERT INTO parameter_profiles ${sql.insert(nonEmptyRows(profileRows))} ON CONFLICT (profile, name) DO NOTHING`
})
