/**
 * nodemailer's smtp-server as a benchmark child, from node_modules as its users run it, set
 * up like effect-smtp's: 127.0.0.1:0, no TLS, no AUTH, no reverse DNS lookup, a body read to
 * its end ("sink") or hashed ("hash"). Its idle timeout is set to effect-smtp's command
 * timeout (5 minutes instead of 1), so the idle-connections case measures both alike.
 * Usage (through the runner, which talks to it over IPC): node smtp-server.js sink|hash
 */
import { createHash } from "node:crypto"
import { SMTPServer } from "smtp-server"
import { type Received, resolvedFiles, serveRequests, serverArgs } from "../lib/child.ts"

const options = serverArgs(process.argv.slice(2))
const received: Received = { messages: 0, bytes: 0, digest: "" }

const server = new SMTPServer({
  name: "bench.invalid",
  logger: false,
  disabledCommands: ["STARTTLS", "AUTH"],
  authOptional: true,
  disableReverseLookup: true,
  size: 2 ** 31,
  socketTimeout: 5 * 60_000,
  onData(stream, _session, callback) {
    const h = options.hashing ? createHash("sha256") : undefined
    stream.on("data", (chunk: Buffer) => {
      received.bytes += chunk.length
      h?.update(chunk)
    })
    stream.on("error", callback)
    stream.on("end", () => {
      if (h !== undefined) received.digest = h.digest("hex")
      received.messages++
      callback()
    })
  }
})

server.listen(0, "127.0.0.1", () => {
  const address = server.server.address()
  serveRequests({
    port: typeof address === "object" && address !== null ? address.port : 0,
    resolved: resolvedFiles(["smtp-server"])
  }, { stats: () => ({ ...received }) })
})
