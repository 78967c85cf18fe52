/**
 * Private instances of the queue's stores for a test file: Debian's redis-server and
 * PostgreSQL, each in a scratch directory of its own, listening only on a Unix socket there,
 * stopped and removed when the scope closes. Never the system services. A missing program
 * fails the test (scripts/install-peers.sh installs them).
 */
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import type * as Redis from "effect/persistence/Redis"
import type * as Scope from "effect/Scope"
import type * as SqlClient from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as fs from "node:fs"
import * as Files from "../../interop/support/files.ts"
import { daemon, describeRun, ProcessError, run } from "../../interop/support/process.ts"

export interface RedisServer {
  readonly socket: string
  /** A new client of this server: what one process of the application would open. */
  readonly client: Layer.Layer<Redis.Redis | NodeRedis.NodeRedis, Redis.RedisError>
}

export const redis: Effect.Effect<RedisServer, ProcessError, Scope.Scope> = Effect.gen(function*() {
  const files = yield* Files.scratch
  const socket = files.path("redis.sock")
  const server = yield* daemon("redis-server", [
    "--port", "0", // no TCP listener at all
    "--unixsocket", socket,
    "--unixsocketperm", "700",
    "--dir", files.dir,
    "--save", "",
    "--appendonly", "no",
    "--daemonize", "no",
    "--loglevel", "warning"
  ])
  yield* server.listening(socket)
  return { socket, client: NodeRedis.layer({ socket: { path: socket, tls: false } }) }
})

export interface PostgresServer {
  readonly socket: string
  /** A new connection pool to this server's `postgres` database. */
  readonly client: Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, SqlError>
}

/** The newest PostgreSQL installed under /usr/lib/postgresql (Debian's layout). */
const postgresBin = (): string | undefined => {
  const root = "/usr/lib/postgresql"
  if (!fs.existsSync(root)) return undefined
  const versions = fs.readdirSync(root).filter((v) => fs.existsSync(`${root}/${v}/bin/initdb`))
  versions.sort((a, b) => Number(b) - Number(a))
  return versions[0] === undefined ? undefined : `${root}/${versions[0]}/bin`
}

/** A user's uid and gid from /etc/passwd. */
const lookupUser = (name: string): { readonly uid: number; readonly gid: number } | undefined => {
  for (const line of fs.readFileSync("/etc/passwd", "utf8").split("\n")) {
    const [user, , uid, gid] = line.split(":")
    if (user === name) return { uid: Number(uid), gid: Number(gid) }
  }
  return undefined
}

export const postgres: Effect.Effect<PostgresServer, ProcessError, Scope.Scope> = Effect.gen(function*() {
  const bin = postgresBin()
  if (bin === undefined) {
    return yield* new ProcessError({ message: "PostgreSQL is not installed (scripts/install-peers.sh)", stdout: "", stderr: "" })
  }
  const files = yield* Files.scratch
  // PostgreSQL refuses to run as root: as root, the cluster belongs to `postgres` (or `nobody`).
  const owner = process.getuid?.() === 0 ? lookupUser("postgres") ?? lookupUser("nobody") : undefined
  if (owner !== undefined) fs.chownSync(files.dir, owner.uid, owner.gid)
  const data = files.path("data")
  const init = yield* run(`${bin}/initdb`, [
    "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"
  ], { ...owner, timeout: "60 seconds" })
  if (init.code !== 0) return yield* new ProcessError({ message: `initdb failed: ${describeRun(init)}`, stdout: init.stdout, stderr: init.stderr })
  const server = yield* daemon(`${bin}/postgres`, [
    "-D", data,
    "-k", files.dir,
    "-c", "listen_addresses=",
    "-c", "unix_socket_permissions=0777",
    "-c", "fsync=off",
    "-c", "synchronous_commit=off",
    "-c", "full_page_writes=off",
    "-c", "max_connections=50"
  ], { ...owner, stopSignal: "SIGINT" }) // SIGINT: a fast shutdown, not waiting for clients
  const socket = `${files.dir}/.s.PGSQL.5432`
  yield* server.listening(socket)
  return {
    socket,
    client: PgClient.layer({ path: socket, username: "postgres", database: "postgres" })
  }
})
