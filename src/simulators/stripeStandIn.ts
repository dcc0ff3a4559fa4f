import { createHmac, randomBytes } from "node:crypto"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { closeServer, listenLoopback, readBody } from "./awsJsonProtocol.ts"

/**
 * A loopback stand-in for the part of the Stripe API the receipt processor uses, speaking
 * Stripe's REST shapes so the real client code is exercised:
 *
 * - `GET /v1/checkout/sessions/:id` (with `expand[]=line_items` or `expand[0]=line_items` the `line_items` list is
 *   included, as Stripe does; without it the field is absent).
 * - `POST /v1/checkout/sessions`, form-encoded as Stripe's API is (`mode`, `customer_email`,
 *   `metadata[k]`, `line_items[i][price]`, `line_items[i][quantity]`); the stand-in extension
 *   `payment_status` creates a session already paid (the stand-in has no payment page).
 * - `POST /_pay/:id` (stand-in only): marks a session `complete` / `paid`, as a finished
 *   checkout would.
 * - Errors as Stripe's error objects: `{"error":{"type","code","message","param"}}`, 401 without
 *   a `Bearer sk_…` key, 404 `resource_missing` for an unknown session.
 *
 * Prices are fixed: `price_listener`, `price_associate`, `price_partner` (metadata `tier`),
 * `price_lrs_addon` and `price_donation`. `signStripePayload` signs webhook bodies as Stripe does.
 */

export interface StripePrice {
  readonly id: string
  readonly object: "price"
  readonly unit_amount: number
  readonly currency: string
  readonly metadata: Record<string, string>
}

export interface StripeLineItem {
  readonly id: string
  readonly object: "item"
  readonly quantity: number
  readonly amount_total: number
  readonly currency: string
  readonly description: string
  readonly price: StripePrice
}

export interface StripeCheckoutSession {
  readonly id: string
  readonly object: "checkout.session"
  readonly mode: "payment" | "subscription" | "setup"
  status: "open" | "complete" | "expired"
  payment_status: "paid" | "unpaid" | "no_payment_required"
  readonly amount_total: number
  readonly currency: string
  readonly customer_email: string | null
  readonly customer_details: { readonly email: string | null } | null
  readonly metadata: Record<string, string>
  readonly created: number
  readonly livemode: false
  readonly lineItems: ReadonlyArray<StripeLineItem>
}

const price = (id: string, unit_amount: number, metadata: Record<string, string>): StripePrice => ({
  id, object: "price", unit_amount, currency: "usd", metadata
})

export const STAND_IN_PRICES: Record<string, StripePrice> = {
  price_listener: price("price_listener", 900, { tier: "listener" }),
  price_associate: price("price_associate", 4900, { tier: "associate" }),
  price_partner: price("price_partner", 29900, { tier: "partner" }),
  price_lrs_addon: price("price_lrs_addon", 500, { addon: "lrs" }),
  price_donation: price("price_donation", 1000, {})
}

export interface NewSession {
  readonly mode?: "payment" | "subscription"
  readonly customerEmail?: string
  readonly metadata?: Record<string, string>
  readonly prices?: ReadonlyArray<string>
  readonly paymentStatus?: "paid" | "unpaid" | "no_payment_required"
}

export interface StripeStandIn {
  /** Origin to use as STRIPE_API_BASE, e.g. http://127.0.0.1:43121 */
  readonly url: string
  readonly createSession: (session: NewSession) => StripeCheckoutSession
  readonly pay: (id: string) => void
  readonly session: (id: string) => StripeCheckoutSession | undefined
  /** Every session retrieval (path and query), for tests counting API calls. */
  readonly retrievals: Array<string>
  readonly close: () => Promise<void>
}

/** The wire form of a session: line items only when expanded, as the real API answers. */
export const sessionJson = (session: StripeCheckoutSession, expandLineItems: boolean): Record<string, unknown> => {
  const { lineItems, ...rest } = session
  return expandLineItems
    ? { ...rest, line_items: { object: "list", data: lineItems, has_more: false, url: `/v1/checkout/sessions/${session.id}/line_items` } }
    : { ...rest }
}

const stripeError = (res: ServerResponse, status: number, error: Record<string, string>): void => {
  const text = JSON.stringify({ error })
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), "request-id": `req_${randomBytes(7).toString("hex")}` })
  res.end(text)
}

const replyObject = (res: ServerResponse, body: unknown): void => {
  const text = JSON.stringify(body)
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text), "request-id": `req_${randomBytes(7).toString("hex")}` })
  res.end(text)
}

/** `line_items[0][price]=x` style form fields into a session request. */
const newSessionFromForm = (form: URLSearchParams): NewSession => {
  const metadata: Record<string, string> = {}
  const prices: Array<string> = []
  for (const [name, value] of form) {
    const meta = /^metadata\[([^\]]+)\]$/.exec(name)
    if (meta !== null && meta[1] !== undefined) metadata[meta[1]] = value
    if (/^line_items\[\d+\]\[price\]$/.test(name)) prices.push(value)
  }
  const mode = form.get("mode")
  const paymentStatus = form.get("payment_status")
  const email = form.get("customer_email")
  return {
    ...(mode === "subscription" || mode === "payment" ? { mode } : {}),
    ...(email !== null ? { customerEmail: email } : {}),
    ...(paymentStatus === "paid" || paymentStatus === "unpaid" || paymentStatus === "no_payment_required" ? { paymentStatus } : {}),
    metadata,
    prices
  }
}

export const startStripeStandIn = async (options: { readonly port?: number } = {}): Promise<StripeStandIn> => {
  const sessions = new Map<string, StripeCheckoutSession>()
  const retrievals: Array<string> = []

  const createSession = (input: NewSession): StripeCheckoutSession => {
    const id = `cs_test_${randomBytes(12).toString("hex")}`
    const lineItems = (input.prices ?? []).map((priceId, i): StripeLineItem => {
      const p = STAND_IN_PRICES[priceId] ?? price(priceId, 100, {})
      return { id: `li_${i}_${id.slice(8, 20)}`, object: "item", quantity: 1, amount_total: p.unit_amount, currency: p.currency, description: priceId, price: p }
    })
    const paymentStatus = input.paymentStatus ?? "unpaid"
    const session: StripeCheckoutSession = {
      id,
      object: "checkout.session",
      mode: input.mode ?? "payment",
      status: paymentStatus === "unpaid" ? "open" : "complete",
      payment_status: paymentStatus,
      amount_total: lineItems.reduce((sum, li) => sum + li.amount_total, 0),
      currency: "usd",
      customer_email: input.customerEmail ?? null,
      customer_details: input.customerEmail === undefined ? null : { email: input.customerEmail },
      metadata: { ...input.metadata },
      created: Math.floor(Date.now() / 1000),
      livemode: false,
      lineItems
    }
    sessions.set(id, session)
    return session
  }

  const pay = (id: string): void => {
    const session = sessions.get(id)
    if (session === undefined) return
    session.status = "complete"
    session.payment_status = "paid"
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? "/", "http://stand-in")
    const body = await readBody(req)
    const payMatch = /^\/_pay\/([^/]+)$/.exec(url.pathname)
    if (req.method === "POST" && payMatch !== null && payMatch[1] !== undefined) {
      const session = sessions.get(payMatch[1])
      if (session === undefined) return stripeError(res, 404, { type: "invalid_request_error", code: "resource_missing", message: `No such checkout.session: '${payMatch[1]}'`, param: "id" })
      pay(session.id)
      return replyObject(res, sessionJson(session, false))
    }
    const auth = req.headers.authorization ?? ""
    if (!/^Bearer sk_(test|live)_\S+$/.test(auth)) {
      return stripeError(res, 401, { type: "invalid_request_error", message: "You did not provide a valid API key. Provide it as 'Authorization: Bearer sk_…'." })
    }
    if (req.method === "POST" && url.pathname === "/v1/checkout/sessions") {
      if (!(req.headers["content-type"] ?? "").startsWith("application/x-www-form-urlencoded")) {
        return stripeError(res, 400, { type: "invalid_request_error", message: "Invalid request: the body must be application/x-www-form-urlencoded." })
      }
      return replyObject(res, sessionJson(createSession(newSessionFromForm(new URLSearchParams(body))), false))
    }
    const getMatch = /^\/v1\/checkout\/sessions\/([^/]+)$/.exec(url.pathname)
    if (req.method === "GET" && getMatch !== null && getMatch[1] !== undefined) {
      retrievals.push(`${url.pathname}${url.search}`)
      const id = decodeURIComponent(getMatch[1])
      const session = sessions.get(id)
      if (session === undefined) {
        return stripeError(res, 404, { type: "invalid_request_error", code: "resource_missing", message: `No such checkout.session: '${id}'`, param: "id" })
      }
      // Stripe reads `expand[]=x` and the indexed `expand[0]=x` the official client sends alike.
      const expand = [...url.searchParams].filter(([name]) => /^expand\[\d*\]$/.test(name)).map(([, value]) => value)
      return replyObject(res, sessionJson(session, expand.includes("line_items")))
    }
    return stripeError(res, 404, { type: "invalid_request_error", message: `Unrecognized request URL (${req.method ?? "GET"}: ${url.pathname}).` })
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => stripeError(res, 500, { type: "api_error", message: "stand-in failure" }))
  })
  const url = await listenLoopback(server, options.port ?? 0)
  return { url, createSession, pay, session: (id) => sessions.get(id), retrievals, close: closeServer(server) }
}

/** `Stripe-Signature` value for `payload`: `t=<unix>,v1=<hex HMAC-SHA256 of "t.payload">`, one v1 per secret (a secret roll). */
export const signStripePayload = (
  payload: string,
  secrets: string | ReadonlyArray<string>,
  timestampSeconds: number = Math.floor(Date.now() / 1000)
): string => {
  const list = typeof secrets === "string" ? [secrets] : secrets
  const v1 = list.map((secret) => `v1=${createHmac("sha256", secret).update(`${timestampSeconds}.${payload}`, "utf8").digest("hex")}`)
  return [`t=${timestampSeconds}`, ...v1].join(",")
}

/** A Stripe event (`evt_…`) carrying a Checkout Session, as webhooks deliver it (no line items: Stripe never expands them in events). */
export const checkoutEvent = (
  type: "checkout.session.completed" | "checkout.session.async_payment_succeeded" | "checkout.session.async_payment_failed" | string,
  session: StripeCheckoutSession,
  eventId: string = `evt_test_${randomBytes(12).toString("hex")}`
): string =>
  JSON.stringify({
    id: eventId,
    object: "event",
    api_version: "2025-09-30.clover",
    created: Math.floor(Date.now() / 1000),
    livemode: false,
    pending_webhooks: 1,
    type,
    data: { object: sessionJson(session, false) }
  })
