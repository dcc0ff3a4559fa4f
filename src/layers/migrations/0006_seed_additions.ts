import seed from "./0002_seed.ts"

/**
 * Seed rows added after 0002 (parameters, markets): the same idempotent seed run again, so a
 * database migrated before they existed gets them, and nothing an operator changed is overwritten.
 */
export default seed
