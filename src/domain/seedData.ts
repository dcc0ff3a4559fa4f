import { protocolFor } from "./exchanges/index.ts"
import type { Exchange } from "./price.ts"

/**
 * Tier seed (spec "Tiers"). NULL limits = unlimited. Two internal tiers, never sold (`public` false):
 * `unmetered` (operations: no rate limit or quota) and `loadtest` (load tests: metered like a sold
 * tier, so every request pays the token bucket and the quota count, with limits no test reaches).
 */
export const TIER_SEED = [
  { tier: "demo", requests_per_second: 5, burst: 10, monthly_queries: 10_000, lrs_reports_per_month: 0, lrs_requires_addon: false, webhook_assets: 0, partner_ws: false, public: true, description: "Free trial" },
  { tier: "listener", requests_per_second: 50, burst: 100, monthly_queries: 5_000_000, lrs_reports_per_month: 100, lrs_requires_addon: true, webhook_assets: 0, partner_ws: false, public: true, description: "LRS with the add-on" },
  { tier: "associate", requests_per_second: 500, burst: 1000, monthly_queries: 50_000_000, lrs_reports_per_month: 1000, lrs_requires_addon: false, webhook_assets: 25, partner_ws: false, public: true, description: "" },
  { tier: "partner", requests_per_second: 5000, burst: 10_000, monthly_queries: null, lrs_reports_per_month: null, lrs_requires_addon: false, webhook_assets: 150, partner_ws: true, public: true, description: "Unlimited queries and reports" },
  { tier: "unmetered", requests_per_second: null, burst: null, monthly_queries: null, lrs_reports_per_month: null, lrs_requires_addon: false, webhook_assets: 0, partner_ws: false, public: false, description: "Internal: load tests and operations; no rate limit or quota" },
  { tier: "loadtest", requests_per_second: 1_000_000, burst: 1_000_000, monthly_queries: 1_000_000_000_000, lrs_reports_per_month: null, lrs_requires_addon: false, webhook_assets: 0, partner_ws: false, public: false, description: "Internal: load tests; metered like a sold tier, with limits no load test reaches" }
] as const

export const EXCHANGE_SEED: ReadonlyArray<{ exchange: Exchange; ws_url: string; rest_url: string; rest_budget_per_second: number; quote: string }> = [
  { exchange: "coinbase", ws_url: "wss://ws-feed.exchange.coinbase.com", rest_url: "https://api.exchange.coinbase.com", rest_budget_per_second: 3, quote: "USD" },
  { exchange: "gemini", ws_url: "wss://ws.gemini.com", rest_url: "https://api.gemini.com", rest_budget_per_second: 2, quote: "USD" },
  { exchange: "kraken", ws_url: "wss://ws.kraken.com/v2", rest_url: "https://api.kraken.com", rest_budget_per_second: 1, quote: "USD" },
  { exchange: "gateio", ws_url: "wss://api.gateio.ws/ws/v4/", rest_url: "https://api.gateio.ws/api/v4", rest_budget_per_second: 5, quote: "USDT" },
  { exchange: "cryptocom", ws_url: "wss://stream.crypto.com/exchange/v1/market", rest_url: "https://api.crypto.com/exchange/v1", rest_budget_per_second: 5, quote: "USD" },
  { exchange: "okx", ws_url: "wss://ws.okx.com:8443/ws/v5/public", rest_url: "https://www.okx.com", rest_budget_per_second: 5, quote: "USDT" }
]

/** Listed nearly everywhere. */
const MAJOR = "BTC ETH SOL XRP DOGE ADA AVAX LINK DOT LTC BCH UNI ATOM XLM ETC FIL AAVE NEAR ALGO SHIB".split(" ")
/** Widely listed, not on Gemini. */
const MID = ("MATIC POL ICP APT ARB OP SUI SEI TIA INJ IMX GRT MKR SNX CRV COMP LDO RNDR RENDER FET HBAR VET EOS XTZ " +
  "SAND MANA AXS APE CHZ ENJ BAT ZRX 1INCH SUSHI YFI BAL KSM FLOW MINA QNT EGLD KAVA ZEC DASH STX RUNE GALA BLUR PEPE " +
  "BONK WIF JUP PYTH ONDO ENS ANKR STORJ SKL AUDIO OCEAN").split(" ")
/** Long tail: the USDT venues. */
const TAIL = ("TRX TON BNB LEO OKB CRO KAS XMR THETA FTM NEO IOTA WAVES ZIL ONE CELO ICX QTUM ONT RVN SC DGB HOT " +
  "KDA ROSE GMX DYDX CFX AGIX WLD JASMY LUNC LUNA CKB ASTR GLMR MOVR KLAY XEC BTT WIN NFT SFP CAKE TWT BAKE ALPHA " +
  "SXP IOST ZEN LRC CELR COTI DENT ARPA CHR CTSI MASK ID EDU MAGIC HOOK HIGH ACH RDNT SSV AR AKT PENDLE JTO STRK MANTA ALT DYM PIXEL PORTAL AEVO ETHFI ENA TNSR ZK ZRO BEAMX NOT").split(" ")

export const ASSETS: ReadonlyArray<string> = [...new Set([...MAJOR, ...MID, ...TAIL])]

const CARRIERS: Record<Exchange, ReadonlyArray<string>> = {
  coinbase: [...MAJOR, ...MID],
  gemini: MAJOR,
  kraken: [...MAJOR, ...MID],
  gateio: ASSETS,
  cryptocom: [...MAJOR, ...MID, ...TAIL.slice(0, 30)],
  okx: ASSETS
}

/**
 * Stablecoin-quoted markets beside each venue's main quote, for the most widely listed assets
 * (spec: USDT and USDC markets are USD-equivalent; `quote=USDT|USDC` asks for them alone). Which
 * venue lists which quote is from shared/reference/exchange-feeds.md ("Symbols" of each venue),
 * which speaks of venues, not of each asset. A quote it marks UNCONFIRMED for a venue, or does not
 * name, is seeded with `enabled` false: in the table for an operator to switch on once the live
 * venue is checked, but never subscribed (an unknown product can fail a whole subscribe batch).
 */
const STABLECOIN_ASSETS = "BTC ETH SOL XRP DOGE ADA AVAX LINK DOT LTC".split(" ")
const STABLECOIN_QUOTES: Record<Exchange, ReadonlyArray<{ readonly quote: "USDT" | "USDC"; readonly confirmed: boolean }>> = {
  // 1.6: "USDT and USDC products also exist on Exchange (e.g. BTC-USDT, BTC-USDC)"; but 1.5:
  // USDC books are aliases of the USD ones ("Expect USDC books to be reported as USD"), so a
  // USDC subscription may never tick under its own name while the USD book already counts.
  coinbase: [{ quote: "USDT", confirmed: true }, { quote: "USDC", confirmed: false }],
  // 2.6: "USDT/USDC spot pairs: UNCONFIRMED".
  gemini: [{ quote: "USDT", confirmed: false }, { quote: "USDC", confirmed: false }],
  // 3.5: "Quotes: USD, EUR, USDT, USDC".
  kraken: [{ quote: "USDT", confirmed: true }, { quote: "USDC", confirmed: true }],
  // 4.5: USDT is its main quote; "USDC and USD spot books: UNCONFIRMED".
  gateio: [{ quote: "USDC", confirmed: false }],
  // 5.5: "USD and USDT quotes both common"; USDC is not named.
  cryptocom: [{ quote: "USDT", confirmed: true }, { quote: "USDC", confirmed: false }],
  // 6.5: USDT is its main quote; "BTC-USDT, BTC-USDC", "Global quotes are USDT/USDC".
  okx: [{ quote: "USDC", confirmed: true }]
}

export interface AssetMapSeedRow {
  readonly exchange: Exchange
  readonly asset: string
  readonly quote: string
  readonly symbol: string
  readonly usd_equivalent: boolean
  readonly enabled: boolean
}

const marketRow = (exchange: Exchange, asset: string, quote: string, enabled: boolean): AssetMapSeedRow => ({
  exchange,
  asset,
  quote,
  symbol: protocolFor(exchange).symbolFor(asset, quote),
  usd_equivalent: quote === "USDT" || quote === "USDC",
  enabled
})

export const ASSET_MAP_SEED: ReadonlyArray<AssetMapSeedRow> = EXCHANGE_SEED.flatMap(({ exchange, quote }) => [
  ...CARRIERS[exchange].map((asset) => marketRow(exchange, asset, quote, true)),
  ...STABLECOIN_QUOTES[exchange].flatMap((stable) =>
    STABLECOIN_ASSETS.filter((asset) => CARRIERS[exchange].includes(asset)).map((asset) => marketRow(exchange, asset, stable.quote, stable.confirmed))
  )
])
