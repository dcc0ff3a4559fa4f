/** What /ready reports, and why a node is not ready yet, said so an operator knows what to do. */
export interface ProbeData {
  readonly feeds: { readonly mode: string; readonly connected: number; readonly total: number; readonly freshest_age_ms: number | null }
  readonly prices: { readonly assets: number; readonly fresh_assets: number; readonly warm: boolean }
  readonly storage: { readonly database: boolean; readonly cache: boolean }
  readonly draining: boolean
}

/** Undefined when the node is ready; otherwise one sentence: what is wrong and what to do. */
export const readinessProblem = (p: ProbeData): string | undefined => {
  if (p.draining) return "shutting down: no longer taking traffic"
  if (!p.storage.database) return "the database does not answer: check DATABASE_URL and that the database is running"
  if (p.prices.warm) return undefined
  if (p.feeds.mode === "live" && p.feeds.total > 0 && p.feeds.connected === 0) {
    return "no exchange feed is connected: live feeds need internet access to the exchanges; offline, start with FEEDS=simulated"
  }
  return `waiting for fresh prices: ${p.prices.fresh_assets} of ${p.prices.assets} assets fresh, ${p.feeds.connected} of ${p.feeds.total} feeds connected`
}
