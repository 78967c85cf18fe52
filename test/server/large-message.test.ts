/**
 * Bodies stream: a very large message over real TCP keeps the process's memory flat.
 * The size is SMTP_TEST_LARGE_MESSAGE_MIB (default 1024 MiB), sent once with DATA and once with BDAT.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as net from "node:net"
import { makeBackend } from "../support/backend.ts"
import { start, waitFor } from "../support/server.ts"

const MiB = 1024 * 1024
const sizeMiB = Number(process.env.SMTP_TEST_LARGE_MESSAGE_MIB ?? "1024")
/** Growth allowed over the whole transfer, for the server and the client in this process together. */
const RSS_BOUND = 200 * MiB

interface Measured {
  readonly seconds: number
  readonly rssGrowth: number
  readonly received: number
  readonly reply: string
}

/** Sends `total` body bytes on a raw socket (DATA or BDAT), honouring backpressure, and samples memory. */
const transfer = (mode: "DATA" | "BDAT", total: number) =>
  Effect.gen(function*() {
    let received = 0
    const { layer } = makeBackend({
      data: (body) => Stream.runForEach(body, (chunk) => Effect.sync(() => void (received += chunk.length)))
    })
    const s = yield* start({ net: "tcp", backend: layer, maxMessageBytes: total + MiB, timeouts: { data: "2 minutes" } })
    const endpoint = s.endpoint
    if (endpoint._tag !== "Tcp") return yield* Effect.die("expected TCP")
    const socket = net.connect({ host: endpoint.host, port: endpoint.port })
    yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
    let inbox = ""
    socket.on("data", (b: Buffer) => (inbox += b.toString("latin1")))
    const piece = Buffer.from(("0123456789abcdef".repeat(63) + "0123456789abcd\r\n").repeat(64)) // 64 KiB, CRLF lines
    socket.write(
      "EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n" +
        (mode === "DATA" ? "DATA\r\n" : `BDAT ${total} LAST\r\n`)
    )
    if (mode === "DATA") yield* waitFor(() => inbox.includes("354 "))

    const baseline = process.memoryUsage().rss
    let peak = baseline
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50)
    const started = Date.now()
    let sent = 0
    const pump = () => {
      while (sent < total) {
        const n = Math.min(piece.length, total - sent)
        sent += n
        if (!socket.write(n === piece.length ? piece : piece.subarray(0, n))) return void socket.once("drain", pump)
      }
      if (mode === "DATA") socket.write(".\r\n")
    }
    pump()
    const replies = mode === "DATA" ? 6 : 5 // the greeting, EHLO, MAIL, RCPT, (354,) the verdict
    yield* waitFor(() => inbox.split("\r\n").filter((l) => /^\d{3} /.test(l)).length >= replies, 600_000)
    clearInterval(sampler)
    peak = Math.max(peak, process.memoryUsage().rss)
    return {
      seconds: (Date.now() - started) / 1000,
      rssGrowth: peak - baseline,
      received,
      reply: inbox.trimEnd().split("\r\n").at(-1)!
    } satisfies Measured
  })

const report = (mode: string, total: number, m: Measured) =>
  console.log(
    `${mode} ${total / MiB} MiB over TCP: ${m.seconds.toFixed(1)} s (${(total / MiB / m.seconds).toFixed(0)} MiB/s), ` +
      `peak RSS growth ${(m.rssGrowth / MiB).toFixed(1)} MiB`
  )

describe("a very large message", () => {
  it.live(`DATA: ${sizeMiB} MiB stream through with bounded memory`, () =>
    Effect.gen(function*() {
      const total = sizeMiB * MiB
      const m = yield* transfer("DATA", total)
      report("DATA", total, m)
      assert.match(m.reply, /^250 2\.0\.0 /)
      assert.strictEqual(m.received, total)
      assert.isBelow(m.rssGrowth, RSS_BOUND)
    }), 600_000)

  it.live(`BDAT: ${sizeMiB} MiB in one chunk with bounded memory`, () =>
    Effect.gen(function*() {
      const total = sizeMiB * MiB
      const m = yield* transfer("BDAT", total)
      report("BDAT", total, m)
      assert.match(m.reply, /^250 2\.0\.0 /)
      assert.strictEqual(m.received, total)
      assert.isBelow(m.rssGrowth, RSS_BOUND)
    }), 600_000)
})
