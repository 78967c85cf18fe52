/**
 * The floor for a Node server (`--floor`): an SMTP sink in plain Node callbacks, no library and
 * only the parsing the protocol needs to frame a message (a line's first four letters, the
 * body's end). It makes the same system calls per command as a real server, so the gap
 * between it and smtp-sink is what Node itself costs; the gap between it and effect-smtp is
 * what a real server's work and Effect cost. Not a server anyone should run: it checks nothing.
 * Usage (through the runner, which talks to it over IPC): node plain-node.js sink
 */
import * as net from "node:net"
import { type Received, serveRequests } from "../lib/child.ts"

const received: Received = { messages: 0, bytes: 0, digest: "" }
const END = "\r\n.\r\n"

const server = net.createServer((socket) => {
  socket.setNoDelay(true)
  // Latin-1 keeps one character per byte. In a body, `pending` starts with the CRLF before it,
  // so that an end right after DATA is found too.
  let pending = ""
  let inBody = false
  socket.on("data", (chunk: Buffer) => {
    pending += chunk.toString("latin1")
    let out = ""
    while (true) {
      if (inBody) {
        const end = pending.indexOf(END)
        if (end < 0) {
          // Keep what could be the start of the end mark.
          const keep = Math.min(pending.length, END.length - 1)
          received.bytes += pending.length - keep
          pending = pending.slice(pending.length - keep)
          break
        }
        received.bytes += end
        received.messages++
        pending = pending.slice(end + END.length)
        inBody = false
        out += "250 2.0.0 Ok: queued\r\n"
        continue
      }
      const eol = pending.indexOf("\r\n")
      if (eol < 0) break
      const verb = pending.slice(0, Math.min(4, eol)).toUpperCase()
      pending = pending.slice(eol + 2)
      if (verb === "DATA") {
        inBody = true
        pending = "\r\n" + pending
        out += "354 End data with <CR><LF>.<CR><LF>\r\n"
      } else if (verb === "QUIT") {
        socket.end(out + "221 2.0.0 Bye\r\n")
        return
      } else {
        out += verb === "EHLO" || verb === "HELO" ? "250 bench.invalid\r\n" : "250 2.0.0 Ok\r\n"
      }
    }
    if (out !== "") socket.write(out)
  })
  socket.on("error", () => {}) // smtp-source resets its connections
  socket.write("220 bench.invalid ESMTP\r\n")
})

server.listen(0, "127.0.0.1", () => {
  const address = server.address() as net.AddressInfo
  serveRequests({ port: address.port, resolved: {} }, { stats: () => ({ ...received }) })
})
