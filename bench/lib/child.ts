/**
 * The child side of the benchmark IPC protocol: say `ready`, answer each request with a
 * message of the same type (or `error`), exit on `exit` or when the parent goes away.
 * Every child also answers `gc`; every answer carries the child's clock and memory.
 */
import { fileURLToPath } from "node:url"

export type Request = { readonly type: string } & Readonly<Record<string, unknown>>
export type Handler = (request: Request) => Promise<Readonly<Record<string, unknown>>> | Readonly<Record<string, unknown>>

const send = (message: Readonly<Record<string, unknown>>) => {
  if (process.send === undefined) throw new Error("run this through the benchmark runner (no IPC channel)")
  process.send(message)
}

/** A full collection, when the child runs with --expose-gc: memory is measured from a clean heap. */
const collectGarbage: Handler = () => {
  const gc = (globalThis as { readonly gc?: () => void }).gc
  gc?.()
  return { collected: gc !== undefined }
}

const builtIn: Readonly<Record<string, Handler>> = { gc: collectGarbage }

/**
 * The files these package names resolve to in this process (with its --conditions), so the
 * runner can check that the code under test is the package as it ships (dist/) and the peers
 * come from node_modules. Static imports resolve exactly as `import.meta.resolve` does.
 */
export const resolvedFiles = (specifiers: ReadonlyArray<string>): Record<string, string> =>
  Object.fromEntries(specifiers.map((s) => [s, fileURLToPath(import.meta.resolve(s))]))

export const serveRequests = (ready: Readonly<Record<string, unknown>>, handlers: Readonly<Record<string, Handler>>) => {
  process.on("message", (request: Request) => {
    if (request.type === "exit") process.exit(0)
    const handler = builtIn[request.type] ?? handlers[request.type]
    if (handler === undefined) return send({ type: "error", message: `unknown request ${request.type}` })
    Promise.resolve()
      .then(() => handler(request))
      .then(
        // clockUs: the monotonic clock CPU profiles use, to cut a profile to a measured run
        (answer) =>
          send({
            ...answer,
            type: request.type,
            clockUs: Number(process.hrtime.bigint() / 1000n),
            memory: process.memoryUsage()
          }),
        (e: unknown) => send({ type: "error", message: e instanceof Error ? e.stack ?? e.message : String(e) })
      )
  })
  process.on("disconnect", () => process.exit(0))
  send({ ...ready, type: "ready" })
}

/** What a server under test counts, so the runner can check every message arrived whole. */
export interface Received {
  messages: number
  bytes: number
  /** SHA-256 of the last message, in hash mode. */
  digest: string
}

/** A server child's command line: `sink|hash [--connections N]`. */
export const serverArgs = (argv: ReadonlyArray<string>) => {
  const at = argv.indexOf("--connections")
  return {
    hashing: argv[0] === "hash",
    /** Connections to allow in all and per IP (the 10,000-idle-connections case); undefined: the defaults. */
    connections: at >= 0 ? Number(argv[at + 1]) : undefined
  }
}
