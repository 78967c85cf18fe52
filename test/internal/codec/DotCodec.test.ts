import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { type BareLineEndingPolicy, DotDecoder, DotEncoder } from "../../../src/internal/codec/DotCodec.ts"
import { bytes, concat, normalizeBody, text } from "../../support/bytes.ts"

const CR = 13
const LF = 10
const DOT = 46
const policies: ReadonlyArray<BareLineEndingPolicy> = ["allow", "normalize", "reject"]


/** `input` cut at `cuts` (taken modulo length + 1, so any list of numbers is a valid split). */
const split = (input: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((c) => c % (input.length + 1)))].sort((a, b) => a - b)
  const chunks: Array<Uint8Array> = []
  let prev = 0
  for (const p of [...points, input.length]) {
    chunks.push(input.slice(prev, p))
    prev = p
  }
  return chunks
}
const oneByteChunks = (input: Uint8Array): Array<Uint8Array> => Array.from(input, (b) => Uint8Array.of(b))

interface Decoded {
  readonly out: string
  /** Input bytes consumed up to and including the terminator (or all of them when not done). */
  readonly consumed: number
  readonly done: boolean
  readonly bare: number
}

/**
 * Feeds chunks to one decoder until it reports done. Every other chunk is placed at an
 * offset inside a bigger buffer (as LineReader does with `decode(buf, pos)`), and the
 * decoded slices are copied at once, so later chunks can't change what they alias.
 */
const decodeChunks = (policy: BareLineEndingPolicy, chunks: ReadonlyArray<Uint8Array>): Decoded => {
  const decoder = new DotDecoder(policy)
  const out: Array<Uint8Array> = []
  let consumed = 0
  for (let k = 0; k < chunks.length; k++) {
    const chunk = chunks[k]!
    const offset = k % 2 === 0 ? 0 : 3
    const buf = new Uint8Array(offset + chunk.length).fill(DOT)
    buf.set(chunk, offset)
    const r = decoder.decode(buf, offset)
    assert.isTrue(r.consumed >= 0 && r.consumed <= chunk.length)
    for (const o of r.out) out.push(o.slice())
    consumed += r.consumed
    if (r.done) return { out: text(concat(out)), consumed, done: true, bare: decoder.bareLineEndings }
    assert.strictEqual(r.consumed, chunk.length, "a chunk without the terminator is consumed whole")
  }
  return { out: text(concat(out)), consumed, done: false, bare: decoder.bareLineEndings }
}
const decode = (policy: BareLineEndingPolicy, s: string | Uint8Array): Decoded =>
  decodeChunks(policy, [typeof s === "string" ? bytes(s) : s])

const encodeChunks = (chunks: ReadonlyArray<Uint8Array>): Uint8Array => {
  const encoder = new DotEncoder()
  return concat([...chunks.map((c) => encoder.encode(c)), encoder.end()])
}

/**
 * A whole-buffer reference of RFC 5321 4.5.2 with the bare line ending policies: a line
 * starts only at the beginning or after a real CRLF; there "." CRLF ends the body and any
 * other leading "." is dropped. Under "normalize" a bare line ending made into CRLF starts a
 * line too, where a leading "." is dropped unless a line break follows it (then the line is
 * just the dot, which stays). A CR or such a dot whose successor is not yet known is held back.
 */
const reference = (policy: BareLineEndingPolicy, input: Uint8Array): Decoded => {
  const out: Array<number> = []
  let bare = 0
  let lineStart = true
  let bareStart = false
  const n = input.length
  const result = (consumed: number, done: boolean): Decoded => ({
    out: text(Uint8Array.from(out)),
    consumed,
    done,
    bare
  })
  for (let i = 0; i < n;) {
    const b = input[i]!
    if (lineStart && b === DOT) {
      if (input[i + 1] === CR && input[i + 2] === LF) return result(i + 3, true)
      i++
      lineStart = false
      continue
    }
    lineStart = false
    if (bareStart && b === DOT) {
      const next = input[i + 1]
      if (next === undefined) break // held back
      if (next !== CR && next !== LF) {
        i++ // a stuffing dot
        bareStart = false
        continue
      }
    }
    bareStart = false
    if (b === CR && i + 1 === n) break // held back
    if (b === CR && input[i + 1] === LF) {
      out.push(CR, LF)
      i += 2
      lineStart = true
    } else if (b === CR || b === LF) {
      bare++
      if (policy === "normalize") {
        out.push(CR, LF)
        bareStart = true
      } else {
        out.push(b)
      }
      i++
    } else {
      out.push(b)
      i++
    }
  }
  return result(n, false)
}

// Bytes biased towards the ones that matter: CR, LF, ".", plus anything else.
const byteArb = fc.oneof(
  { arbitrary: fc.constantFrom(CR, LF, DOT), weight: 3 },
  { arbitrary: fc.constantFrom(65, 0, 255), weight: 1 },
  { arbitrary: fc.integer({ min: 0, max: 255 }), weight: 1 }
)
const bodyArb = fc.array(byteArb, { maxLength: 80 }).map((a) => Uint8Array.from(a))
const cutsArb = fc.array(fc.nat({ max: 10_000 }), { maxLength: 8 })
const chunkingArb = fc.oneof(
  cutsArb.map((cuts) => (b: Uint8Array) => split(b, cuts)),
  fc.constant(oneByteChunks)
)
const policyArb = fc.constantFrom(...policies)
const runs = { numRuns: 500 }

const containsTerminator = (b: Uint8Array): boolean =>
  (b[0] === DOT && b[1] === CR && b[2] === LF) || text(b).includes("\r\n.\r\n")

describe("DotEncoder", () => {
  it.each([
    ["", ".\r\n"],
    ["a", "a\r\n.\r\n"],
    ["a\r\n", "a\r\n.\r\n"],
    [".", "..\r\n.\r\n"],
    [".\r\n", "..\r\n.\r\n"],
    ["a\n.b", "a\r\n..b\r\n.\r\n"],
    ["a\r.b", "a\r\n..b\r\n.\r\n"],
    ["\r", "\r\n.\r\n"],
    ["\n", "\r\n.\r\n"],
    ["\r\r\n", "\r\n\r\n.\r\n"],
    ["a.b\r\n..\r\n", "a.b\r\n...\r\n.\r\n"]
  ])("encodes %j as %j", (input, expected) => {
    assert.strictEqual(text(encodeChunks([bytes(input)])), expected)
  })

  it("keeps state across chunks (CR | LF, CR | '.', '.' at a chunk start after CRLF)", () => {
    assert.strictEqual(text(encodeChunks([bytes("a\r"), bytes("\nb")])), "a\r\nb\r\n.\r\n")
    assert.strictEqual(text(encodeChunks([bytes("a\r"), bytes(".b")])), "a\r\n..b\r\n.\r\n")
    assert.strictEqual(text(encodeChunks([bytes("a\r\n"), bytes(".")])), "a\r\n..\r\n.\r\n")
    assert.strictEqual(text(encodeChunks([bytes("a\r"), new Uint8Array(0), bytes("\n")])), "a\r\n.\r\n")
    assert.strictEqual(text(encodeChunks([new Uint8Array(0), new Uint8Array(0)])), ".\r\n")
  })

  it("normalizeBody: lone CR and LF become CRLF, a final CRLF is added to a non-empty body", () => {
    assert.strictEqual(text(normalizeBody(bytes(""))), "")
    assert.strictEqual(text(normalizeBody(bytes("a"))), "a\r\n")
    assert.strictEqual(text(normalizeBody(bytes("a\rb\nc\r\n"))), "a\r\nb\r\nc\r\n")
    assert.strictEqual(text(normalizeBody(bytes("\r\r\n"))), "\r\n\r\n")
    assert.strictEqual(text(normalizeBody(bytes("."))), ".\r\n")
  })

  it("encoded bodies only contain CRLF pairs, and every line starting with '.' is stuffed", () => {
    fc.assert(
      fc.property(bodyArb, cutsArb, (input, cuts) => {
        const enc = text(encodeChunks(split(input, cuts)))
        assert.isTrue(enc.endsWith(".\r\n"))
        const body = enc.slice(0, -3)
        assert.notMatch(body, /\r(?!\n)|(?<!\r)\n/)
        assert.isTrue(body === "" || body.endsWith("\r\n"))
        for (const line of body.split("\r\n").slice(0, -1)) {
          if (line.startsWith(".")) assert.isTrue(line.startsWith(".."), JSON.stringify(line))
        }
      }),
      runs
    )
  })
})

describe("DotDecoder", () => {
  it("round trip: decoding the encoder's output gives normalizeBody(input), ends exactly at the terminator", () => {
    fc.assert(
      fc.property(bodyArb, cutsArb, chunkingArb, policyArb, (input, encodeCuts, chunking, policy) => {
        const encoded = encodeChunks(split(input, encodeCuts))
        const r = decodeChunks(policy, chunking(encoded))
        assert.deepStrictEqual(r, {
          out: text(normalizeBody(input)),
          consumed: encoded.length,
          done: true,
          bare: 0
        })
      }),
      runs
    )
  })

  it("never finds a terminator the encoder did not write: trailing bytes stay unconsumed", () => {
    fc.assert(
      fc.property(bodyArb, bodyArb, chunkingArb, policyArb, (input, trailing, chunking, policy) => {
        const encoded = encodeChunks([input])
        const r = decodeChunks(policy, chunking(concat([encoded, trailing])))
        assert.isTrue(r.done)
        assert.strictEqual(r.consumed, encoded.length)
        assert.strictEqual(r.out, text(normalizeBody(input)))
      }),
      runs
    )
  })

  it("never reports done for input without CRLF '.' CRLF (nor a leading '.' CRLF)", () => {
    fc.assert(
      fc.property(
        bodyArb.filter((b) => !containsTerminator(b)),
        chunkingArb,
        policyArb,
        (input, chunking, policy) => {
          const r = decodeChunks(policy, chunking(input))
          assert.isFalse(r.done)
          assert.strictEqual(r.consumed, input.length)
        }
      ),
      runs
    )
  })

  it("agrees with a whole-buffer reference on any bytes, whatever the chunking", () => {
    fc.assert(
      fc.property(bodyArb, chunkingArb, policyArb, (input, chunking, policy) => {
        assert.deepStrictEqual(decodeChunks(policy, chunking(input)), reference(policy, input))
      }),
      { numRuns: 2000 }
    )
  })

  it("gives the same result for every 1-, 2- and 3-way split of samples", () => {
    const samples = [
      "a\r\n..b\r\n.\r\nNOOP\r\n",
      "..\r\n.\r\r\n.\r\n",
      "x\n.\ny\r.\r\nz\r\n.\rw\r\n.\r\nQUIT",
      "\r\r\n.\r\n",
      ".\r\n",
      ".x\r\n.\r\n"
    ]
    for (const s of samples) {
      const input = bytes(s)
      for (const policy of policies) {
        const whole = decode(policy, input)
        assert.deepStrictEqual(whole, reference(policy, input), `${JSON.stringify(s)} ${policy}`)
        assert.deepStrictEqual(decodeChunks(policy, oneByteChunks(input)), whole)
        for (let i = 0; i <= input.length; i++) {
          assert.deepStrictEqual(decodeChunks(policy, split(input, [i])), whole, `${JSON.stringify(s)} at ${i}`)
          for (let j = i; j <= input.length; j++) {
            assert.deepStrictEqual(decodeChunks(policy, split(input, [i, j])), whole)
          }
        }
      }
    }
  })

  it("splits between CR and LF of the terminator, and between '.' and CR", () => {
    for (const policy of policies) {
      assert.deepStrictEqual(decodeChunks(policy, [bytes("a\r"), bytes("\n.\r"), bytes("\nNOOP")]), {
        out: "a\r\n",
        consumed: 6,
        done: true,
        bare: 0
      })
      assert.deepStrictEqual(decodeChunks(policy, [bytes("a\r\n."), bytes("\r\n")]), {
        out: "a\r\n",
        consumed: 6,
        done: true,
        bare: 0
      })
      // "." CR | x: the CR turns out to be bare after the chunk boundary
      const bareCr = decodeChunks(policy, [bytes("a\r\n."), bytes("\r"), bytes("x\r\n.\r\n")])
      assert.strictEqual(bareCr.out, policy === "normalize" ? "a\r\n\r\nx\r\n" : "a\r\n\rx\r\n")
      assert.strictEqual(bareCr.bare, 1)
      assert.isTrue(bareCr.done)
      // CR | CR | LF: only the first CR is bare
      const crcr = decodeChunks(policy, [bytes("a\r"), bytes("\r"), bytes("\n.\r\n")])
      assert.strictEqual(crcr.out, policy === "normalize" ? "a\r\n\r\n" : "a\r\r\n")
      assert.strictEqual(crcr.bare, 1)
      assert.isTrue(crcr.done)
    }
  })

  it("holds back a trailing CR until the next chunk says what it is", () => {
    const decoder = new DotDecoder("allow")
    const r1 = decoder.decode(bytes("ab\r"))
    assert.strictEqual(text(concat(r1.out)), "ab")
    assert.strictEqual(r1.consumed, 3)
    const r2 = decoder.decode(new Uint8Array(0))
    assert.deepStrictEqual([r2.out.length, r2.consumed, r2.done], [0, 0, false])
    const r3 = decoder.decode(bytes("c"))
    assert.strictEqual(text(concat(r3.out)), "\rc")
    assert.strictEqual(decoder.bareLineEndings, 1)
  })

  describe("dot-unstuffing", () => {
    it.each(policies)("%s", (policy) => {
      assert.deepStrictEqual(decode(policy, ".\r\n"), { out: "", consumed: 3, done: true, bare: 0 })
      assert.deepStrictEqual(decode(policy, ".\r\nMAIL FROM:<a@b>\r\n"), { out: "", consumed: 3, done: true, bare: 0 })
      assert.deepStrictEqual(decode(policy, "..x\r\n.\r\n"), { out: ".x\r\n", consumed: 8, done: true, bare: 0 })
      assert.deepStrictEqual(decode(policy, ".x\r\n.\r\n"), { out: "x\r\n", consumed: 7, done: true, bare: 0 })
      assert.deepStrictEqual(decode(policy, "a\r\n..b\r\n...\r\n..\r\n.\r\n"), {
        out: "a\r\n.b\r\n..\r\n.\r\n",
        consumed: 20,
        done: true,
        bare: 0
      })
      // a "." not at a line start is kept
      assert.deepStrictEqual(decode(policy, "a.\r\nb..c\r\n.\r\n"), {
        out: "a.\r\nb..c\r\n",
        consumed: 13,
        done: true,
        bare: 0
      })
      // "..\r\n" is a stuffed "." line, not the end
      const stuffed = decode(policy, "..\r\n")
      assert.deepStrictEqual([stuffed.out, stuffed.done], [".\r\n", false])
    })
  })

  describe("SMTP smuggling: only CRLF '.' CRLF ends a message", () => {
    // [pattern, bare line endings in it, "allow"/"reject" output, "normalize" output]
    const patterns: ReadonlyArray<readonly [string, number, string, string]> = [
      ["\n.\n", 2, "\n.\n", "\r\n.\r\n"],
      ["\n.\r\n", 1, "\n.\r\n", "\r\n.\r\n"],
      ["\r.\r\n", 1, "\r.\r\n", "\r\n.\r\n"],
      ["\r.\r", 2, "\r.\r", "\r\n.\r\n"],
      ["\r.\n", 2, "\r.\n", "\r\n.\r\n"],
      ["\n.\r", 2, "\n.\r", "\r\n.\r\n"],
      ["\r\n.\n", 1, "\r\n\n", "\r\n\r\n"], // the "." follows a real CRLF: unstuffed
      ["\r\n.\r", 1, "\r\n\r", "\r\n\r\n"],
      ["\r\n.\r\r\n", 1, "\r\n\r\r\n", "\r\n\r\n\r\n"],
      ["\n\r\n.\n", 2, "\n\r\n\n", "\r\n\r\n\r\n"],
      ["\r\r\n.\n", 2, "\r\r\n\n", "\r\n\r\n\r\n"],
      ["\r\n\x00.\r\n", 0, "\r\n\x00.\r\n", "\r\n\x00.\r\n"],
      ["\r\n .\r\n", 0, "\r\n .\r\n", "\r\n .\r\n"],
      ["\r\n..\r\n", 0, "\r\n.\r\n", "\r\n.\r\n"]
    ]
    const before = "Subject: x"
    const after = "MAIL FROM:<evil@x>"
    for (const [pattern, bareCount, kept, normalized] of patterns) {
      it(`${JSON.stringify(pattern)} does not end the message`, () => {
        const input = bytes(before + pattern + after + "\r\n.\r\nQUIT\r\n")
        const end = input.length - "QUIT\r\n".length
        for (const policy of policies) {
          for (const chunks of [[input], oneByteChunks(input), ...[...Array(input.length).keys()].map((i) => split(input, [i]))]) {
            const r = decodeChunks(policy, chunks)
            const out = before + (policy === "normalize" ? normalized : kept) + after + "\r\n"
            assert.deepStrictEqual(r, { out, consumed: end, done: true, bare: bareCount }, policy)
          }
          // and without the real terminator after it, never done
          const alone = decodeChunks(policy, oneByteChunks(bytes(before + pattern + after)))
          assert.isFalse(alone.done)
          // also at the very start of the body
          assert.isFalse(decodeChunks(policy, oneByteChunks(bytes(pattern + after))).done)
        }
      })
    }

    it("a bare '.' LF at the start of the body is not a terminator", () => {
      for (const policy of policies) {
        assert.deepStrictEqual(decode(policy, ".\nx"), {
          out: policy === "normalize" ? "\r\nx" : "\nx",
          consumed: 3,
          done: false,
          bare: 1
        })
      }
    })

    it("CR CR LF '.' CRLF ends at the real CRLF '.' CRLF inside it (the first CR is bare)", () => {
      // Bytes 1..5 are CRLF "." CRLF, so every RFC 5321 receiver ends the message there too:
      // there is no disagreement to smuggle through. Under "reject" the bare CR is counted.
      for (const policy of policies) {
        assert.deepStrictEqual(decode(policy, "x\r\r\n.\r\nMAIL"), {
          out: policy === "normalize" ? "x\r\n\r\n" : "x\r\r\n",
          consumed: 7,
          done: true,
          bare: 1
        })
      }
    })
  })
})

describe("DotDecoder under normalize: a bare line ending starts a line", () => {
  it("the stuffing dot after a bare LF or CR is removed; a line of just a dot keeps it", () => {
    const cases: ReadonlyArray<readonly [string, string]> = [
      ["a\n..b\r\n.\r\n", "a\r\n.b\r\n"],
      ["a\r..b\r\n.\r\n", "a\r\n.b\r\n"],
      ["a\n.b\r\n.\r\n", "a\r\nb\r\n"],
      ["a\n.\nb\r\n.\r\n", "a\r\n.\r\nb\r\n"],
      ["a\n.\r\nb\r\n.\r\n", "a\r\n.\r\nb\r\n"],
      ["a\r\n.\r.x\r\n.\r\n", "a\r\n\r\nx\r\n"],
      ["a\n\n..\r\n.\r\n", "a\r\n\r\n.\r\n"]
    ]
    // "allow" keeps the bytes: a bare LF is not a line end there, so the dot after it stays.
    assert.strictEqual(decode("allow", "a\n..b\r\n.\r\n").out, "a\n..b\r\n")
    for (const [input, out] of cases) {
      const b = bytes(input)
      for (const chunks of [[b], oneByteChunks(b), ...[...Array(b.length).keys()].map((i) => split(b, [i]))]) {
        const r = decodeChunks("normalize", chunks)
        assert.strictEqual(r.out, out, JSON.stringify(input))
        assert.isTrue(r.done)
        assert.strictEqual(r.consumed, b.length)
      }
    }
  })
})

/** Line lengths of `input` the simple way: any CR or LF ends a line; lines longer than `max`. */
const longLinesOf = (input: Uint8Array, max: number): number =>
  text(input).split(/[\r\n]/).filter((line) => line.length > max).length

describe("DotDecoder: line lengths", () => {
  const lineArb = fc.array(
    fc.oneof(
      { arbitrary: fc.constantFrom(CR, LF), weight: 1 },
      { arbitrary: fc.constantFrom(65, 0, 255, DOT), weight: 6 }
    ),
    { maxLength: 120 }
  ).map((a) => Uint8Array.from(a))

  it("text (no dot-stuffing): counts every line longer than the limit, the last one at finish, whatever the chunking", () => {
    fc.assert(
      fc.property(lineArb, chunkingArb, policyArb, fc.integer({ min: 0, max: 12 }), (input, chunking, policy, max) => {
        const decoder = new DotDecoder(policy, { stuffing: false, maxLineLength: max })
        for (const c of chunking(input)) assert.isFalse(decoder.decode(c).done)
        decoder.finish()
        assert.strictEqual(decoder.longLines, longLinesOf(input, max))
      }),
      runs
    )
  })

  it("DATA: lines of the body up to the terminator, the stuffing dot counted as sent", () => {
    for (const chunks of [(b: Uint8Array) => [b], oneByteChunks]) {
      const count = (s: string, max: number) => {
        const decoder = new DotDecoder("reject", { maxLineLength: max })
        for (const c of chunks(bytes(s))) if (decoder.decode(c).done) break
        return decoder.longLines
      }
      assert.strictEqual(count("aaaa\r\nbbb\r\n.\r\n", 3), 1)
      assert.strictEqual(count("aaa\r\nbbb\r\n.\r\n", 3), 0)
      assert.strictEqual(count("..ab\r\n.\r\n", 3), 1) // ".ab" after unstuffing, "..ab" on the wire
      assert.strictEqual(count("aaaa\nbbbb\rcccc\r\n.\r\n", 3), 3)
      assert.strictEqual(count("x".repeat(100) + "\r\n.\r\n" + "y".repeat(100), 99), 1) // nothing after the end
    }
  })
})

describe("DotDecoder without dot-stuffing (the text of a BDAT message)", () => {
  it("every byte is content and the input never ends; bare line endings follow the policy", () => {
    const input = "a\r\n.\r\n..b\nc\rd.\r\n"
    for (const policy of policies) {
      for (const chunks of [[bytes(input)], oneByteChunks(bytes(input))]) {
        const decoder = new DotDecoder(policy, { stuffing: false })
        const out: Array<Uint8Array> = []
        for (const c of chunks) {
          const r = decoder.decode(c)
          assert.isFalse(r.done)
          for (const o of r.out) out.push(o.slice())
        }
        out.push(...decoder.finish())
        assert.strictEqual(text(concat(out)), policy === "normalize" ? "a\r\n.\r\n..b\r\nc\r\nd.\r\n" : input)
        assert.strictEqual(decoder.bareLineEndings, 2)
      }
    }
  })

  it("finish: a CR held back at the very end was bare", () => {
    for (const policy of policies) {
      const decoder = new DotDecoder(policy, { stuffing: false })
      assert.strictEqual(text(concat(decoder.decode(bytes("x\r")).out)), "x")
      assert.strictEqual(decoder.bareLineEndings, 0)
      assert.strictEqual(text(concat(decoder.finish())), policy === "normalize" ? "\r\n" : "\r")
      assert.strictEqual(decoder.bareLineEndings, 1)
      // and a CRLF split across chunks is not
      const split = new DotDecoder(policy, { stuffing: false })
      const out = [...split.decode(bytes("y\r")).out, ...split.decode(bytes("\n")).out, ...split.finish()]
      assert.strictEqual(text(concat(out)), "y\r\n")
      assert.strictEqual(split.bareLineEndings, 0)
    }
  })
})
