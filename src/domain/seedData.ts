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

export const ASSET_MAP_SEED: ReadonlyArray<{ exchange: Exchange; asset: string; quote: string; symbol: string; usd_equivalent: boolean }> =
  EXCHANGE_SEED.flatMap(({ exchange, quote }) =>
    CARRIERS[exchange].map((asset) => ({
      exchange,
      asset,
      quote,
      symbol: protocolFor(exchange).symbolFor(asset, quote),
      usd_equivalent: quote === "USDT" || quote === "USDC"
    }))
  )
