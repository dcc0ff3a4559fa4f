/** Every exchange's protocol, keyed by exchange: the feed engine's single entry point. */
import type { Exchange } from "../price.ts"
import { coinbaseProtocol } from "./coinbase.ts"
import { cryptocomProtocol } from "./cryptocom.ts"
import { gateioProtocol } from "./gateio.ts"
import { geminiProtocol } from "./gemini.ts"
import { krakenProtocol } from "./kraken.ts"
import { okxProtocol } from "./okx.ts"
import type { ExchangeProtocol } from "./protocol.ts"

export const PROTOCOLS: { readonly [E in Exchange]: ExchangeProtocol } = {
  coinbase: coinbaseProtocol,
  gemini: geminiProtocol,
  kraken: krakenProtocol,
  gateio: gateioProtocol,
  cryptocom: cryptocomProtocol,
  okx: okxProtocol
}

export const protocolFor = (exchange: Exchange): ExchangeProtocol => PROTOCOLS[exchange]
