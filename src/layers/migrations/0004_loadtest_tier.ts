import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { TIER_SEED } from "../../domain/seedData.ts"
import { nonEmptyRows } from "../sqlRows.ts"

/** Tiers added to the seed after 0002 (the internal `loadtest`). Never overwrites an existing tier. */
export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`INSERT INTO rate_limit_template ${sql.insert(nonEmptyRows(TIER_SEED.map((t) => ({ ...t }))))} ON CONFLICT (tier) DO NOTHING`
})
