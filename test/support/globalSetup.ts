import { ensureServices } from "./services.ts"

/** Integration tests use the machine's real PostgreSQL and Redis; start them if they are down. */
export default async function setup(): Promise<void> {
  await ensureServices()
}
