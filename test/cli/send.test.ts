/**
 * `effect-smtp send` as users run it, against `effect-smtp serve`: JSON results and exit codes.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { testCerts } from "../support/certs.ts"
import * as Cli from "../support/cli.ts"

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "effect-smtp-send-"))
const message = "Subject: hello\r\n\r\n.a line starting with a dot\r\nbinary-ish: \u00e9\r\n"
const messageFile = path.join(tmp, "message.eml")
const socket = path.join(tmp, "lmtp.sock")
const caFile = path.join(tmp, "ca.pem")
let smtp: Cli.Running
let lmtp: Cli.Running
let plainAddress = ""
let tlsAddress = ""

beforeAll(async () => {
  fs.writeFileSync(messageFile, message)
  const certs = testCerts()
  fs.writeFileSync(caFile, certs.ca)
  fs.writeFileSync(path.join(tmp, "cert.pem"), certs.server.cert)
  fs.writeFileSync(path.join(tmp, "key.pem"), certs.server.key)
  smtp = Cli.start([
    "serve", "--maildir", path.join(tmp, "smtp"),
    "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0",
    "--tls-cert", path.join(tmp, "cert.pem"), "--tls-key", path.join(tmp, "key.pem"),
    "--auth", "alice:s3cret",
    "--fault", "rcpt:^nobody@=550 5.1.1 No such user"
  ])
  lmtp = Cli.start([
    "serve", "--lmtp", "--maildir", path.join(tmp, "lmtp"), "--listen", `unix:${socket}`,
    "--fault", "data:^full@=452 4.2.2 Mailbox full"
  ])
  const plain = await smtp.waitFor((e) => e.event === "listening" && e.tls === "starttls")
  const implicit = await smtp.waitFor((e) => e.event === "listening" && e.tls === "implicit")
  await lmtp.waitFor((e) => e.event === "listening")
  plainAddress = plain.address as string
  tlsAddress = implicit.address as string
})

afterAll(async () => {
  await Promise.all([smtp?.stop(), lmtp?.stop()])
  fs.rmSync(tmp, { recursive: true, force: true })
})

const send = async (args: ReadonlyArray<string>, input?: string) => {
  const r = await Cli.run(["send", ...args], input)
  const json = r.stdout.trim() === "" ? undefined : JSON.parse(r.stdout) as Record<string, unknown>
  return { ...r, json }
}

describe("effect-smtp send", () => {
  it("sends a file over STARTTLS (opportunistic on loopback) with AUTH, exit 0", async () => {
    const r = await send([
      "--server", plainAddress, "--ca", caFile, "--auth", "alice:s3cret",
      "--from", "alice@example.com", "--to", "bob@example.com", messageFile
    ])
    assert.strictEqual(r.code, 0, r.stderr)
    assert.deepStrictEqual(r.json, {
      ok: true,
      accepted: ["bob@example.com"],
      rejected: [],
      reply: { code: 250, enhanced: "2.0.0", message: "OK: message accepted" }
    })
    const received = await smtp.waitFor((e) => e.event === "received" && e.auth === "alice")
    assert.strictEqual(received.tls, true)
    assert.strictEqual(received.body, "8BITMIME")
    assert.strictEqual(fs.readFileSync(received.path as string, "utf8"), message)
  })

  it("reads stdin, and reports a refused recipient with exit 1", async () => {
    const r = await send([
      "--server", plainAddress, "--ca", caFile,
      "--from", "", "--to", "carol@example.com", "--to", "nobody@example.com"
    ], message)
    assert.strictEqual(r.code, 1, r.stderr)
    assert.deepStrictEqual(r.json!.accepted, ["carol@example.com"])
    assert.deepStrictEqual(r.json!.rejected, [
      { rcpt: "nobody@example.com", code: 550, enhanced: "5.1.1", message: "No such user" }
    ])
    const received = await smtp.waitFor((e) => e.event === "received" && (e.to as Array<string>)[0] === "carol@example.com")
    assert.strictEqual(received.from, "")
  })

  it("implicit TLS with --tls and the CA, and --chunking always", async () => {
    const r = await send([
      "--server", tlsAddress, "--tls", "--ca", caFile, "--chunking", "always",
      "--from", "a@example.com", "--to", "dave@example.com", messageFile
    ])
    assert.strictEqual(r.code, 0, r.stderr)
    const received = await smtp.waitFor((e) => e.event === "received" && (e.to as Array<string>)[0] === "dave@example.com")
    assert.strictEqual(fs.readFileSync(received.path as string, "utf8"), message)
  })

  it("refuses an unverifiable certificate with exit 3, and --insecure skips the check", async () => {
    const bad = await send(["--server", tlsAddress, "--tls", "--from", "a@example.com", "--to", "e@example.com", messageFile])
    assert.strictEqual(bad.code, 3)
    assert.include(bad.stderr.toLowerCase(), "certificate")
    const ok = await send([
      "--server", tlsAddress, "--tls", "--insecure", "--from", "a@example.com", "--to", "e@example.com", messageFile
    ])
    assert.strictEqual(ok.code, 0, ok.stderr)
  })

  it("LMTP over a Unix socket: per-recipient outcome after the body", async () => {
    const r = await send([
      "--server", `unix:${socket}`, "--lmtp",
      "--from", "a@example.com", "--to", "one@example.com", "--to", "full@example.com", messageFile
    ])
    assert.strictEqual(r.code, 1, r.stderr)
    assert.deepStrictEqual(r.json!.accepted, ["one@example.com"])
    assert.deepStrictEqual(r.json!.rejected, [
      { rcpt: "full@example.com", code: 452, enhanced: "4.2.2", message: "Mailbox full" }
    ])
  })

  it("--starttls required: a server that does not offer STARTTLS, or refuses it (454), is exit 3 with the reason; nothing more goes out in plaintext", async () => {
    for (const offer of [false, true]) {
      // A server of its own, as a user's might be: it offers AUTH, and never TLS.
      const heard: Array<string> = []
      const server = net.createServer((socket) => {
        let buffered = ""
        socket.write("220 mx.test ESMTP\r\n")
        socket.on("data", (b) => {
          buffered += b.toString("latin1")
          let nl: number
          while ((nl = buffered.indexOf("\r\n")) >= 0) {
            const line = buffered.slice(0, nl)
            buffered = buffered.slice(nl + 2)
            heard.push(line)
            if (/^EHLO /.test(line)) socket.write(`250-mx.test\r\n250-AUTH PLAIN\r\n${offer ? "250-STARTTLS\r\n" : ""}250 PIPELINING\r\n`)
            else if (line === "STARTTLS") socket.write("454 4.7.0 TLS not available due to local problem\r\n")
            else socket.write("250 2.0.0 ok\r\n")
          }
        })
        socket.on("error", () => {})
      })
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
      const port = (server.address() as net.AddressInfo).port
      try {
        const r = await send([
          "--server", `127.0.0.1:${port}`, "--starttls", "required", "--auth", "alice:s3cret",
          "--from", "a@example.com", "--to", "b@example.com", messageFile
        ])
        assert.strictEqual(r.code, 3, r.stderr)
        assert.include(r.stderr, offer ? "STARTTLS is required, but the server refused it: 454" : "STARTTLS is required, but the server does not offer it")
        assert.deepStrictEqual(r.json!.rejected, [])
        assert.deepStrictEqual(heard, offer ? ["EHLO localhost", "STARTTLS"] : ["EHLO localhost"])
      } finally {
        await new Promise((resolve) => server.close(resolve))
      }
    }
  })

  it("exit 3 when nothing listens, exit 2 on usage errors", async () => {
    const down = await send(["--server", `unix:${path.join(tmp, "nothing.sock")}`, "--from", "a@example.com", "--to", "b@example.com", messageFile])
    assert.strictEqual(down.code, 3)
    assert.strictEqual(down.json!.ok, false)
    assert.isAbove(down.stderr.length, 0)
    for (
      const args of [
        ["--from", "a@example.com", "--to", "b@example.com", messageFile],
        ["--server", plainAddress, "--from", "a@example.com", messageFile],
        ["--server", plainAddress, "--from", "not an address", "--to", "b@example.com", messageFile],
        ["--server", plainAddress, "--from", "a@example.com", "--to", "b@example.com", path.join(tmp, "missing.eml")],
        ["--server", plainAddress, "--from", "a@example.com", "--to", "b@example.com", "--auth", "nocolon", messageFile],
        ["--server", plainAddress, "--from", "a@example.com", "--to", "b@example.com", "--starttls", "maybe", messageFile]
      ]
    ) {
      const r = await send(args)
      assert.strictEqual(r.code, 2, `${args.join(" ")}: ${r.stderr}`)
    }
  })
})
