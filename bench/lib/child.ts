/**
 * The child side of the benchmark IPC protocol: say `ready`, answer each request with a
 * message of the same type (or `error`), exit on `exit` or when the parent goes away.
 * Every child also answers `gc`; every answer carries the child's clock and memory.
 */

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
