import fc from "fast-check"

/**
 * CI runs every property test with one fixed seed, so a CI result can be reproduced exactly.
 * Local runs keep fresh random seeds, which is where new counterexamples are found (each one
 * found so far became a fix and a regression test). Override with FC_SEED=<n>.
 */
const seed = process.env["FC_SEED"] ?? (process.env["CI"] === "true" ? "20261124" : undefined)
if (seed !== undefined) fc.configureGlobal({ seed: Number(seed) })
