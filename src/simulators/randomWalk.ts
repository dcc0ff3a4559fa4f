/**
 * Deterministic simulated prices: one geometric random walk per market (the "true" price),
 * seen by each exchange with its own small, seeded deviation. Same seed → same price sequences.
 */

/** mulberry32: a tiny seeded PRNG with uniform output in [0, 1). */
export const mulberry32 = (seed: number): (() => number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** FNV-1a, to derive independent PRNG streams from (seed, name). */
export const hashString = (s: string, seed = 0): number => {
  let h = (0x811c9dc5 ^ seed) >>> 0
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}

/** Standard normal sample (Box–Muller). */
export const gaussian = (random: () => number): number => {
  const u = 1 - random() // (0, 1]: log(0) would be -Infinity
  const v = random()
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v)
}

/** Plausible starting prices so simulated answers look like real markets. */
const STARTING_USD_PRICES: Readonly<Record<string, number>> = {
  BTC: 97_000,
  ETH: 3_500,
  SOL: 180,
  XRP: 2.3,
  DOGE: 0.35,
  ADA: 0.9,
  LTC: 100,
  DOT: 7,
  AVAX: 35,
  LINK: 20,
  BNB: 650,
  USD: 1,
  USDT: 1,
  USDC: 1,
  EUR: 1.08,
  GBP: 1.27
}

/** USD value of one unit, for assets without a table entry derived from the name (stable per name). */
const usdValueOf = (asset: string): number =>
  STARTING_USD_PRICES[asset] ?? 1 + (hashString(asset) % 100_000) / 100

export const startingPrice = (asset: string, quote: string): number => usdValueOf(asset) / usdValueOf(quote)

/** One geometric random walk: price_{n+1} = price_n · exp(σ·z). */
export interface RandomWalk {
  readonly current: () => number
  readonly step: () => number
}

export const makeRandomWalk = (random: () => number, start: number, volatilityPerStep: number): RandomWalk => {
  let price = start
  return {
    current: () => price,
    step: () => {
      price *= Math.exp(volatilityPerStep * gaussian(random))
      return price
    }
  }
}

/** What one exchange shows for one market at one moment. */
export interface MarketQuote {
  readonly last: number
  readonly bid: number
  readonly ask: number
  readonly bidSize: number
  readonly askSize: number
  readonly lastSize: number
  /** Taker side of the last trade. */
  readonly side: "buy" | "sell"
  readonly open24h: number
  readonly high24h: number
  readonly low24h: number
  /** 24 h volume in the base currency. */
  readonly volume24h: number
}

export interface PriceBookOptions {
  readonly seed: number
  /** σ of one step of the true price (default 0.0005 ≈ 5 bps). */
  readonly volatilityPerStep?: number
  /** The true price takes one step per this many ms of wall time (default 250). */
  readonly stepMs?: number
  /** Half the bid/ask spread in bps (default 1). */
  readonly halfSpreadBps?: number
  /** σ of each exchange's deviation from the true price in bps (default 2). */
  readonly exchangeNoiseBps?: number
  readonly now?: () => number
}

/**
 * True prices per market plus each venue's view of them. `pin` fixes one venue's price for one
 * market (e.g. to make it an outlier); `unpin` returns it to the walk.
 */
export interface PriceBook {
  readonly truePrice: (asset: string, quote: string) => number
  readonly quote: (venue: string, asset: string, quote: string) => MarketQuote
  readonly pin: (venue: string, asset: string, quote: string, price: number) => void
  readonly unpin: (venue: string, asset: string, quote: string) => void
}

/** At most this many catch-up steps per read, so a long-idle book never stalls a caller. */
const MAX_CATCH_UP_STEPS = 1_000

export const makePriceBook = (options: PriceBookOptions): PriceBook => {
  const now = options.now ?? Date.now
  const volatility = options.volatilityPerStep ?? 0.0005
  const stepMs = options.stepMs ?? 250
  const halfSpread = (options.halfSpreadBps ?? 1) / 10_000
  const noise = (options.exchangeNoiseBps ?? 2) / 10_000
  const startedAt = now()

  interface TrueMarket {
    readonly walk: RandomWalk
    readonly open: number
    high: number
    low: number
    stepsTaken: number
  }
  const markets = new Map<string, TrueMarket>()
  const venueRandom = new Map<string, () => number>()
  const pinned = new Map<string, number>()

  const marketKey = (asset: string, quote: string) => `${asset}/${quote}`

  const trueMarket = (asset: string, quote: string): TrueMarket => {
    const key = marketKey(asset, quote)
    let market = markets.get(key)
    if (market === undefined) {
      const start = startingPrice(asset, quote)
      market = {
        walk: makeRandomWalk(mulberry32(hashString(key, options.seed)), start, volatility),
        open: start,
        high: start,
        low: start,
        stepsTaken: 0
      }
      markets.set(key, market)
    }
    // Steps follow wall time, so every venue and the REST server read the same true price.
    const due = Math.floor((now() - startedAt) / stepMs)
    const steps = Math.min(due - market.stepsTaken, MAX_CATCH_UP_STEPS)
    for (let i = 0; i < steps; i++) {
      const p = market.walk.step()
      if (p > market.high) market.high = p
      if (p < market.low) market.low = p
    }
    market.stepsTaken = Math.max(market.stepsTaken, due)
    return market
  }

  const randomFor = (venue: string, asset: string, quote: string): (() => number) => {
    const key = `${venue}:${marketKey(asset, quote)}`
    let random = venueRandom.get(key)
    if (random === undefined) {
      random = mulberry32(hashString(key, options.seed))
      venueRandom.set(key, random)
    }
    return random
  }

  return {
    truePrice: (asset, quote) => trueMarket(asset, quote).walk.current(),
    quote: (venue, asset, quote) => {
      const market = trueMarket(asset, quote)
      const random = randomFor(venue, asset, quote)
      const pin = pinned.get(`${venue}:${marketKey(asset, quote)}`)
      const mid = pin ?? market.walk.current() * (1 + noise * gaussian(random))
      const bid = mid * (1 - halfSpread)
      const ask = mid * (1 + halfSpread)
      const buy = random() < 0.5
      return {
        last: buy ? ask : bid,
        bid,
        ask,
        bidSize: 0.01 + random() * 5,
        askSize: 0.01 + random() * 5,
        lastSize: 0.001 + random(),
        side: buy ? "buy" : "sell",
        open24h: market.open,
        high24h: Math.max(market.high, mid),
        low24h: Math.min(market.low, mid),
        volume24h: 1_000 + (hashString(marketKey(asset, quote), options.seed) % 50_000)
      }
    },
    pin: (venue, asset, quote, price) => {
      pinned.set(`${venue}:${marketKey(asset, quote)}`, price)
    },
    unpin: (venue, asset, quote) => {
      pinned.delete(`${venue}:${marketKey(asset, quote)}`)
    }
  }
}
