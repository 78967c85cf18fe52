/**
 * HAProxy (Debian's) in front of effect-smtp's server, sending the PROXY protocol: swaks talks
 * to HAProxy from its own loopback address, and the backend sees that address, not HAProxy's;
 * the per-IP connection limit counts it; implicit TLS passes through; HAProxy's health checks
 * (v2 LOCAL) keep HAProxy's address; HAProxy sending from an address the server does not trust
 * is refused.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as net from "node:net"
import * as ProxyProtocol from "../../src/ProxyProtocol.ts"
import type { Endpoint } from "../../src/Transport.ts"
import * as Files from "./support/files.ts"
import * as Haproxy from "./support/haproxy.ts"
import { describeRun, run } from "./support/process.ts"
import * as Server from "./support/server.ts"
import { replies } from "./support/swaks.ts"
import { waitFor } from "../support/server.ts"

const trustedProxy = { trusted: ["127.0.0.1"] }

const swaks = (port: number, from: string, args: ReadonlyArray<string> = []) =>
  run("swaks", [
    "--server",
    `127.0.0.1:${port}`,
    "--local-interface",
    from,
    "--helo",
    "client.test",
    "--from",
    "sender@example.org",
    "--to",
    "rcpt@example.net",
    "--timeout",
    "15s",
    ...args
  ])

const hostOf = (e: Endpoint | undefined) => e?._tag === "Tcp" ? e.host : `${e?._tag}`

/** A connection to HAProxy from `from`, held open once the server's greeting came through. */
const hold = (port: number, from: string) =>
  Effect.acquireRelease(
    Effect.callback<net.Socket>((resume) => {
      const s = net.connect({ host: "127.0.0.1", port, localAddress: from })
      s.once("data", (c: Buffer) =>
        c.toString().startsWith("220") ? resume(Effect.succeed(s)) : resume(Effect.die(new Error(`greeting: ${c}`))))
      s.once("error", (e) => resume(Effect.die(e)))
    }),
    (s) => Effect.sync(() => s.destroy())
  )

describe("HAProxy → effect-smtp server (PROXY protocol)", () => {
  it.live("send-proxy (v1): the backend sees swaks's address; HAProxy is the proxy", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const server = yield* Server.start({ listen: [{ ...Server.tcp(), proxyProtocol: trustedProxy }] })
      const haproxy = yield* Haproxy.start(files, [{ name: "v1", server: `127.0.0.1:${server.port()} send-proxy` }])
      const r = yield* swaks(haproxy.port("v1"), "127.0.0.2", ["--data", "Subject: via haproxy\n\nbody"])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.strictEqual(server.received.length, 1)
      const info = server.connections[0]!
      assert.strictEqual(hostOf(info.remoteEndpoint), "127.0.0.2")
      assert.strictEqual(info.proxy?.header.version, 1)
      assert.strictEqual(hostOf(info.proxy?.proxy), "127.0.0.1")
      // The address the client connected to is HAProxy's frontend.
      assert.deepStrictEqual(info.localEndpoint, { _tag: "Tcp", host: "127.0.0.1", port: haproxy.port("v1") })
    }))

  it.live("send-proxy-v2 with CRC32C and a unique ID; the per-IP limit counts the client, not HAProxy", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const server = yield* Server.start({ listen: [{ ...Server.tcp(), proxyProtocol: trustedProxy }], maxConnectionsPerIp: 1 })
      const haproxy = yield* Haproxy.start(files, [{
        name: "v2",
        frontend: ["unique-id-format %ci:%cp"],
        server: `127.0.0.1:${server.port()} send-proxy-v2 proxy-v2-options crc32c,unique-id`
      }])
      const port = haproxy.port("v2")
      yield* hold(port, "127.0.0.2")
      const first = server.connections[0]!
      assert.strictEqual(hostOf(first.remoteEndpoint), "127.0.0.2")
      assert.strictEqual(first.proxy?.header.version, 2)
      assert.isTrue(first.proxy?.header.tlvs.some((t) => t.type === ProxyProtocol.TLV.CRC32C))
      const port2 = first.remoteEndpoint?._tag === "Tcp" ? first.remoteEndpoint.port : -1
      assert.strictEqual(Buffer.from(first.proxy?.header.uniqueId ?? []).toString(), `127.0.0.2:${port2}`)
      // A second connection from 127.0.0.2: over the limit of one per IP.
      const refused = yield* swaks(port, "127.0.0.2")
      assert.notStrictEqual(refused.code, 0, describeRun(refused))
      assert.match(replies(refused.stdout)[0] ?? "", /^421 4\.7\.0 /, describeRun(refused))
      // From 127.0.0.3 through the same HAProxy: its own count, accepted.
      const accepted = yield* swaks(port, "127.0.0.3", ["--data", "Subject: second client\n\nbody"])
      assert.strictEqual(accepted.code, 0, describeRun(accepted))
      assert.strictEqual(server.received.length, 1)
      assert.strictEqual(hostOf(server.connections.at(-1)!.remoteEndpoint), "127.0.0.3")
    }))

  it.live("implicit TLS through HAProxy: the PROXY header, then the client's TLS handshake", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const server = yield* Server.start({ listen: [{ ...Server.tcp(true), proxyProtocol: trustedProxy }] })
      const haproxy = yield* Haproxy.start(files, [{ name: "tls", server: `127.0.0.1:${server.port()} send-proxy-v2` }])
      const r = yield* swaks(haproxy.port("tls"), "127.0.0.4", ["--tls-on-connect", "--tls-ca-path", files.caFile(), "--tls-verify"])
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.strictEqual(server.received.length, 1)
      assert.strictEqual(server.received[0]!.tls?.protocol, "TLSv1.3")
      assert.strictEqual(hostOf(server.connections[0]!.remoteEndpoint), "127.0.0.4")
    }))

  it.live("HAProxy's health checks (v2 LOCAL) keep HAProxy's own address", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const server = yield* Server.start({ listen: [{ ...Server.tcp(), proxyProtocol: trustedProxy }] })
      yield* Haproxy.start(files, [{
        name: "checked",
        backend: ["option smtpchk HELO haproxy.test"],
        server: `127.0.0.1:${server.port()} send-proxy-v2 check inter 100ms`
      }])
      yield* waitFor(() => server.connections.some((c) => c.helo() === "haproxy.test"))
      const check = server.connections.find((c) => c.helo() === "haproxy.test")!
      assert.strictEqual(check.proxy?.header.command, "local")
      assert.strictEqual(hostOf(check.remoteEndpoint), "127.0.0.1")
    }))

  it.live("HAProxy sending from an address that is not trusted is refused", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const server = yield* Server.start({ listen: [{ ...Server.tcp(), proxyProtocol: trustedProxy }] })
      const haproxy = yield* Haproxy.start(files, [
        { name: "untrusted", server: `127.0.0.1:${server.port()} send-proxy-v2 source 127.0.0.9` },
        { name: "trusted", server: `127.0.0.1:${server.port()} send-proxy-v2` }
      ])
      const r = yield* swaks(haproxy.port("untrusted"), "127.0.0.2")
      assert.notStrictEqual(r.code, 0, describeRun(r))
      assert.deepStrictEqual(replies(r.stdout), [], describeRun(r)) // not even a greeting
      assert.strictEqual(server.sessions(), 0)
      const ok = yield* swaks(haproxy.port("trusted"), "127.0.0.2")
      assert.strictEqual(ok.code, 0, describeRun(ok))
    }))
})
