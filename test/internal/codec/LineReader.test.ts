import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import { TestClock } from "effect/testing"
import * as fc from "fast-check"
import { DotDecoder, DotEncoder } from "../../../src/internal/codec/DotCodec.ts"
import * as LineReader from "../../../src/internal/codec/LineReader.ts"
import type { SmtpError } from "../../../src/SmtpError.ts"
import type { TransportError } from "../../../src/Transport.ts"
import * as Scripted from "../../support/ScriptedTransport.ts"
import { bytes, concat, normalizeBody, text } from "../../support/bytes.ts"

const split = (input: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((c) => c % (input.length + 1)))].sort((a, b) => a - b)
  const chunks: Array<Uint8Array> = []
  let prev = 0
  for (const p of [...points, input.length]) {
    if (p > prev) chunks.push(input.slice(prev, p))
    prev = p
  }
  return chunks
}
const encode = (body: Uint8Array): Uint8Array => {
  const e = new DotEncoder()
  return concat([e.encode(body), e.end()])
}

const setup = (script: ReadonlyArray<Scripted.Step>, options: { maxLineLength?: number; end?: boolean } = {}) => {
  const transport = Scripted.make(script, { end: options.end ?? true })
  const reader = LineReader.make(transport, { maxLineLength: options.maxLineLength ?? 512 })
  return { transport, reader }
}

const dataOptions = (over: Partial<LineReader.DataBodyOptions> = {}): LineReader.DataBodyOptions => ({
  deadline: { idleMillis: 60_000, minBytesPerSecond: 1 },
  maxBytes: 1 << 20,
  bareLineEndings: "reject",
  ...over
})
const chunkOptions = (over: Partial<LineReader.BodyOptions> = {}): LineReader.BodyOptions => ({
  deadline: { idleMillis: 60_000, minBytesPerSecond: 1 },
  maxBytes: 1 << 20,
  ...over
})

/** The whole stream as latin1; each emitted slice is copied as it arrives. */
const collect = (
  stream: Stream.Stream<Uint8Array, SmtpError | TransportError>
): Effect.Effect<string, SmtpError | TransportError> =>
  Stream.runFold(stream, () => "", (acc, chunk: Uint8Array) => acc + text(chunk))

const smtpFailure = (e: unknown) => {
  assert.strictEqual((e as { _tag?: string })._tag, "SmtpError")
  const err = e as SmtpError
  return [err.code, err.enhancedCode] as const
}
const transportFailure = (e: unknown) => {
  assert.strictEqual((e as { _tag?: string })._tag, "TransportError")
  return (e as TransportError).reason
}

const lineArb = fc.string({ unit: fc.constantFrom("a", "Z", " ", ":", "<", ">", "@", ".", "\t", "é"), maxLength: 40 })
const cutsArb = fc.array(fc.nat({ max: 100_000 }), { maxLength: 10 })
const byteArb = fc.oneof(
  { arbitrary: fc.constantFrom(13, 10, 46), weight: 3 },
  { arbitrary: fc.integer({ min: 0, max: 255 }), weight: 2 }
)
const bodyArb = fc.array(byteArb, { maxLength: 300 }).map((a) => Uint8Array.from(a))
const propRuns = { numRuns: 200 }

describe("readLine", () => {
  it.effect("CRLF and bare LF endings, then EOF is Closed", () =>
    Effect.gen(function*() {
      const { reader } = setup(["HELO a\r\nNOOP\nQUIT\r\n\r\n\n"])
      assert.strictEqual(yield* reader.readLine, "HELO a")
      assert.strictEqual(yield* reader.readLine, "NOOP")
      assert.strictEqual(yield* reader.readLine, "QUIT")
      assert.strictEqual(yield* reader.readLine, "")
      assert.strictEqual(yield* reader.readLine, "")
      assert.strictEqual(transportFailure(yield* Effect.flip(reader.readLine)), "Closed")
    }))

  it.effect("a CR not before LF stays in the line; UTF-8 is decoded", () =>
    Effect.gen(function*() {
      const { reader } = setup([concat([bytes("A\rB\r\r\n"), new TextEncoder().encode("héllo\r\n")])])
      assert.strictEqual(yield* reader.readLine, "A\rB\r")
      assert.strictEqual(yield* reader.readLine, "héllo")
    }))

  it("any lines, any endings, split at any points", () =>
    fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(lineArb, fc.boolean()), { maxLength: 12 }),
        cutsArb,
        (lines, cuts) => {
          const wire = new TextEncoder().encode(lines.map(([l, crlf]) => l + (crlf ? "\r\n" : "\n")).join(""))
          const { reader, transport } = setup(split(wire, cuts))
          return Effect.runPromise(Effect.gen(function*() {
            for (const [line] of lines) assert.strictEqual(yield* reader.readLine, line)
            assert.isFalse(reader.hasBufferedLine())
            assert.strictEqual(transportFailure(yield* Effect.flip(reader.readLine)), "Closed")
            assert.strictEqual(transport.remaining(), 0)
          }))
        }
      ),
      propRuns
    ))

  describe("limit (counts the line ending)", () => {
    it.effect("a line of exactly the limit passes, one byte more fails, whatever the chunking", () =>
      Effect.gen(function*() {
        const exact = bytes("12345678\r\n") // 10 bytes
        const exactLf = bytes("123456789\n")
        const over = bytes("123456789\r\n")
        for (let i = 0; i <= exact.length; i++) {
          for (const line of [exact, exactLf]) {
            const { reader } = setup([...split(line, [i]), "NEXT\r\n"], { maxLineLength: 10 })
            assert.strictEqual(yield* reader.readLine, text(line).replace(/\r?\n$/, ""))
            assert.strictEqual(yield* reader.readLine, "NEXT")
          }
        }
        for (let i = 0; i <= over.length; i++) {
          const { reader } = setup(split(over, [i]), { maxLineLength: 10 })
          const e = yield* Effect.flip(reader.readLine)
          assert.strictEqual(e._tag, "LineTooLong")
          assert.deepStrictEqual(e, new LineReader.LineTooLong({ limit: 10 }))
        }
      }))

    it.effect("a later line over the limit fails after earlier lines were read", () =>
      Effect.gen(function*() {
        const { reader } = setup(["OK\r\n" + "x".repeat(20) + "\r\n"], { maxLineLength: 10 })
        assert.strictEqual(yield* reader.readLine, "OK")
        assert.strictEqual((yield* Effect.flip(reader.readLine))._tag, "LineTooLong")
      }))

    it.effect("megabytes without LF: fails once past the limit, without reading (or buffering) it all", () =>
      Effect.gen(function*() {
        const chunk = new Uint8Array(100).fill(0x61)
        const { reader, transport } = setup(Array.from({ length: 10_000 }, () => chunk), { maxLineLength: 1000 })
        assert.strictEqual((yield* Effect.flip(reader.readLine))._tag, "LineTooLong")
        assert.strictEqual(transport.reads(), 10) // 1000 bytes buffered: the line can't fit any more
        assert.strictEqual(transport.remaining(), 9_990)

        // one huge read: fails on the first chunk
        const huge = setup([new Uint8Array(4 << 20).fill(0x61), "\r\n"], { maxLineLength: 512 })
        assert.strictEqual((yield* Effect.flip(huge.reader.readLine))._tag, "LineTooLong")
        assert.strictEqual(huge.transport.reads(), 1)
      }))

    it.effect("a peer that never stops sending is cut off, not buffered (endless stream)", () =>
      Effect.gen(function*() {
        const chunk = new Uint8Array(1 << 16).fill(0x62)
        const { reader, transport } = setup([], { maxLineLength: 4096, end: false })
        transport.push(...Array.from({ length: 1000 }, () => chunk)) // 64 MiB on offer
        assert.strictEqual((yield* Effect.flip(reader.readLine))._tag, "LineTooLong")
        assert.strictEqual(transport.reads(), 1)
      }))
  })

  it.effect("a partial line waits for the peer (blocked read), which the test then releases", () =>
    Effect.gen(function*() {
      const { reader, transport } = setup(["EH"], { end: false })
      const fiber = yield* Effect.forkChild(reader.readLine)
      yield* transport.awaitBlocked // the second read, after "EH", waits for the peer
      assert.strictEqual(transport.reads(), 2)
      assert.isUndefined(fiber.pollUnsafe())
      transport.push("LO x\r\nQU")
      assert.strictEqual(yield* Fiber.join(fiber), "EHLO x")
      const next = yield* Effect.forkChild(reader.readLine)
      yield* transport.awaitBlocked
      transport.end()
      assert.strictEqual(transportFailure(yield* Effect.flip(Fiber.join(next))), "Closed")
      yield* transport.write("221 Bye\r\n")
      assert.strictEqual(transport.written(), "221 Bye\r\n")
    }))

  it.effect("EOF in the middle of a line is a TransportError Closed", () =>
    Effect.gen(function*() {
      const { reader } = setup(["HELO", " a"])
      assert.strictEqual(transportFailure(yield* Effect.flip(reader.readLine)), "Closed")
    }))

  it.effect("hasBufferedLine: only a whole buffered line counts; it never reads", () =>
    Effect.gen(function*() {
      const { reader, transport } = setup(["A\r\nB\r\nC", "\r\n"])
      assert.isFalse(reader.hasBufferedLine())
      assert.strictEqual(transport.reads(), 0)
      assert.strictEqual(yield* reader.readLine, "A")
      assert.strictEqual(transport.reads(), 1)
      assert.isTrue(reader.hasBufferedLine())
      assert.strictEqual(yield* reader.readLine, "B")
      assert.isFalse(reader.hasBufferedLine()) // "C" without its ending
      assert.strictEqual(yield* reader.readLine, "C")
      assert.strictEqual(transport.reads(), 2)
      assert.isFalse(reader.hasBufferedLine())
    }))

  it.effect("discardBuffered drops pipelined bytes (after STARTTLS) and says how many", () =>
    Effect.gen(function*() {
      const { reader } = setup(["STARTTLS\r\nEHLO evil\r\nMAIL FROM:<x>\r\n", "EHLO good\r\n"])
      assert.strictEqual(yield* reader.readLine, "STARTTLS")
      assert.strictEqual(reader.discardBuffered(), "EHLO evil\r\nMAIL FROM:<x>\r\n".length)
      assert.isFalse(reader.hasBufferedLine())
      assert.strictEqual(reader.discardBuffered(), 0)
      assert.strictEqual(yield* reader.readLine, "EHLO good")
    }))
})

describe("dataBody", () => {
  it.effect("streams the decoded body; bytes after the terminator are the next command", () =>
    Effect.gen(function*() {
      const { reader } = setup(["DATA\r\n", "Subject: hi\r\n\r\n..dot\r\nbye\r\n.\r\nQUIT\r\n"])
      assert.strictEqual(yield* reader.readLine, "DATA")
      const body = reader.dataBody(dataOptions())
      assert.strictEqual(yield* collect(body.stream), "Subject: hi\r\n\r\n.dot\r\nbye\r\n")
      assert.strictEqual(body.bytes(), "Subject: hi\r\n\r\n.dot\r\nbye\r\n".length)
      assert.isUndefined(body.violation())
      yield* body.drain // nothing left: reads nothing
      assert.isTrue(reader.hasBufferedLine())
      assert.strictEqual(yield* reader.readLine, "QUIT")
    }))

  it.effect("an empty body, and a body that is all pipelined commands after it", () =>
    Effect.gen(function*() {
      const { reader } = setup([".\r\nRSET\r\nQUIT\r\n"])
      const body = reader.dataBody(dataOptions())
      assert.strictEqual(yield* collect(body.stream), "")
      assert.strictEqual(yield* reader.readLine, "RSET")
      assert.strictEqual(yield* reader.readLine, "QUIT")
    }))

  it("any body, any chunking, with a pipelined command after it", () =>
    fc.assert(
      fc.asyncProperty(bodyArb, cutsArb, fc.constantFrom("allow", "normalize", "reject" as const), (input, cuts, policy) => {
        const wire = concat([bytes("DATA\r\n"), encode(input), bytes("NOOP\r\nQUIT\r\n")])
        const { reader, transport } = setup(split(wire, cuts))
        return Effect.runPromise(Effect.gen(function*() {
          assert.strictEqual(yield* reader.readLine, "DATA")
          const body = reader.dataBody(dataOptions({ bareLineEndings: policy }))
          const expected = text(normalizeBody(input))
          assert.strictEqual(yield* collect(body.stream), expected)
          assert.strictEqual(body.bytes(), expected.length)
          assert.isUndefined(body.violation())
          yield* body.drain
          assert.strictEqual(yield* reader.readLine, "NOOP")
          assert.strictEqual(yield* reader.readLine, "QUIT")
          assert.strictEqual(transport.remaining(), 0)
        }))
      }),
      propRuns
    ))

  it.effect("a smuggled LF '.' LF does not end the body; the real terminator does", () =>
    Effect.gen(function*() {
      const wire = "a\n.\nMAIL FROM:<evil>\r\n.\r\nQUIT\r\n"
      const allow = setup([wire]).reader
      assert.strictEqual(
        yield* collect(allow.dataBody(dataOptions({ bareLineEndings: "allow" })).stream),
        "a\n.\nMAIL FROM:<evil>\r\n"
      )
      assert.strictEqual(yield* allow.readLine, "QUIT")
      const normalize = setup([wire]).reader
      assert.strictEqual(
        yield* collect(normalize.dataBody(dataOptions({ bareLineEndings: "normalize" })).stream),
        "a\r\n.\r\nMAIL FROM:<evil>\r\n"
      )
      assert.strictEqual(yield* normalize.readLine, "QUIT")
    }))

  it.effect("\"reject\": 550 5.5.2 on a bare line ending; drain reads to the real end", () =>
    Effect.gen(function*() {
      const { reader } = setup(["line one\r\nbare\nlf\r\n", "more\r\n", ".\r\n", "QUIT\r\n"])
      const body = reader.dataBody(dataOptions({ bareLineEndings: "reject" }))
      assert.deepStrictEqual(smtpFailure(yield* Effect.flip(collect(body.stream))), [550, [5, 5, 2]])
      assert.strictEqual(body.violation(), LineReader.bareLineEndingError)
      yield* body.drain
      assert.strictEqual(yield* reader.readLine, "QUIT")
    }))

  it.effect("\"reject\": a consumer that ignores the stream still gets the violation once drained", () =>
    Effect.gen(function*() {
      const { reader } = setup(["ok\r\n", "a\rb\r\n", ".\r\nQUIT\r\n"])
      const body = reader.dataBody(dataOptions({ bareLineEndings: "reject" }))
      assert.isUndefined(body.violation())
      yield* body.drain
      assert.deepStrictEqual(smtpFailure(body.violation()), [550, [5, 5, 2]])
      assert.strictEqual(yield* reader.readLine, "QUIT")
    }))

  it.effect("maxBytes: 552 5.3.4, and drain still reads to the real end", () =>
    Effect.gen(function*() {
      const { reader } = setup(["0123456789", "abcdefgh\r\n", "..more\r\n.", "\r\nQUIT\r\n"])
      const body = reader.dataBody(dataOptions({ maxBytes: 10 }))
      assert.deepStrictEqual(smtpFailure(yield* Effect.flip(collect(body.stream))), [552, [5, 3, 4]])
      assert.deepStrictEqual(smtpFailure(body.violation()), [552, [5, 3, 4]])
      yield* body.drain
      assert.strictEqual(yield* reader.readLine, "QUIT")
      assert.strictEqual(body.bytes(), "0123456789abcdefgh\r\n.more\r\n".length)
    }))

  it.effect("maxBytes: a body of exactly maxBytes passes", () =>
    Effect.gen(function*() {
      const { reader } = setup(["0123456\r\n.\r\n"])
      const body = reader.dataBody(dataOptions({ maxBytes: 9 }))
      assert.strictEqual(yield* collect(body.stream), "0123456\r\n")
      assert.isUndefined(body.violation())
    }))

  it.effect("a consumer that stops early, then drain, leaves the reader right after the terminator", () =>
    Effect.gen(function*() {
      const { reader, transport } = setup(["first\r\n", "second\r\n", "\r\n.", ".x\r\n", ".\r", "\nNOOP\r\n", "QUIT\r\n"])
      const body = reader.dataBody(dataOptions())
      const firstOnly = yield* body.stream.pipe(Stream.take(1), Stream.runCollect)
      assert.deepStrictEqual(firstOnly.map(text), ["first\r\n"])
      assert.strictEqual(transport.reads(), 1)
      yield* body.drain
      assert.strictEqual(body.bytes(), "first\r\nsecond\r\n\r\n.x\r\n".length)
      assert.strictEqual(yield* reader.readLine, "NOOP")
      assert.strictEqual(yield* reader.readLine, "QUIT")
    }))

  it.effect("EOF inside the body is a TransportError Closed", () =>
    Effect.gen(function*() {
      const { reader } = setup(["no terminator\r\n", ".\n"])
      const body = reader.dataBody(dataOptions({ bareLineEndings: "allow" }))
      assert.strictEqual(transportFailure(yield* Effect.flip(collect(body.stream))), "Closed")
      assert.strictEqual(transportFailure(yield* Effect.flip(body.drain)), "Closed")
    }))
})

describe("chunkBody", () => {
  it("exactly n bytes across any chunking, raw (no dot-unstuffing); the rest is left for readLine", () =>
    fc.assert(
      fc.asyncProperty(bodyArb, cutsArb, (chunk, cuts) => {
        const wire = concat([chunk, bytes("BDAT 0 LAST\r\n")])
        const { reader } = setup(split(wire, cuts))
        return Effect.runPromise(Effect.gen(function*() {
          const body = reader.chunkBody(chunk.length, chunkOptions())
          assert.strictEqual(yield* collect(body.stream), text(chunk))
          assert.strictEqual(body.bytes(), chunk.length)
          yield* body.drain
          assert.strictEqual(yield* reader.readLine, "BDAT 0 LAST")
        }))
      }),
      propRuns
    ))

  it.effect("n = 0: an empty stream that reads nothing", () =>
    Effect.gen(function*() {
      const { reader, transport } = setup(["QUIT\r\n"])
      const body = reader.chunkBody(0, chunkOptions())
      assert.strictEqual(yield* collect(body.stream), "")
      yield* body.drain
      assert.strictEqual(transport.reads(), 0)
      assert.strictEqual(yield* reader.readLine, "QUIT")
    }))

  it.effect("after a command line in the same chunk, and two chunks in a row", () =>
    Effect.gen(function*() {
      const { reader } = setup(["BDAT 5\r\nab.\r\nBDAT 3 LAST\r\nxyzQUIT\r\n"])
      assert.strictEqual(yield* reader.readLine, "BDAT 5")
      assert.strictEqual(yield* collect(reader.chunkBody(5, chunkOptions()).stream), "ab.\r\n")
      assert.strictEqual(yield* reader.readLine, "BDAT 3 LAST")
      assert.strictEqual(yield* collect(reader.chunkBody(3, chunkOptions()).stream), "xyz")
      assert.strictEqual(yield* reader.readLine, "QUIT")
    }))

  it.effect("maxBytes: 552 5.3.4; drain reads the rest of the chunk; early stop + drain", () =>
    Effect.gen(function*() {
      const { reader } = setup(["0123", "456789", "abQUIT\r\n"])
      const body = reader.chunkBody(12, chunkOptions({ maxBytes: 5 }))
      assert.deepStrictEqual(smtpFailure(yield* Effect.flip(collect(body.stream))), [552, [5, 3, 4]])
      yield* body.drain
      assert.strictEqual(body.bytes(), 12)
      assert.strictEqual(yield* reader.readLine, "QUIT")

      const early = setup(["0123", "456789", "abNOOP\r\n"])
      const b2 = early.reader.chunkBody(12, chunkOptions())
      assert.deepStrictEqual((yield* b2.stream.pipe(Stream.take(1), Stream.runCollect)).map(text), ["0123"])
      yield* b2.drain
      assert.strictEqual(yield* early.reader.readLine, "NOOP")
    }))

  it.effect("EOF before n bytes is Closed", () =>
    Effect.gen(function*() {
      const { reader } = setup(["abc"])
      assert.strictEqual(transportFailure(yield* Effect.flip(collect(reader.chunkBody(4, chunkOptions()).stream))), "Closed")
    }))
})

describe("chunkBody of a text message (one decoder for every chunk)", () => {
  const textChunk = (decoder: DotDecoder, last: boolean): LineReader.TextChunk => ({
    decoder,
    last,
    lineTooLong: LineReader.lineTooLongError(decoder.maxLineLength)
  })

  it("the chunks of any body, cut anywhere, come out as one text under each policy; a CR at the very end is bare", () =>
    fc.assert(
      fc.asyncProperty(bodyArb, fc.nat({ max: 300 }), cutsArb, fc.constantFrom("allow", "normalize", "reject"), (body, at, cuts, policy) => {
        const first = body.subarray(0, at % (body.length + 1))
        const second = body.subarray(first.length)
        const wire = concat([first, second, bytes("NOOP\r\n")])
        const { reader } = setup(split(wire, cuts))
        return Effect.runPromise(Effect.gen(function*() {
          const decoder = new DotDecoder(policy, { stuffing: false })
          let got = ""
          for (const [part, last] of [[first, false], [second, true]] as const) {
            const chunk = reader.chunkBody(part.length, chunkOptions(), textChunk(decoder, last))
            got += yield* collect(chunk.stream).pipe(Effect.catchTag("SmtpError", () => Effect.succeed("")))
            yield* chunk.drain
            if (policy === "reject" && decoder.bareLineEndings > 0) assert.strictEqual(chunk.violation()?.code, 550)
          }
          const bare = /\r(?!\n)|(?<!\r)\n/.test(text(body))
          if (policy !== "reject" || !bare) {
            assert.strictEqual(got, policy === "normalize" ? text(body).replace(/\r\n|\r|\n/g, "\r\n") : text(body))
          }
          assert.strictEqual(decoder.bareLineEndings > 0, bare)
          assert.strictEqual(yield* reader.readLine, "NOOP")
        }))
      }),
      propRuns
    ))

  it.effect("a line over the limit: the chunk's verdict is 550 5.6.0, the rest still read", () =>
    Effect.gen(function*() {
      const { reader } = setup(["abcdef\r\nxy", "z\r\nQUIT\r\n"])
      const decoder = new DotDecoder("reject", { stuffing: false, maxLineLength: 5 })
      const chunk = reader.chunkBody(13, chunkOptions(), textChunk(decoder, true))
      assert.deepStrictEqual(smtpFailure(yield* Effect.flip(collect(chunk.stream))), [550, [5, 6, 0]])
      yield* chunk.drain
      assert.strictEqual(yield* reader.readLine, "QUIT")
      // The last line counts too, although no line ending closes it.
      const tail = setup(["ab\r\nabcdefQUIT\r\n"])
      const d2 = new DotDecoder("reject", { stuffing: false, maxLineLength: 5 })
      const c2 = tail.reader.chunkBody(10, chunkOptions(), textChunk(d2, true))
      yield* c2.drain
      assert.deepStrictEqual(c2.violation()?.enhancedCode, [5, 6, 0])
    }))

  it.effect("BDAT 0 LAST after a chunk ending in CR: that CR was bare", () =>
    Effect.gen(function*() {
      const { reader } = setup(["ab\rQUIT\r\n"])
      const decoder = new DotDecoder("normalize", { stuffing: false })
      assert.strictEqual(yield* collect(reader.chunkBody(3, chunkOptions(), textChunk(decoder, false)).stream), "ab")
      assert.strictEqual(yield* collect(reader.chunkBody(0, chunkOptions(), textChunk(decoder, true)).stream), "\r\n")
      assert.strictEqual(decoder.bareLineEndings, 1)
      assert.strictEqual(yield* reader.readLine, "QUIT")
    }))
})

describe("buffered input, over-long lines, line endings", () => {
  it.effect("buffered and bufferedStartsWith look at what is received, without reading", () =>
    Effect.gen(function*() {
      const { reader, transport } = setup(["auth plain xyz", "\r\nNOOP\r\n"])
      assert.strictEqual(reader.buffered(), 0)
      assert.isFalse(reader.bufferedStartsWith("AUTH "))
      assert.strictEqual(reader.nextLine(), undefined)
      yield* reader.fill
      assert.strictEqual(reader.buffered(), 14)
      assert.isTrue(reader.bufferedStartsWith("AUTH "))
      assert.isFalse(reader.bufferedStartsWith("AUTH PLAIN XYZ!"))
      assert.strictEqual(transport.reads(), 1)
      assert.strictEqual(yield* reader.readLine, "auth plain xyz")
      assert.strictEqual(reader.buffered(), 6)
    }))

  it.effect("skipLine drops the rest of a line however long, up to its LF; past its bound, LineTooLong", () =>
    Effect.gen(function*() {
      const { reader } = setup(["x".repeat(600), "y".repeat(600), "zz\nNOOP\r\n"], { maxLineLength: 512 })
      assert.strictEqual((yield* Effect.flip(reader.readLine))._tag, "LineTooLong")
      yield* reader.skipLine(10_000)
      assert.strictEqual(yield* reader.readLine, "NOOP")
      const bounded = setup(["x".repeat(600), "y".repeat(600), "zz\nNOOP\r\n"], { maxLineLength: 512 })
      assert.strictEqual((yield* Effect.flip(bounded.reader.skipLine(1000)))._tag, "LineTooLong")
    }))

  it.effect("lastLineCrlf tells CRLF from a lone LF", () =>
    Effect.gen(function*() {
      const { reader } = setup(["a\r\nb\n\r\n\n"])
      const seen: Array<[string, boolean]> = []
      for (let i = 0; i < 4; i++) seen.push([yield* reader.readLine, reader.lastLineCrlf()])
      assert.deepStrictEqual(seen, [["a", true], ["b", false], ["", true], ["", false]])
    }))
})

describe("body deadline (TestClock)", () => {
  const deadline = { idleMillis: 10_000, minBytesPerSecond: 100 } as const

  it.effect("a peer that sends nothing fails with Timeout after `idle`", () =>
    Effect.gen(function*() {
      for (const makeBody of [
        (r: LineReader.LineReader) => r.dataBody(dataOptions({ deadline })),
        (r: LineReader.LineReader) => r.chunkBody(10, chunkOptions({ deadline }))
      ]) {
        const { reader, transport } = setup([], { end: false })
        const fiber = yield* Effect.forkChild(collect(makeBody(reader).stream))
        yield* transport.awaitBlocked
        yield* TestClock.adjust("9999 millis")
        assert.isUndefined(fiber.pollUnsafe())
        yield* TestClock.adjust("1 millis")
        const exit = yield* Fiber.await(fiber)
        assert.isTrue(Exit.isFailure(exit))
        assert.strictEqual(transportFailure(yield* Effect.flip(Fiber.join(fiber))), "Timeout")
        assert.isFalse(transport.reading(), "the pending read was interrupted")
      }
    }))

  it.effect("the deadline starts when the body is first read from the peer, also for drain", () =>
    Effect.gen(function*() {
      const { reader, transport } = setup(["partial"], { end: false })
      const body = reader.dataBody(dataOptions({ deadline }))
      yield* TestClock.adjust("1 hour") // before the body is pulled: no deadline running
      const fiber = yield* Effect.forkChild(body.drain)
      yield* TestClock.adjust("9 seconds")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 second")
      assert.strictEqual(transportFailure(yield* Effect.flip(Fiber.join(fiber))), "Timeout")
      assert.strictEqual(transport.reads(), 2)
    }))

  for (const [label, perSecond] of [["at", 100], ["above", 250]] as const) {
    it.effect(`a peer sending ${label} minBytesPerSecond for far longer than idle is never cut off`, () =>
      Effect.gen(function*() {
        const line = "x".repeat(perSecond - 2) + "\r\n"
        const seconds = 120
        const { reader } = setup([
          ...Array.from({ length: seconds }, () => Scripted.after("1 second", line)),
          Scripted.after("1 second", ".\r\nQUIT\r\n")
        ])
        const body = reader.dataBody(dataOptions({ deadline }))
        const fiber = yield* Effect.forkChild(collect(body.stream))
        yield* TestClock.adjust(`${seconds + 1} seconds`)
        assert.strictEqual((yield* Fiber.join(fiber)).length, seconds * perSecond)
        assert.strictEqual(yield* reader.readLine, "QUIT")
      }))
  }

  it.effect("a peer trickling slower than minBytesPerSecond is cut off; progress extends the deadline", () =>
    Effect.gen(function*() {
      // 1 byte per 25 ms (40 B/s) against 100 B/s: each byte buys 10 ms but costs 25 ms.
      // After k bytes the deadline is 10 s + 10k ms while byte k + 1 arrives at 25(k + 1) ms:
      // 666 bytes get in, and the body is cut off at 16.66 s. A fixed timeout would cut it off
      // at 10 s (400 bytes); an idle timer reset by every byte never would.
      const { reader } = setup(Array.from({ length: 10_000 }, () => Scripted.after("25 millis", "x")))
      const body = reader.dataBody(dataOptions({ deadline }))
      const fiber = yield* collect(body.stream).pipe(
        Effect.flatMap(() => Effect.die("the body should not end")),
        Effect.catchTag("TransportError", (e) => Effect.map(Clock.currentTimeMillis, (t) => [e.reason, t] as const)),
        Effect.forkChild
      )
      yield* TestClock.adjust("1 hour")
      assert.deepStrictEqual(yield* Fiber.join(fiber), ["Timeout", 16_660])
      assert.strictEqual(body.bytes(), 666)
    }))

  it.effect("minBytesPerSecond 0 is an idle timeout; an empty chunk neither extends nor breaks it", () =>
    Effect.gen(function*() {
      const { reader, transport } = setup([
        Scripted.after("5 seconds", "abc"),
        Scripted.after("1 second", new Uint8Array(0))
      ], { end: false })
      const body = reader.dataBody(dataOptions({ deadline: { idleMillis: 10_000, minBytesPerSecond: 0 } }))
      const fiber = yield* collect(body.stream).pipe(
        Effect.catchTag("TransportError", (e) => Effect.map(Clock.currentTimeMillis, (t) => [e.reason, t] as const)),
        Effect.forkChild
      )
      yield* TestClock.adjust("1 hour")
      assert.deepStrictEqual(yield* Fiber.join(fiber), ["Timeout", 15_000])
      assert.strictEqual(transport.reads(), 3)
    }))

  it.effect("credit from a burst is capped at `idle`", () =>
    Effect.gen(function*() {
      // 100 000 bytes at once would buy 1000 s at 100 B/s; then silence is cut off after 10 s.
      const { reader } = setup(["y".repeat(100_000)], { end: false })
      const body = reader.dataBody(dataOptions({ deadline }))
      const fiber = yield* collect(body.stream).pipe(
        Effect.catchTag("TransportError", (e) => Effect.map(Clock.currentTimeMillis, (t) => [e.reason, t] as const)),
        Effect.forkChild
      )
      yield* TestClock.adjust("1 hour")
      assert.deepStrictEqual(yield* Fiber.join(fiber), ["Timeout", 10_000])
    }))
})

describe("backpressure", () => {
  it.effect("the body stream reads from the transport only when pulled", () =>
    Effect.gen(function*() {
      const script = [...Array.from({ length: 10 }, (_, i) => `line ${i}\r\n`), ".\r\nQUIT\r\n"]
      const { reader, transport } = setup(script)
      const body = reader.dataBody(dataOptions())
      assert.strictEqual(transport.reads(), 0, "making a body reads nothing")
      const pull = yield* Stream.toPull(body.stream)
      assert.strictEqual(transport.reads(), 0, "opening the stream reads nothing")
      for (let i = 0; i < 10; i++) {
        const chunk = yield* pull
        assert.strictEqual(chunk.map(text).join(""), `line ${i}\r\n`)
        assert.strictEqual(transport.reads(), i + 1)
      }
      assert.strictEqual(transport.remaining(), 1)
      yield* Effect.flip(pull) // the end
      assert.strictEqual(transport.reads(), 11)
      assert.strictEqual(yield* reader.readLine, "QUIT")
    }))

  it.effect("a slow consumer holds the peer back: no read happens while it is busy", () =>
    Effect.gen(function*() {
      const { reader, transport } = setup(Array.from({ length: 100 }, () => "z".repeat(1000)), { end: false })
      const body = reader.chunkBody(1_000_000, chunkOptions({ deadline: { idleMillis: 3_600_000, minBytesPerSecond: 1 } }))
      const fiber = yield* body.stream.pipe(
        Stream.runForEach(() => Effect.sleep("1 second")),
        Effect.forkChild
      )
      yield* TestClock.adjust("10500 millis")
      assert.strictEqual(transport.reads(), 11) // one per second consumed, plus the chunk in hand
      assert.strictEqual(transport.remaining(), 89)
      yield* Fiber.interrupt(fiber)
    }))

  it.effect("readLine reads once for many buffered lines", () =>
    Effect.gen(function*() {
      const { reader, transport } = setup(["A\r\nB\r\nC\r\n", "D\r\n"])
      for (const l of ["A", "B", "C"]) assert.strictEqual(yield* reader.readLine, l)
      assert.strictEqual(transport.reads(), 1)
      assert.strictEqual(yield* reader.readLine, "D")
      assert.strictEqual(transport.reads(), 2)
    }))
})
