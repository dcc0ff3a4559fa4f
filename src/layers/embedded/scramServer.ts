import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from "node:crypto"

/**
 * The server side of SCRAM-SHA-256 (RFC 5802 / 7677), PostgreSQL's password exchange: the
 * password never crosses the socket, and a client that does not know it learns nothing it could
 * replay. Channel binding (SCRAM-SHA-256-PLUS) needs TLS and is not offered; the user name inside
 * the exchange is ignored, as PostgreSQL does (the startup message names the user).
 */

/** PostgreSQL's default iteration count (`scram_iterations`). */
const ITERATIONS = 4096

/** What the server keeps of the password: enough to check a proof, not enough to make one. */
export interface ScramVerifier {
  readonly salt: Buffer
  readonly iterations: number
  readonly storedKey: Buffer
  readonly serverKey: Buffer
}

const hmac = (key: Buffer, data: string) => createHmac("sha256", key).update(data).digest()
const sha256 = (data: Buffer) => createHash("sha256").update(data).digest()

export const scramVerifier = (password: string): ScramVerifier => {
  const salt = randomBytes(16)
  const salted = pbkdf2Sync(password, salt, ITERATIONS, 32, "sha256")
  return { salt, iterations: ITERATIONS, storedKey: sha256(hmac(salted, "Client Key")), serverKey: hmac(salted, "Server Key") }
}

/** A step's answer: the text to send back, or why the exchange failed. */
export type ScramStep = { readonly ok: true; readonly reply: string } | { readonly ok: false; readonly error: string }

const fail = (error: string): ScramStep => ({ ok: false, error })

/** `k=v,k=v` attributes in order; undefined when one is not of that form. */
const attributes = (text: string): ReadonlyArray<readonly [string, string]> | undefined => {
  const parts: Array<readonly [string, string]> = []
  for (const part of text.split(",")) {
    if (part.length < 2 || part[1] !== "=") return undefined
    parts.push([part[0]!, part.slice(2)])
  }
  return parts
}

const PRINTABLE_NONCE = /^[\x21-\x2b\x2d-\x7e]+$/

/** One exchange with one client: `first` answers its client-first-message, `final` its client-final-message. */
export const scramExchange = (verifier: ScramVerifier) => {
  let state: { readonly gs2Header: string; readonly bare: string; readonly serverFirst: string; readonly nonce: string } | undefined
  let finished = false

  const first = (clientFirst: string): ScramStep => {
    if (state !== undefined || finished) return fail("unexpected SCRAM client-first-message")
    // gs2-header: channel-binding flag, optional authzid, then the bare message.
    const flagEnd = clientFirst.indexOf(",")
    const authzEnd = flagEnd === -1 ? -1 : clientFirst.indexOf(",", flagEnd + 1)
    if (authzEnd === -1) return fail("malformed SCRAM client-first-message")
    const flag = clientFirst.slice(0, flagEnd)
    // "y": the client could bind but believes we cannot, which is true; "p=…" asks for binding we do not offer.
    if (flag !== "n" && flag !== "y") return fail("SCRAM channel binding is not supported")
    const gs2Header = clientFirst.slice(0, authzEnd + 1)
    const bare = clientFirst.slice(authzEnd + 1)
    const parsed = attributes(bare)
    if (parsed === undefined || parsed[0]?.[0] !== "n" || parsed[1]?.[0] !== "r") return fail("malformed SCRAM client-first-message")
    const clientNonce = parsed[1][1]
    if (!PRINTABLE_NONCE.test(clientNonce)) return fail("malformed SCRAM client nonce")
    const nonce = clientNonce + randomBytes(18).toString("base64")
    const serverFirst = `r=${nonce},s=${verifier.salt.toString("base64")},i=${verifier.iterations}`
    state = { gs2Header, bare, serverFirst, nonce }
    return { ok: true, reply: serverFirst }
  }

  const final = (clientFinal: string): ScramStep => {
    if (state === undefined || finished) return fail("unexpected SCRAM client-final-message")
    finished = true
    const proofAt = clientFinal.lastIndexOf(",p=")
    const parsed = attributes(clientFinal)
    if (proofAt === -1 || parsed === undefined) return fail("malformed SCRAM client-final-message")
    const binding = parsed.find(([k]) => k === "c")?.[1]
    const nonce = parsed.find(([k]) => k === "r")?.[1]
    if (binding !== Buffer.from(state.gs2Header).toString("base64")) return fail("SCRAM channel binding does not match")
    if (nonce !== state.nonce) return fail("SCRAM nonce does not match")
    const proof = Buffer.from(clientFinal.slice(proofAt + 3), "base64")
    const authMessage = `${state.bare},${state.serverFirst},${clientFinal.slice(0, proofAt)}`
    const signature = hmac(verifier.storedKey, authMessage)
    if (proof.length !== signature.length) return fail("wrong password")
    const clientKey = Buffer.alloc(proof.length)
    for (let i = 0; i < proof.length; i++) clientKey[i] = proof[i]! ^ signature[i]!
    if (!timingSafeEqual(sha256(clientKey), verifier.storedKey)) return fail("wrong password")
    return { ok: true, reply: `v=${hmac(verifier.serverKey, authMessage).toString("base64")}` }
  }

  return {
    first,
    final,
    /** The client-first-message has been answered: the next message is the client-final-message. */
    get answered() {
      return state !== undefined
    }
  }
}
