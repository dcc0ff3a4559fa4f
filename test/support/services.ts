import { PgClient } from "@effect/sql-pg"
import { Redacted } from "effect"
import { execFileSync, execSync } from "node:child_process"
import { afterAll } from "vitest"
import { createConnection } from "node:net"

export const PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
export const REDIS_HOST = "127.0.0.1"
export const REDIS_PORT = 6379

const portOpen = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port })
    socket.once("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.once("error", () => resolve(false))
  })

const waitForPort = async (port: number, ms: number) => {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await portOpen(port)) return true
    await new Promise((r) => setTimeout(r, 200))
  }
  return false
}

/** The machine's PostgreSQL and Redis, started if they are down (the same commands as .ci/run). */
export const ensureServices = async (): Promise<void> => {
  if (!(await portOpen(5432))) {
    execSync("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start", { stdio: "inherit" })
    if (!(await waitForPort(5432, 20_000))) throw new Error("PostgreSQL did not start on 127.0.0.1:5432")
  }
  if (!(await portOpen(REDIS_PORT))) {
    execSync(`redis-server --daemonize yes --bind 127.0.0.1 --port ${REDIS_PORT} --save "" --appendonly no`, { stdio: "inherit" })
    if (!(await waitForPort(REDIS_PORT, 10_000))) throw new Error("Redis did not start on 127.0.0.1:6379")
  }
}

const psql = (sql: string) =>
  execFileSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], { encoding: "utf8" })

/** A fresh, empty database for one test file; returns its URL. */
export const freshDatabase = (name: string): string => {
  const db = `tb_test_${name.replace(/[^a-z0-9_]/gi, "_").toLowerCase()}`
  psql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`)
  psql(`CREATE DATABASE ${db}`)
  return `postgres://postgres@127.0.0.1:5432/${db}`
}

export const dropDatabase = (url: string): void => {
  const db = url.slice(url.lastIndexOf("/") + 1)
  psql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`)
}

/** Inside a describe: a fresh database for its tests, dropped after them, and a client Layer for it. */
export const freshPgLayer = (name: string, maxConnections: number) => {
  const url = freshDatabase(name)
  afterAll(() => dropDatabase(url))
  return PgClient.layer({ url: Redacted.make(url), maxConnections })
}

/** A Redis logical database for one test file, flushed first: `redis://127.0.0.1:6379/<n>`. */
export const freshRedis = (index: number): string => {
  execFileSync("redis-cli", ["-h", REDIS_HOST, "-p", String(REDIS_PORT), "-n", String(index), "FLUSHDB"])
  return `redis://${REDIS_HOST}:${REDIS_PORT}/${index}`
}

/** One SQL statement through psql (stops on the first error): its output, trimmed. */
export const psqlText = (url: string, sql: string): string =>
  execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], { encoding: "utf8" }).trim()

/** One SQL statement through psql: each row a line, its fields separated by one space. */
export const psqlLines = (url: string, sql: string): Array<string> =>
  execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAt", "-F", " ", "-c", sql], { encoding: "utf8" }).trim().split("\n").filter((l) => l !== "")
