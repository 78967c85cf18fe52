/**
 * The idle-connections load, as a benchmark child: `hold` opens `count` connections to
 * 127.0.0.1:`port`, reads each greeting and then sends nothing; `transaction` runs one good
 * client's whole transaction (EHLO, MAIL, RCPT, DATA, QUIT, waiting for every reply) on a new
 * connection and times it; `release` closes the held connections. Every wait has a deadline.
 */
import * as net from "node:net"
import { serveRequests } from "../lib/child.ts"
import { FROM, makeMessage, TO } from "../lib/message.ts"

const held = new Set<net.Socket>()
/** Held connections the server closed (it must close none while they are measured). */
let closedByServer = 0

const finalLine = /(?:^|\n)(\d{3}) [^\n]*\n$/

/** Reads one whole reply (its last line "NNN text"); fails after `timeoutMs`. */
const replyReader = (socket: net.Socket) => {
  let buffer = ""
  let waiting: { resolve: (code: number) => void; reject: (e: Error) => void } | undefined
  const check = () => {
    const m = finalLine.exec(buffer)
    if (m === null || waiting === undefined) return
    const w = waiting
    waiting = undefined
    buffer = ""
    w.resolve(Number(m[1]))
  }
  socket.on("data", (b: Buffer) => {
    buffer += b.toString("latin1")
    check()
  })
  const fail = (e: Error) => {
    const w = waiting
    waiting = undefined
    w?.reject(e)
  }
  socket.on("error", fail)
  socket.on("close", () => fail(new Error(`connection closed (unanswered: ${JSON.stringify(buffer)})`)))
  return (expected: number, what: string, timeoutMs = 10_000) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`${what}: no reply within ${timeoutMs} ms`)), timeoutMs)
      waiting = {
        resolve: (code) => {
          clearTimeout(timer)
          if (code === expected) resolve()
          else reject(new Error(`${what}: expected ${expected}, got ${code}`))
        },
        reject: (e) => {
          clearTimeout(timer)
          reject(e)
        }
      }
      check()
    })
}

/** Opens one connection and waits for its 220 greeting; it then stays open, idle. */
const openIdle = (port: number): Promise<void> => {
  const socket = net.connect({ host: "127.0.0.1", port })
  const reply = replyReader(socket)
  return reply(220, "greeting", 30_000).then(
    () => {
      held.add(socket)
      socket.once("close", () => {
        if (held.delete(socket)) closedByServer++
      })
    },
    (e: unknown) => {
      socket.destroy()
      throw e
    }
  )
}

const hold = async (port: number, count: number) => {
  const started = performance.now()
  let next = 0
  // A few hundred handshakes at a time: the listen backlog is not the thing measured.
  const opener = async () => {
    while (next < count) {
      next++
      await openIdle(port)
    }
  }
  await Promise.all(Array.from({ length: Math.min(200, count) }, opener))
  return { held: held.size, seconds: (performance.now() - started) / 1000 }
}

const message = makeMessage(1024)
const endsWithCrlf = message.at(-2) === 13 && message.at(-1) === 10

const transaction = async (port: number) => {
  const started = performance.now()
  const socket = net.connect({ host: "127.0.0.1", port })
  socket.setNoDelay(true)
  const reply = replyReader(socket)
  try {
    await reply(220, "greeting")
    socket.write("EHLO bench.invalid\r\n")
    await reply(250, "EHLO")
    socket.write(`MAIL FROM:<${FROM}>\r\n`)
    await reply(250, "MAIL")
    socket.write(`RCPT TO:<${TO}>\r\n`)
    await reply(250, "RCPT")
    socket.write("DATA\r\n")
    await reply(354, "DATA")
    socket.write(message)
    socket.write(endsWithCrlf ? ".\r\n" : "\r\n.\r\n")
    await reply(250, "end of data")
    socket.write("QUIT\r\n")
    await reply(221, "QUIT")
    return (performance.now() - started) / 1000
  } finally {
    socket.destroy()
  }
}

serveRequests({}, {
  hold: (r) => hold(Number(r.port), Number(r.count)),
  transaction: async (r) => ({ seconds: await transaction(Number(r.port)) }),
  status: () => ({ held: held.size, closedByServer }),
  release: () => {
    for (const s of held) s.destroy()
    held.clear()
    return { released: true }
  }
})
