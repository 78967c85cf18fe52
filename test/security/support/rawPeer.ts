/**
 * A raw SMTP client over `node:net` / `node:tls`, for attacks the library's own client would
 * never make: bytes written exactly as given and when given (before a reply, mid-handshake),
 * and a TLS upgrade at any point.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as net from "node:net"
import * as tls from "node:tls"
import type { Endpoint } from "../../../src/Transport.ts"

export interface RawPeer {
  /** Writes the text as is (latin1), without waiting for anything. */
  readonly write: (text: string) => Effect.Effect<void>
  /** The next whole reply (all its lines, CRLF included); fails when the connection ends first. */
  readonly reply: Effect.Effect<string, Error>
  /** The TLS handshake over the connection: "ok", or "failed" (the connection is then gone). */
  readonly startTls: (options: { readonly ca: string }) => Effect.Effect<"ok" | "failed">
  /** Bytes received but not yet taken as replies. */
  readonly buffered: () => string
  /** Waits until the server closes the connection (or `timeoutMs` passes: false). */
  readonly closed: (timeoutMs?: number) => Effect.Effect<boolean>
}

/** The end of the first whole reply in `text` (just after its last line's CRLF), or -1. */
const replyEnd = (text: string): number => {
  let from = 0
  while (true) {
    const nl = text.indexOf("\r\n", from)
    if (nl < 0) return -1
    if (text[from + 3] !== "-") return nl + 2
    from = nl + 2
  }
}

export const connect = (endpoint: Endpoint): Effect.Effect<RawPeer, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<{ peer: RawPeer; destroy: () => void }, Error>((resume) => {
      if (endpoint._tag !== "Tcp") return resume(Effect.fail(new Error("needs a TCP endpoint")))
      const raw = net.connect({ host: endpoint.host, port: endpoint.port })
      let socket: net.Socket = raw
      let inbox = ""
      let ended = false
      let wake: (() => void) | undefined
      const notify = () => {
        const w = wake
        wake = undefined
        w?.()
      }
      const onData = (b: Buffer) => {
        inbox += b.toString("latin1")
        notify()
      }
      const onEnd = () => {
        ended = true
        notify()
      }
      const listen = (s: net.Socket) => s.on("data", onData).on("close", onEnd).on("error", () => {})
      listen(raw)

      const nextEvent = Effect.callback<void>((res) => {
        wake = () => res(Effect.void)
        return Effect.sync(() => {
          wake = undefined
        })
      })

      const reply: Effect.Effect<string, Error> = Effect.suspend(() => {
        const end = replyEnd(inbox)
        if (end >= 0) {
          const r = inbox.slice(0, end)
          inbox = inbox.slice(end)
          return Effect.succeed(r)
        }
        if (ended) return Effect.fail(new Error(`connection ended; unanswered bytes: ${JSON.stringify(inbox)}`))
        return Effect.andThen(nextEvent, reply)
      })

      const peer: RawPeer = {
        write: (text) => Effect.sync(() => void socket.write(Buffer.from(text, "latin1"))),
        reply,
        startTls: (options) =>
          Effect.callback<"ok" | "failed">((res) => {
            let done = false
            const settle = (outcome: "ok" | "failed") => {
              if (!done) res(Effect.succeed(outcome))
              done = true
            }
            raw.off("data", onData).off("close", onEnd)
            const secure = tls.connect({ socket: raw, ca: options.ca, servername: "localhost" })
            socket = secure
            listen(secure)
            secure.once("secureConnect", () => settle("ok"))
            secure.once("close", () => settle("failed"))
          }),
        buffered: () => inbox,
        closed: (timeoutMs = 10_000) =>
          Effect.callback<boolean>((res) => {
            if (ended) return res(Effect.succeed(true))
            const timer = setTimeout(() => res(Effect.succeed(false)), timeoutMs)
            socket.once("close", () => {
              clearTimeout(timer)
              res(Effect.succeed(true))
            })
            return Effect.sync(() => clearTimeout(timer))
          })
      }
      let settled = false
      raw.once("connect", () => {
        if (!settled) resume(Effect.succeed({ peer, destroy: () => socket.destroy() }))
        settled = true
      })
      raw.once("error", (e) => {
        if (!settled) resume(Effect.fail(e))
        settled = true
      })
    }),
    ({ destroy }) => Effect.sync(destroy)
  ).pipe(Effect.map(({ peer }) => peer))
