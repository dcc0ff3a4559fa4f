/**
 * Wire samples copied from /work/shared/reference/exchange-feeds.md (section in each comment),
 * shared by the parser and fuzz tests. Not a test file itself.
 */
import type { Exchange } from "../src/domain/price.ts"
import type { MarketSymbol } from "../src/domain/exchanges/protocol.ts"

export interface ExchangeSamples {
  readonly exchange: Exchange
  /** Markets the samples' symbols belong to, keyed by exchange symbol in `marketMap`. */
  readonly markets: ReadonlyArray<MarketSymbol>
  /** Frames that carry at least one tick for `markets`. */
  readonly tickerFrames: ReadonlyArray<string>
  /** Acks, heartbeats, errors, pongs… */
  readonly otherFrames: ReadonlyArray<string>
  readonly restBodies: ReadonlyArray<{ readonly market: MarketSymbol; readonly body: string }>
}

export const marketMap = (markets: ReadonlyArray<MarketSymbol>): ReadonlyMap<string, MarketSymbol> =>
  new Map(markets.map((m) => [m.symbol, m]))

const market = (asset: string, quote: string, symbol: string): MarketSymbol => ({ asset, quote, symbol })

// §1.3, §1.2, §1.7
export const COINBASE = {
  ethUsd: market("ETH", "USD", "ETH-USD"),
  usdcUsd: market("USDC", "USD", "USDC-USD"),
  ticker:
    '{"type":"ticker","sequence":37475248783,"product_id":"ETH-USD","price":"1285.22","open_24h":"1310.79","volume_24h":"245532.79269678","low_24h":"1280.52","high_24h":"1313.8","volume_30d":"9788783.60117027","best_bid":"1285.04","best_bid_size":"0.46688654","best_ask":"1285.27","best_ask_size":"1.56637040","side":"buy","time":"2022-10-19T23:28:22.061769Z","trade_id":370843401,"last_size":"11.4396987"}',
  heartbeat:
    '{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD","time":"2014-11-07T08:19:28.464459Z"}',
  subscriptions: '{"type":"subscriptions","channels":[{"name":"ticker","product_ids":["ETH-USD","ETH-EUR","ETH-BTC"]}]}',
  error: '{"type":"error","message":"Failed to subscribe","reason":"ETH-XYZ is not a valid product"}',
  rest: '{"trade_id":843439,"price":"0.997999","size":"80.29769","time":"2020-01-28T02:13:33.012523Z","bid":"0.997094","ask":"0.998","volume":"1903188.03750000"}'
} as const

// §2.3, §2.2, §2.7
export const GEMINI = {
  btcUsd: market("BTC", "USD", "btcusd"),
  bookTicker: '{"u":1751505576085,"E":1751508438600117161,"s":"btcusd","b":"45000.50","B":"1.25000000","a":"45001.00","A":"0.75000000"}',
  ack: '{"id":"1","status":200,"result":null}',
  error: '{"id":"1","status":401,"error":{"code":-1002,"msg":"Authentication required"}}',
  rest: '{"bid":"977.59","ask":"977.35","last":"977.65","volume":{"BTC":"2210.505328803","USD":"2135477.463379586263","timestamp":1483018200000}}'
} as const

// §3.1–§3.6
export const KRAKEN = {
  algoUsd: market("ALGO", "USD", "ALGO/USD"),
  btcUsdLegacy: market("BTC", "USD", "XBT/USD"),
  status:
    '{"channel":"status","data":[{"api_version":"v2","connection_id":13834774380200032777,"system":"online","version":"2.0.0"}],"type":"update"}',
  ack: '{"method":"subscribe","req_id":42,"result":{"channel":"ticker","event_trigger":"trades","snapshot":true,"symbol":"BTC/USD"},"success":true,"time_in":"2024-05-15T11:20:43.013486Z","time_out":"2024-05-15T11:20:43.013545Z"}',
  ticker:
    '{"channel":"ticker","type":"snapshot","data":[{"symbol":"ALGO/USD","bid":0.10025,"bid_qty":740.0,"ask":0.10036,"ask_qty":1361.44813783,"last":0.10035,"volume":997038.98383185,"vwap":0.10148,"low":0.09979,"high":0.10285,"change":-0.00017,"change_pct":-0.17,"timestamp":"2023-09-25T09:04:31.742648Z"}]}',
  heartbeat: '{"channel":"heartbeat"}',
  pong: '{"method":"pong","req_id":101,"time_in":"2023-09-24T14:10:23.799685Z","time_out":"2023-09-24T14:10:23.799703Z"}',
  pingError: '{"error":"Unsupported field: \'params\' for the given msg type: ping","method":"ping","success":false}',
  rest: '{"error":[],"result":{"XXBTZUSD":{"a":["30300.10000","1","1.000"],"b":["30300.00000","1","1.000"],"c":["30303.20000","0.00067643"],"v":["4083.67001100","4412.73601799"],"p":["30706.77771","30689.13205"],"t":[34619,38907],"l":["29868.30000","29868.30000"],"h":["31631.00000","31631.00000"],"o":"30502.80000"}}}'
} as const

// §4.2–§4.6
export const GATE = {
  btcUsdt: market("BTC", "USDT", "BTC_USDT"),
  btc3lUsdt: market("BTC3L", "USDT", "BTC3L_USDT"),
  subscribe: '{"time":1606291803,"channel":"spot.tickers","event":"subscribe","payload":["BTC_USDT","ETH_USDT"]}',
  ack: '{"time":1611541000,"time_ms":1611541000001,"channel":"spot.tickers","event":"subscribe","error":null,"result":{"status":"success"}}',
  error:
    '{"time":1606292218,"time_ms":1606292218231,"channel":"spot.trades","event":"subscribe","error":{"code":2,"message":"unknown currency pair GIBBERISH_USD"},"result":null}',
  tickers:
    '{"time":1606291803,"channel":"spot.tickers","event":"update","result":{"currency_pair":"BTC_USDT","last":"19106.55","lowest_ask":"19108.71","highest_bid":"19106.55","change_percentage":"3.66","base_volume":"2811.3042155865","quote_volume":"53441606.52411221454674732293","high_24h":"19417.74","low_24h":"18434.21"}}',
  pong: '{"time":1545404023,"channel":"spot.pong","event":"","error":null,"result":null}',
  upgrade: '{"type":"upgrade","msg":"The connection will soon be closed for a service upgrade. Please reconnect."}',
  rest: '[{"currency_pair":"BTC3L_USDT","last":"2.46140352","lowest_ask":"2.477","highest_bid":"2.4606821","change_percentage":"-8.91","change_utc0":"-8.91","change_utc8":"-8.91","base_volume":"656614.0845820589","quote_volume":"1602221.66468375534639404191","high_24h":"2.7431","low_24h":"1.9863","etf_net_value":"2.46316141","etf_pre_net_value":"2.43201848","etf_pre_timestamp":1611244800,"etf_leverage":"2.2803019447281203"}]'
} as const

// §5.2–§5.6
export const CRYPTOCOM = {
  btcPerp: market("BTC", "USD", "BTCUSD-PERP"),
  subscribe: '{"id":1,"method":"subscribe","params":{"channels":["ticker.BTC_USD","ticker.ETH_USD"]},"nonce":1587523073344}',
  ticker:
    '{"id":-1,"method":"subscribe","code":0,"result":{"instrument_name":"BTCUSD-PERP","subscription":"ticker.BTCUSD-PERP","channel":"ticker","data":[{"h":"51790.00","l":"47895.50","a":"51174.500000","c":"0.03955106","b":"51170.000000","bs":"0.1000","k":"51180.000000","ks":"0.2000","i":"BTCUSD-PERP","v":"879.5024","vv":"26370000.12","oi":"12345.12","t":1613580710768}]}}',
  bookAck: '{"id":1,"method":"subscribe","code":0,"channel":"book.BTCUSD-PERP.50"}',
  error: '{"id":11,"method":"subscribe","code":40003,"channel":"book.NOPEUSD-PERP.50","message":"Unknown symbol"}',
  heartbeat: '{"id":1587523073344,"method":"public/heartbeat","code":0}',
  heartbeatReply: '{"id":1587523073344,"method":"public/respond-heartbeat"}',
  rest: '{"id":"-1","method":"public/get-tickers","code":"0","result":{"data":[{"h":"51790.00","l":"47895.50","a":"51174.500000","i":"BTCUSD-PERP","v":"879.5024","vv":"26370000.12","oi":"12345.12","c":"0.03955106","b":"51170.000000","k":"51180.000000","t":"1613580710768"}]}}'
} as const

// §6.2–§6.6
export const OKX = {
  btcUsdt: market("BTC", "USDT", "BTC-USDT"),
  ack: '{"id":"1512","event":"subscribe","arg":{"channel":"tickers","instId":"BTC-USDT"},"connId":"a4d3ae55"}',
  error: '{"id":"1512","event":"error","code":"60012","msg":"Invalid request: {\\"op\\": \\"subscribe\\"}","connId":"a4d3ae55"}',
  notice:
    '{"event":"notice","code":"64008","msg":"The connection will soon be closed for a service upgrade. Please reconnect.","connId":"a4d3ae55"}',
  ticker:
    '{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instType":"SPOT","instId":"BTC-USDT","last":"9999.99","lastSz":"0.1","askPx":"9999.99","askSz":"11","bidPx":"8888.88","bidSz":"5","open24h":"9000","high24h":"10000","low24h":"8888.88","volCcy24h":"2222","vol24h":"2222","sodUtc0":"2222","sodUtc8":"2222","ts":"1597026383085"}]}',
  rest: '{"code":"0","msg":"","data":[{"instType":"SPOT","instId":"BTC-USDT","last":"51240","lastSz":"0.49011124","askPx":"51240","askSz":"0.64278176","bidPx":"51239.9","bidSz":"1.68139044","open24h":"51695.6","high24h":"52080","low24h":"50936","volCcy24h":"539533972.680195094","vol24h":"10474.12353007","ts":"1708669925904","sodUtc0":"51290.1","sodUtc8":"51602.4"}]}'
} as const

export const ALL_SAMPLES: ReadonlyArray<ExchangeSamples> = [
  {
    exchange: "coinbase",
    markets: [COINBASE.ethUsd, COINBASE.usdcUsd],
    tickerFrames: [COINBASE.ticker],
    otherFrames: [COINBASE.heartbeat, COINBASE.subscriptions, COINBASE.error],
    restBodies: [{ market: COINBASE.usdcUsd, body: COINBASE.rest }]
  },
  {
    exchange: "gemini",
    markets: [GEMINI.btcUsd],
    tickerFrames: [GEMINI.bookTicker],
    otherFrames: [GEMINI.ack, GEMINI.error],
    restBodies: [{ market: GEMINI.btcUsd, body: GEMINI.rest }]
  },
  {
    exchange: "kraken",
    markets: [KRAKEN.algoUsd, KRAKEN.btcUsdLegacy],
    tickerFrames: [KRAKEN.ticker],
    otherFrames: [KRAKEN.status, KRAKEN.ack, KRAKEN.heartbeat, KRAKEN.pong, KRAKEN.pingError],
    restBodies: [{ market: KRAKEN.btcUsdLegacy, body: KRAKEN.rest }]
  },
  {
    exchange: "gateio",
    markets: [GATE.btcUsdt, GATE.btc3lUsdt],
    tickerFrames: [GATE.tickers],
    otherFrames: [GATE.ack, GATE.error, GATE.pong, GATE.upgrade],
    restBodies: [{ market: GATE.btc3lUsdt, body: GATE.rest }]
  },
  {
    exchange: "cryptocom",
    markets: [CRYPTOCOM.btcPerp],
    tickerFrames: [CRYPTOCOM.ticker],
    otherFrames: [CRYPTOCOM.bookAck, CRYPTOCOM.error, CRYPTOCOM.heartbeat],
    restBodies: [{ market: CRYPTOCOM.btcPerp, body: CRYPTOCOM.rest }]
  },
  {
    exchange: "okx",
    markets: [OKX.btcUsdt],
    tickerFrames: [OKX.ticker],
    otherFrames: [OKX.ack, OKX.error, OKX.notice, "pong"],
    restBodies: [{ market: OKX.btcUsdt, body: OKX.rest }]
  }
]
