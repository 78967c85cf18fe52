/**
 * A private HAProxy (Debian's `haproxy`) in TCP mode: a config of its own in the test's scratch
 * directory, one frontend per route on a free loopback port, each forwarding to one backend
 * server line (`127.0.0.1:PORT send-proxy`, `send-proxy-v2 …`), run in the foreground (`-db`)
 * and stopped with the test.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as net from "node:net"
import type { Scratch } from "./files.ts"
import { daemon, ProcessError } from "./process.ts"

const HAPROXY = "/usr/sbin/haproxy"

export interface Route {
  readonly name: string
  /** The backend's `server` line after `server s `, e.g. `127.0.0.1:2525 send-proxy-v2`. */
  readonly server: string
  /** More lines for the backend (`option smtpchk`, …). */
  readonly backend?: ReadonlyArray<string> | undefined
  /** More lines for the frontend (`unique-id-format …`). */
  readonly frontend?: ReadonlyArray<string> | undefined
}

export interface Haproxy {
  /** The port of a route's frontend on 127.0.0.1. */
  readonly port: (name: string) => number
}

const freePort = Effect.callback<number>((resume) => {
  const s = net.createServer()
  s.listen(0, "127.0.0.1", () => {
    const a = s.address()
    s.close(() => resume(Effect.succeed(typeof a === "object" && a !== null ? a.port : 0)))
  })
})

const connectable = (port: number) =>
  Effect.callback<boolean>((resume) => {
    const c = net.connect({ host: "127.0.0.1", port })
    c.once("connect", () => {
      c.destroy()
      resume(Effect.succeed(true))
    })
    c.once("error", () => resume(Effect.succeed(false)))
  })

/** Starts HAProxy with these routes; fails if it is missing, refuses its config or does not listen. */
export const start = (files: Scratch, routes: ReadonlyArray<Route>): Effect.Effect<Haproxy, ProcessError, Scope.Scope> =>
  Effect.gen(function*() {
    if (!fs.existsSync(HAPROXY)) {
      return yield* new ProcessError({ message: `${HAPROXY} is missing: run scripts/install-peers.sh`, stdout: "", stderr: "" })
    }
    const ports = new Map<string, number>()
    for (const r of routes) ports.set(r.name, yield* freePort)
    // Probed for readiness: a frontend of its own, so that no probe reaches the server.
    const ready = yield* freePort
    const config = [
      "global",
      "  maxconn 256",
      "defaults",
      "  mode tcp",
      "  timeout connect 5s",
      "  timeout client 30s",
      "  timeout server 30s",
      "frontend f_ready",
      `  bind 127.0.0.1:${ready}`,
      "  tcp-request connection reject",
      ...routes.flatMap((r) => [
        `frontend f_${r.name}`,
        `  bind 127.0.0.1:${ports.get(r.name)}`,
        ...(r.frontend ?? []).map((l) => `  ${l}`),
        `  default_backend b_${r.name}`,
        `backend b_${r.name}`,
        ...(r.backend ?? []).map((l) => `  ${l}`),
        `  server s ${r.server}`
      ])
    ].join("\n") + "\n"
    const file = files.write("haproxy.cfg", config)
    const proxy = yield* daemon(HAPROXY, ["-db", "-f", file])
    // Up once it accepts: it binds every frontend before accepting on any.
    let up = false
    for (let i = 0; i < 500 && !up; i++) {
      up = yield* connectable(ready)
      if (!up) {
        const exited = yield* proxy.exited("20 millis").pipe(Effect.option)
        if (exited._tag === "Some") {
          return yield* new ProcessError({ message: `haproxy exited: ${exited.value.stderr}`, stdout: "", stderr: exited.value.stderr })
        }
      }
    }
    if (!up) return yield* new ProcessError({ message: "haproxy does not listen", ...proxy.output() })
    return { port: (name) => ports.get(name)! }
  })
