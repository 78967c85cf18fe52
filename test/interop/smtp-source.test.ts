/**
 * Postfix's smtp-source load generator against effect-smtp's server: many messages over
 * parallel sessions (SMTP and LMTP, TCP and a Unix socket); every one is received whole.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Files from "./support/files.ts"
import { describeRun, run } from "./support/process.ts"
import * as Server from "./support/server.ts"

const smtpSource = (args: ReadonlyArray<string>, target: string) =>
  run("/usr/sbin/smtp-source", ["-f", "load@example.org", "-t", "sink@example.net", "-M", "client.test", ...args, target], {
    timeout: "25 seconds"
  })

/**
 * smtp-source's message: a From/To/Date/Message-Id header, a blank line, then a payload of
 * `-l` bytes in lines "1XXX…", "2XXX…", … (up to 80 characters; the inner line endings
 * count towards `-l`), plus the final CRLF.
 */
const assertSourceMessage = (m: Server.Received, payloadLength: number, recipients: number) => {
  assert.strictEqual(m.helo, "client.test")
  assert.strictEqual(m.from, "load@example.org")
  // -r N sends N recipients per message: "sink@…", then "2sink@…" … "Nsink@…".
  assert.deepStrictEqual(
    m.rcpts.map((r) => r.to).sort(),
    Array.from({ length: recipients }, (_, i) => `${i === 0 ? "" : i + 1}sink@example.net`).sort()
  )
  const text = Files.latin1(m.body)
  const split = text.indexOf("\r\n\r\n")
  assert.match(text.slice(0, split), /^From: <load@example\.org>\r\nTo: <sink@example\.net>\r\nDate: .+\r\nMessage-Id: <.+>$/)
  const payload = text.slice(split + 4)
  assert.strictEqual(payload.length, payloadLength + 2)
  assert.isTrue(payload.endsWith("\r\n"))
  const lines = payload.slice(0, -2).split("\r\n")
  const odd = lines.find((l) => !/^[0-9]*X*$/.test(l) || l.length > 80)
  assert.isUndefined(odd, `payload line of ${odd?.length}`)
}

describe("smtp-source → effect-smtp server", () => {
  it.live("200 messages, 4 sessions in parallel, a new connection per message", () =>
    Effect.gen(function*() {
      const server = yield* Server.start({ listen: [Server.tcp()] })
      const r = yield* smtpSource(["-s", "4", "-m", "200", "-l", "1000", "-c"], `127.0.0.1:${server.port()}`)
      assert.strictEqual(r.code, 0, describeRun(r))
      // -c prints a running count of completed DATA commands.
      assert.match(r.stdout, /200\s*$/)
      assert.strictEqual(server.received.length, 200)
      assert.strictEqual(server.sessions(), 200)
      for (const m of server.received) assertSourceMessage(m, 1000, 1)
    }))

  it.live("200 messages over 4 long-lived sessions (-d), 3 recipients each", () =>
    Effect.gen(function*() {
      const server = yield* Server.start({ listen: [Server.tcp()] })
      const r = yield* smtpSource(["-s", "4", "-m", "200", "-d", "-r", "3", "-l", "2000"], `127.0.0.1:${server.port()}`)
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.strictEqual(server.received.length, 200)
      assert.strictEqual(server.sessions(), 4)
      // All four sessions carried messages.
      assert.strictEqual(new Set(server.received.map((m) => m.connection)).size, 4)
      for (const m of server.received) assertSourceMessage(m, 2000, 3)
    }))

  it.live("large messages: 20 of 1 MiB over 2 sessions", () =>
    Effect.gen(function*() {
      const server = yield* Server.start({ listen: [Server.tcp()] })
      const r = yield* smtpSource(["-s", "2", "-m", "20", "-d", "-l", String(1024 * 1024)], `127.0.0.1:${server.port()}`)
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.strictEqual(server.received.length, 20)
      for (const m of server.received) assertSourceMessage(m, 1024 * 1024, 1)
    }))

  it.live("LMTP (-L) over TCP: 200 messages, 4 sessions, 2 recipients each", () =>
    Effect.gen(function*() {
      const server = yield* Server.start({ listen: [Server.tcp()], protocol: "lmtp" })
      const r = yield* smtpSource(["-L", "-s", "4", "-m", "200", "-d", "-r", "2", "-l", "500"], `127.0.0.1:${server.port()}`)
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.strictEqual(server.received.length, 200)
      for (const m of server.received) assertSourceMessage(m, 500, 2)
    }))

  it.live("LMTP (-L) over a Unix socket: 200 messages, 4 sessions", () =>
    Effect.gen(function*() {
      const files = yield* Files.scratch
      const socket = files.path("lmtp.sock")
      const server = yield* Server.start({ listen: [Server.unix(socket)], protocol: "lmtp" })
      const r = yield* smtpSource(["-L", "-s", "4", "-m", "200", "-l", "500"], `unix:${socket}`)
      assert.strictEqual(r.code, 0, describeRun(r))
      assert.strictEqual(server.received.length, 200)
      assert.strictEqual(server.sessions(), 200)
      for (const m of server.received) assertSourceMessage(m, 500, 1)
    }))

  it.live("smtp-source speaking SMTP to the LMTP server is refused at HELO (and nothing is received)", () =>
    Effect.gen(function*() {
      const server = yield* Server.start({ listen: [Server.tcp()], protocol: "lmtp" })
      const r = yield* smtpSource(["-m", "1"], `127.0.0.1:${server.port()}`)
      assert.notStrictEqual(r.code, 0, describeRun(r))
      assert.include(r.stderr, "500")
      assert.strictEqual(server.received.length, 0)
    }))
})
