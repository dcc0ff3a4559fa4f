/**
 * Where `tb demo` sends its requests: the same port variables as the server (LPO_HTTP_PORT,
 * LPO_UDP_PORT, LRS_HTTP_PORT, LRS_UDP_PORT, with the server's defaults) on 127.0.0.1, or the
 * host of `--url`, which replaces the LPO's base URL. The report server and the UDP ports are
 * taken on the same host as the LPO.
 */

export interface DemoTargets {
  /** LPO base URL, no trailing slash: `http://127.0.0.1:8080`. */
  readonly lpo: string
  /** LRS base URL on the same host: `http://127.0.0.1:9090`. */
  readonly lrs: string
  /** Host for datagrams (an IPv6 literal without brackets). */
  readonly udpHost: string
  readonly lpoUdpPort: number
  readonly lrsUdpPort: number
  /** Whether the LPO URL was given with --url (else: from LPO_HTTP_PORT). */
  readonly urlGiven: boolean
}

const DEFAULT_PORTS = { LPO_HTTP_PORT: 8080, LPO_UDP_PORT: 2679, LRS_HTTP_PORT: 9090, LRS_UDP_PORT: 2680 } as const
type PortVariable = keyof typeof DEFAULT_PORTS

/** A port variable's value, or the line that names what is wrong with it. */
const portFrom = (env: Readonly<Record<string, string | undefined>>, name: PortVariable): number | string => {
  const text = env[name]
  if (text === undefined || text.trim() === "") return DEFAULT_PORTS[name]
  const port = Number(text)
  return Number.isInteger(port) && port > 0 && port < 65_536 ? port : `configuration error: ${name}: expected a port (1-65535), got "${text}"`
}

/** The targets, or one line saying which setting is wrong (bad usage or configuration: exit 2). */
export const demoTargets = (env: Readonly<Record<string, string | undefined>>, url: string | undefined): DemoTargets | string => {
  const ports: Partial<Record<PortVariable, number>> = {}
  for (const name of Object.keys(DEFAULT_PORTS) as ReadonlyArray<PortVariable>) {
    const port = portFrom(env, name)
    if (typeof port === "string") return port
    ports[name] = port
  }
  let base: URL
  try {
    base = new URL(url ?? `http://127.0.0.1:${ports.LPO_HTTP_PORT}`)
  } catch {
    return `--url: expected an http:// or https:// URL such as http://127.0.0.1:8080, got "${url}"`
  }
  if (base.protocol !== "http:" && base.protocol !== "https:") {
    return `--url: expected an http:// or https:// URL such as http://127.0.0.1:8080, got "${url}"`
  }
  const lpo = `${base.origin}${base.pathname.replace(/\/+$/u, "")}`
  const lrs = new URL(base.origin)
  lrs.port = String(ports.LRS_HTTP_PORT)
  const host = base.hostname.replace(/^\[(.*)\]$/u, "$1")
  return {
    lpo,
    lrs: lrs.origin,
    // udp4 sockets cannot reach "localhost" when it resolves to ::1 first.
    udpHost: host === "localhost" ? "127.0.0.1" : host,
    lpoUdpPort: ports.LPO_UDP_PORT!,
    lrsUdpPort: ports.LRS_UDP_PORT!,
    urlGiven: url !== undefined
  }
}
