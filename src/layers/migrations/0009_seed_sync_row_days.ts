import seed from "./0002_seed.ts"

/**
 * The idempotent seed run once more for the parameter `sync_row_days` (tb sync), added after 0006:
 * a database migrated before it gets its row, so `/admin/params` can change it there.
 */
export default seed
