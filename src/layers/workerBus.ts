import cluster from "node:cluster"

/**
 * Pub/sub between the processes of one node run with LPO_WORKERS > 1 and no Valkey: a worker's
 * publish goes to the primary, which sends it to every worker (the publisher included), so a key
 * invalidation or a parameter change made on one worker reaches them all at once.
 */
interface BusMessage {
  readonly tbBus: { readonly channel: string; readonly message: string }
}

const isBusMessage = (m: unknown): m is BusMessage =>
  typeof m === "object" && m !== null && "tbBus" in m && typeof m.tbBus === "object" && m.tbBus !== null &&
  "channel" in m.tbBus && typeof m.tbBus.channel === "string" && "message" in m.tbBus && typeof m.tbBus.message === "string"

export interface WorkerBus {
  readonly publish: (channel: string, message: string) => void
  /** Every message published on any worker of this node, this one's included. */
  readonly onMessage: (deliver: (channel: string, message: string) => void) => void
}

/** The bus when this process is a cluster worker, else undefined (a single process keeps its pub/sub to itself). */
export const workerBus = (): WorkerBus | undefined => {
  const send = process.send?.bind(process)
  if (!cluster.isWorker || send === undefined) return undefined
  return {
    publish: (channel, message) => void send({ tbBus: { channel, message } } satisfies BusMessage),
    onMessage: (deliver) =>
      void process.on("message", (m: unknown) => {
        if (isBusMessage(m)) deliver(m.tbBus.channel, m.tbBus.message)
      })
  }
}

/** In the primary: relay every worker's bus message to all workers. */
export const relayWorkerBus = (): void => {
  cluster.on("message", (_from, m: unknown) => {
    if (!isBusMessage(m)) return
    for (const worker of Object.values(cluster.workers ?? {})) if (worker?.isConnected()) worker.send(m)
  })
}
