/**
 * The client's body preparation: `inspect` (SIZE and 8-bit in one pass, four bytes at a
 * time) against per-byte references, and `writeDataBody` against the per-byte encoding of
 * the whole body, for any chunking, including pieces larger than its encoding window.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as fc from "fast-check"
import * as ClientBody from "../../../src/internal/client/Body.ts"
import { concat, text } from "../../support/bytes.ts"

const CR = 13
const LF = 10
const DOT = 46


// --- per-byte references ---

const referenceSize = (bytes: Uint8Array, finalCrlf: boolean): number => {
  let n = bytes.length
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!
    if ((b === LF && (i === 0 || bytes[i - 1] !== CR)) || (b === CR && bytes[i + 1] !== LF)) n++
  }
  const last = bytes[bytes.length - 1]
  if (finalCrlf && bytes.length > 0 && last !== LF && last !== CR) n += 2
  return n
}

const referenceEightBit = (bytes: Uint8Array): boolean => bytes.some((b) => b >= 0x80)

/** The whole body dot-encoded, a byte at a time, with its terminator. */
const referenceEncoding = (input: Uint8Array): Uint8Array => {
  const out: Array<number> = []
  let lineStart = true
  let afterCr = false
  for (const b of input) {
    if (afterCr) {
      afterCr = false
      out.push(LF)
      lineStart = true
      if (b === LF) continue
    }
    if (b === CR) {
      out.push(CR)
      afterCr = true
    } else if (b === LF) {
      out.push(CR, LF)
      lineStart = true
    } else {
      if (b === DOT && lineStart) out.push(DOT)
      out.push(b)
      lineStart = false
    }
  }
  if (afterCr) {
    out.push(LF)
    lineStart = true
  }
  if (!lineStart && input.length > 0) out.push(CR, LF)
  out.push(DOT, CR, LF)
  return Uint8Array.from(out)
}

// --- inputs ---

const byteArb = fc.oneof(
  { arbitrary: fc.constantFrom(CR, LF, DOT), weight: 4 },
  { arbitrary: fc.constantFrom(65, 9, 0, 0x7f, 0x80, 0xff), weight: 2 },
  { arbitrary: fc.integer({ min: 0, max: 255 }), weight: 1 }
)
const pieceArb = fc.oneof(
  { arbitrary: byteArb.map((b) => [b]), weight: 4 },
  { arbitrary: fc.nat({ max: 200 }).map((n) => Array<number>(n).fill(0x61)), weight: 1 },
  { arbitrary: fc.constantFrom([CR, LF], [CR, LF, DOT], [LF, DOT]), weight: 2 }
)
const bodyArb = fc.array(pieceArb, { maxLength: 60 }).map((ps) => Uint8Array.from(ps.flat()))
/** A body placed at an offset inside a bigger buffer, so that any alignment is seen. */
const placedArb = fc.tuple(bodyArb, fc.nat({ max: 7 })).map(([body, offset]) => {
  const buf = new Uint8Array(offset + body.length + 3).fill(0xff)
  buf.set(body, offset)
  return buf.subarray(offset, offset + body.length)
})

const split = (input: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = cuts.map((c) => c % (input.length + 1)).sort((a, b) => a - b)
  const chunks: Array<Uint8Array> = []
  let prev = 0
  for (const p of [...points, input.length]) {
    chunks.push(input.subarray(prev, p))
    prev = p
  }
  return chunks
}

/** Runs writeDataBody over `body` and returns what was written, write by write. */
const written = (body: ClientBody.Body) =>
  Effect.gen(function*() {
    const writes: Array<Uint8Array> = []
    yield* ClientBody.writeDataBody(body, (bytes) => Effect.sync(() => void writes.push(bytes)), Duration.minutes(1))
    return writes
  })

describe("ClientBody.inspect", () => {
  it("gives the per-byte size and 8-bit answer, at any alignment", () => {
    fc.assert(
      fc.property(placedArb, fc.boolean(), (bytes, finalCrlf) => {
        const facts = ClientBody.inspect(bytes, { finalCrlf })
        assert.deepStrictEqual(facts, { size: referenceSize(bytes, finalCrlf), eightBit: referenceEightBit(bytes) })
        assert.strictEqual(ClientBody.normalizedSize(bytes, { finalCrlf }), facts.size)
        assert.strictEqual(ClientBody.hasEightBit(bytes), facts.eightBit)
      }),
      { numRuns: 3000 }
    )
  })

  it("finds an 8-bit byte anywhere in a large body, and CR LF pairs across word boundaries", () => {
    const size = 100_003
    for (const at of [0, 1, 3, 4, 1023, 1024, 50_000, size - 1]) {
      const bytes = new Uint8Array(size).fill(0x61)
      bytes[at] = 0xc3
      assert.isTrue(ClientBody.hasEightBit(bytes), `at ${at}`)
      assert.isTrue(ClientBody.inspect(bytes, { finalCrlf: false }).eightBit, `at ${at}`)
      assert.isFalse(ClientBody.hasEightBit(bytes.subarray(0, at)), `before ${at}`)
    }
    for (const offset of [0, 1, 2, 3]) {
      const bytes = new Uint8Array(4096).fill(0x61).subarray(offset)
      for (let i = 0; i < bytes.length; i += 7) bytes[i] = i % 2 === 0 ? CR : LF
      for (let i = 3; i < bytes.length - 1; i += 11) bytes.set([CR, LF], i)
      assert.strictEqual(ClientBody.inspect(bytes, { finalCrlf: true }).size, referenceSize(bytes, true))
    }
  })
})

describe("ClientBody.prepareData", () => {
  it("declares the per-byte SIZE (final CRLF included), keeps the per-byte encoding, and tells an 8-bit body", () => {
    fc.assert(
      fc.property(placedArb, (bytes) => {
        const data = ClientBody.prepareData(bytes)
        assert.strictEqual(data.size, referenceSize(bytes, true))
        assert.strictEqual(text(data.wire!), text(referenceEncoding(bytes)))
        assert.strictEqual(data.eightBit, referenceEightBit(bytes))
      }),
      { numRuns: 3000 }
    )
  })

  it.effect("a large body is measured a window at a time: as it is when clean, encoded again when not", () =>
    Effect.gen(function*() {
      const line = new TextEncoder().encode("abcdefghijklmnopqrstuvwxyz".repeat(3) + "\r\n")
      const clean = new Uint8Array(1024 * 1024 + 3)
      for (let i = 0; i + line.length <= clean.length; i += line.length) clean.set(line, i)
      clean.fill(0x78, clean.length - 3) // an unterminated last line
      const dirty = clean.map((b, i) => (b === CR && i % 3 === 0 ? LF : b === 0x61 && i % 5 === 0 ? DOT : b))
      for (const bytes of [clean, dirty]) {
        const data = ClientBody.prepareData(bytes)
        assert.isUndefined(data.wire)
        assert.strictEqual(data.size, referenceSize(bytes, true))
        assert.strictEqual(data.tail !== undefined, bytes === clean)
        const writes: Array<Uint8Array> = []
        yield* ClientBody.writePreparedData(data, (b) => Effect.sync(() => void writes.push(b)), Duration.minutes(1))
        assert.strictEqual(text(concat(writes)), text(referenceEncoding(bytes)))
        for (const w of writes) assert.isAtMost(w.length, 512 * 1024)
      }
    }))
})

describe("ClientBody.writeDataBody", () => {
  it.effect("writes the per-byte encoding of the whole body, whatever the chunking", () =>
    Effect.gen(function*() {
      const samples = fc.sample(fc.tuple(bodyArb, fc.array(fc.nat({ max: 10_000 }), { maxLength: 12 })), 1500)
      for (const [input, cuts] of samples) {
        const expected = text(referenceEncoding(input))
        assert.strictEqual(text(concat(yield* written(input))), expected)
        assert.strictEqual(text(concat(yield* written(Stream.fromIterable(split(input, cuts))))), expected)
      }
    }))

  it.effect("a large body goes out in windows: the same bytes, a bounded write size, clean text not copied", () =>
    Effect.gen(function*() {
      const line = new TextEncoder().encode("abcdefghijklmnopqrstuvwxyz".repeat(3) + "\r\n")
      const clean = new Uint8Array(3 * 1024 * 1024 + 5)
      for (let i = 0; i + line.length <= clean.length; i += line.length) clean.set(line, i)
      clean.fill(0x78, clean.length - 5) // an unterminated last line
      const writes = yield* written(clean)
      assert.isAbove(writes.length, 4)
      for (const w of writes) assert.isAtMost(w.length, 512 * 1024)
      assert.strictEqual(text(concat(writes)), text(referenceEncoding(clean)))
      // every write but the terminator's is a view of the body itself
      for (const w of writes.slice(0, -2)) assert.strictEqual(w.buffer, clean.buffer)

      // LF line endings (two per line) and leading dots: copies, a window at a time
      const lf = clean.map((b) => (b === CR ? LF : b === 0x61 ? DOT : b))
      const lfWrites = yield* written(Stream.fromIterable([lf.subarray(0, 7), lf.subarray(7)]))
      for (const w of lfWrites) assert.isAtMost(w.length, 2 * 512 * 1024)
      assert.strictEqual(text(concat(lfWrites)), text(referenceEncoding(lf)))
    }))
})
