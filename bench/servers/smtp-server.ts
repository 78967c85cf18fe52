/**
 * nodemailer's smtp-server as a benchmark child, set up like effect-smtp's: 127.0.0.1:0, no
 * TLS, no AUTH, no reverse DNS lookup, a body read to its end ("sink") or hashed ("hash").
 * Usage: node smtp-server.mjs sink|hash (through the runner, which talks to it over IPC).
 */
import { createHash } from "node:crypto"
import { SMTPServer } from "smtp-server"
import { type Received, serveRequests } from "../lib/child.ts"

const hashing = process.argv[2] === "hash"
const received: Received = { messages: 0, bytes: 0, digest: "" }

const server = new SMTPServer({
  name: "bench.invalid",
  logger: false,
  disabledCommands: ["STARTTLS", "AUTH"],
  authOptional: true,
  disableReverseLookup: true,
  size: 2 ** 31,
  onData(stream, _session, callback) {
    const h = hashing ? createHash("sha256") : undefined
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
  serveRequests({ port: typeof address === "object" && address !== null ? address.port : 0 }, {
    stats: () => ({ ...received })
  })
})
