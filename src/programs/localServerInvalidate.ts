import { Effect, Option, Redacted } from "effect"
import { readFile } from "node:fs/promises"
import { join } from "node:path"
import { AppConfig } from "../config/AppConfig.ts"
import { liveListenerOn } from "../layers/http/listenerFile.ts"
import { withModule } from "../layers/Logging.ts"
import { Secrets } from "../services/Secrets.ts"

const REQUEST_TIMEOUT_MS = 3_000

/** The token a server generated for itself when ADMIN_TOKEN is not set (DATA_DIR/admin-token), if any. */
const generatedToken = (dataDir: string) =>
  Effect.promise(() => readFile(join(dataDir, "admin-token"), "utf8").then((text) => text.trim() || undefined, () => undefined))

/** fetch's failure reason: the socket error code (ECONNREFUSED: nothing listens), else the message. */
const causeCode = (error: unknown): string => {
  const cause = error instanceof Error ? error.cause : undefined
  if (typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string") return cause.code
  return error instanceof Error ? error.message : String(error)
}

/** Where this machine's server listens: its BIND_HOST, or loopback when it listens on every address. */
const loopbackBase = (bindHost: string, port: number) => {
  const host = bindHost === "0.0.0.0" || bindHost === "::" || bindHost === "" ? "127.0.0.1" : bindHost
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}`
}

/**
 * `tb keys revoke` without a shared cache (no VALKEY_URL, the embedded default): a running server
 * holds keys in memory, and the revoke's pub/sub message stays inside the CLI's own in-process
 * cache, so the server would see the revocation only at its next reload (key_cache_refresh_ms,
 * 30 s by default). There is no channel between the two processes then, so the CLI asks the
 * server on this machine directly: POST /admin/invalidate-key on LPO_HTTP_PORT (the same
 * variables as the server's), with ADMIN_TOKEN from Secrets or the token the server generated in
 * DATA_DIR/admin-token. The server reloads the key from the database at once.
 *
 * With VALKEY_URL set the pub/sub message reaches every node and this is not used. No server
 * listening is not an error (no process holds the key in memory); a server that refuses (wrong
 * token) or something else on that port is a warning saying when the key stops working anyway.
 * (LPO_WORKERS > 1 without Valkey: the request reaches one worker, which passes the invalidation
 * to the others through the primary, see workerBus.ts.) The request is sent only when
 * DATA_DIR/lpo-http.json names a live process on that port (listenerFile.ts), so the token never
 * goes to another program that took the port.
 */
export const invalidateOnLocalServer = (keyId: string) =>
  Effect.gen(function*() {
    const config = yield* AppConfig
    if (Option.isSome(config.valkeyUrl)) return
    // The token goes only to a live server of this data directory (DATA_DIR/lpo-http.json).
    if (!(yield* Effect.promise(() => liveListenerOn(config.dataDir, config.lpoHttpPort)))) {
      return yield* Effect.logDebug(`no server of ${config.dataDir} listens on port ${config.lpoHttpPort}; nothing to invalidate`)
    }
    const secrets = yield* Secrets
    const configured = yield* secrets.get("ADMIN_TOKEN").pipe(Effect.orElseSucceed(() => Option.none<Redacted.Redacted<string>>()))
    const token = Option.isSome(configured) ? Redacted.value(configured.value) : yield* generatedToken(config.dataDir)
    const url = `${loopbackBase(config.bindHost, config.lpoHttpPort)}/admin/invalidate-key`
    // Without a token the request is still sent: a server there answers 401, which is worth a warning.
    const answer = yield* Effect.promise(() =>
      fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", ...(token === undefined ? {} : { "x-admin-token": token }) },
        body: JSON.stringify({ key_id: keyId }),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS)
      }).then(
        async (response) => ({ status: response.status, detail: (await response.text()).slice(0, 200) }),
        (error: unknown) => ({ status: 0, detail: causeCode(error) })
      )
    )
    if (answer.status === 200) return yield* Effect.logDebug(`the server at ${url} reloaded key ${keyId}`)
    if (answer.detail === "ECONNREFUSED") return yield* Effect.logDebug(`no server at ${url}; nothing to invalidate`)
    const outcome = answer.status === 0 ? `could not reach ${url} (${answer.detail})` : `${url} answered ${answer.status}: ${answer.detail}`
    yield* Effect.logWarning(`${outcome}; a running server refuses the key at its next key reload (key_cache_refresh_ms)`)
  }).pipe(withModule("keys"))
