import { connect, createServer, type Socket } from "node:net"

/**
 * A loopback relay to a real service (PostgreSQL, Valkey) that a test can cut and restore, to see
 * what a program does when its dependency goes away. Once cut it keeps its port and resets every
 * connection, so no other test's server can take the port meanwhile.
 */
export const tcpRelay = async (host: string, upstreamPort: number) => {
  let cut = false
  const open = new Set<Socket>()
  const relay = createServer((client) => {
    if (cut) return client.resetAndDestroy()
    const upstream = connect(upstreamPort, host)
    for (const [socket, other] of [[client, upstream], [upstream, client]] as const) {
      open.add(socket)
      socket.on("error", () => {})
      socket.on("close", () => {
        open.delete(socket)
        other.destroy()
      })
    }
    client.pipe(upstream).pipe(client)
  })
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve))
  const address = relay.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  return {
    port,
    /** Drop every open connection and refuse new ones. */
    cut: () => {
      cut = true
      for (const socket of open) socket.destroy()
    },
    restore: () => void (cut = false),
    close: () => new Promise<void>((resolve) => relay.close(() => resolve()))
  }
}
