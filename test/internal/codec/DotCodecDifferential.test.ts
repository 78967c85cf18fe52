/**
 * The DATA codec against straightforward per-byte versions of itself: `DotDecoder` and
 * `DotEncoder` jump from CR to LF with indexOf and pass unchanged input through without a
 * copy; these references visit every byte. Same bytes out, same counts, for every input,
 * policy, start offset and split.
 */
import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { type BareLineEndingPolicy, DotDecoder, DotEncoder } from "../../../src/internal/codec/DotCodec.ts"
import { bytes, concat, text } from "../../support/bytes.ts"

const CR = 13
const LF = 10
const DOT = 46
const CRLF = Uint8Array.of(CR, LF)
const CR_ONLY = Uint8Array.of(CR)
const policies: ReadonlyArray<BareLineEndingPolicy> = ["allow", "normalize", "reject"]


// --- the per-byte reference decoder: a state machine visiting every byte ---

const LINE_START = 0
const MIDDLE = 1
const AFTER_CR = 2
const AFTER_DOT = 3
const AFTER_DOT_CR = 4
const AFTER_BARE = 5
const AFTER_BARE_DOT = 6
const DOT_ONLY = Uint8Array.of(DOT)

class ReferenceDecoder {
  private state = LINE_START
  private crFromEarlierChunk = false
  bareLineEndings = 0
  readonly policy: BareLineEndingPolicy
  constructor(policy: BareLineEndingPolicy) {
    this.policy = policy
  }

  decode(input: Uint8Array, start: number): { out: Array<Uint8Array>; consumed: number; done: boolean } {
    const out: Array<Uint8Array> = []
    let run = start
    const flush = (end: number) => {
      if (end > run) out.push(input.subarray(run, end))
    }
    const bare = (at: number) => {
      this.bareLineEndings++
      if (this.policy === "normalize") {
        flush(at)
        out.push(CRLF)
        run = at + 1
      }
    }
    const bareHeldCr = (i: number) => {
      if (this.crFromEarlierChunk) {
        this.crFromEarlierChunk = false
        this.bareLineEndings++
        out.push(this.policy === "normalize" ? CRLF : CR_ONLY)
      } else {
        bare(i - 1)
      }
    }
    for (let i = start; i < input.length; i++) {
      const b = input[i]!
      switch (this.state) {
        case LINE_START:
          if (b === DOT) {
            flush(i)
            run = i + 1
            this.state = AFTER_DOT
            continue
          }
          break
        case AFTER_DOT:
          if (b === CR) {
            this.state = AFTER_DOT_CR
            continue
          }
          break
        case AFTER_DOT_CR:
          if (b === LF) {
            this.state = LINE_START
            this.crFromEarlierChunk = false
            return { out, consumed: i + 1 - start, done: true }
          }
          bareHeldCr(i)
          if (this.policy === "normalize") {
            this.state = AFTER_BARE // this byte starts the normalised line: look at it again
            i--
            continue
          }
          break
        case AFTER_CR:
          if (b === LF) {
            if (this.crFromEarlierChunk) {
              this.crFromEarlierChunk = false
              out.push(CR_ONLY)
            }
            this.state = LINE_START
            continue
          }
          bareHeldCr(i)
          if (this.policy === "normalize") {
            this.state = AFTER_BARE
            i--
            continue
          }
          break
        case AFTER_BARE:
          if (b === DOT) {
            flush(i)
            run = i + 1
            this.state = AFTER_BARE_DOT
            continue
          }
          break
        case AFTER_BARE_DOT:
          if (b === CR || b === LF) out.push(DOT_ONLY)
          break
      }
      if (b === CR) {
        this.state = AFTER_CR
      } else if (b === LF) {
        bare(i)
        this.state = this.policy === "normalize" ? AFTER_BARE : MIDDLE
      } else {
        this.state = MIDDLE
      }
    }
    if (this.state === AFTER_CR || this.state === AFTER_DOT_CR) {
      if (!this.crFromEarlierChunk) {
        flush(input.length - 1)
        this.crFromEarlierChunk = true
      }
      run = input.length
    }
    flush(input.length)
    return { out, consumed: input.length - start, done: false }
  }
}

// --- the per-byte reference encoder ---

class ReferenceEncoder {
  private lineStart = true
  private afterCr = false
  private empty = true

  encode(input: Uint8Array): Uint8Array {
    const out: Array<number> = []
    for (const b of input) {
      this.empty = false
      if (this.afterCr) {
        this.afterCr = false
        out.push(LF)
        this.lineStart = true
        if (b === LF) continue
      }
      if (b === CR) {
        out.push(CR)
        this.afterCr = true
      } else if (b === LF) {
        out.push(CR, LF)
        this.lineStart = true
      } else {
        if (b === DOT && this.lineStart) out.push(DOT)
        out.push(b)
        this.lineStart = false
      }
    }
    return Uint8Array.from(out)
  }

  end(): Uint8Array {
    const tail: Array<number> = []
    if (this.afterCr) {
      tail.push(LF)
      this.afterCr = false
      this.lineStart = true
    }
    if (!this.lineStart && !this.empty) tail.push(CR, LF)
    tail.push(DOT, CR, LF)
    return Uint8Array.from(tail)
  }
}

// --- inputs ---

/** `input` cut at `cuts` (modulo length + 1), empty pieces included. */
const split = (input: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = cuts.map((c) => c % (input.length + 1)).sort((a, b) => a - b)
  const chunks: Array<Uint8Array> = []
  let prev = 0
  for (const p of [...points, input.length]) {
    chunks.push(input.slice(prev, p))
    prev = p
  }
  return chunks
}

// Bytes biased towards the ones that matter, and a few "words" that make lines and terminators.
const byteArb = fc.oneof(
  { arbitrary: fc.constantFrom(CR, LF, DOT), weight: 4 },
  { arbitrary: fc.constantFrom(65, 0, 255, 0x80), weight: 2 },
  { arbitrary: fc.integer({ min: 0, max: 255 }), weight: 1 }
)
const pieceArb = fc.oneof(
  { arbitrary: byteArb.map((b) => [b]), weight: 4 },
  { arbitrary: fc.constantFrom("\r\n", "\r\n.", "\r\n.\r\n", "\r\n..", ".\r\n", "\n.\n", "\r.\r", "abcdefgh"), weight: 2 },
  { arbitrary: fc.nat({ max: 300 }).map((n) => "x".repeat(n)), weight: 1 }
).map((p) => (typeof p === "string" ? Array.from(bytes(p)) : p))
const bodyArb = fc.array(pieceArb, { maxLength: 60 }).map((ps) => Uint8Array.from(ps.flat()))
const cutsArb = fc.array(fc.nat({ max: 100_000 }), { maxLength: 30 })
const offsetArb = fc.array(fc.nat({ max: 5 }), { minLength: 1, maxLength: 4 })

interface Step {
  readonly out: string
  readonly consumed: number
  readonly done: boolean
  readonly bare: number
}

/**
 * Feeds `chunks` to a decoder as LineReader does: each at an offset inside a bigger buffer,
 * until done. Records every call (its output concatenated: slices may be cut differently).
 */
const run = (
  decoder: { decode: (input: Uint8Array, start: number) => { out: Array<Uint8Array>; consumed: number; done: boolean }; bareLineEndings: number },
  chunks: ReadonlyArray<Uint8Array>,
  offsets: ReadonlyArray<number>
): Array<Step> => {
  const steps: Array<Step> = []
  for (let k = 0; k < chunks.length; k++) {
    const offset = offsets[k % offsets.length]!
    const buf = new Uint8Array(offset + chunks[k]!.length).fill(DOT)
    buf.set(chunks[k]!, offset)
    const r = decoder.decode(buf, offset)
    steps.push({ out: text(concat(r.out)), consumed: r.consumed, done: r.done, bare: decoder.bareLineEndings })
    if (r.done) break
  }
  return steps
}

describe("DotDecoder against the per-byte reference", () => {
  it("same output, consumption, end and bare count for every call, whatever the split", () => {
    fc.assert(
      fc.property(bodyArb, cutsArb, offsetArb, fc.constantFrom(...policies), (input, cuts, offsets, policy) => {
        const chunks = split(input, cuts)
        assert.deepStrictEqual(
          run(new DotDecoder(policy), chunks, offsets),
          run(new ReferenceDecoder(policy), chunks, offsets)
        )
      }),
      { numRuns: 5000 }
    )
  })

  it("same results for every 1- and 2-way split of random bodies", () => {
    fc.assert(
      fc.property(fc.array(byteArb, { maxLength: 24 }).map((a) => Uint8Array.from(a)), (input) => {
        for (const policy of policies) {
          for (let i = 0; i <= input.length; i++) {
            for (let j = i; j <= input.length; j++) {
              const chunks = split(input, [i, j])
              assert.deepStrictEqual(run(new DotDecoder(policy), chunks, [0, 2]), run(new ReferenceDecoder(policy), chunks, [0, 2]))
            }
          }
        }
      }),
      { numRuns: 200 }
    )
  })

  it("decoded slices alias the input, and nothing outside [start, end) is read", () => {
    const decoder = new DotDecoder("allow")
    const buf = bytes("..junk..a\r\n..b\r\nc\n\r\n.\r\n")
    const r = decoder.decode(buf, 8)
    assert.isTrue(r.done)
    assert.strictEqual(r.consumed, buf.length - 8)
    assert.strictEqual(text(concat(r.out)), "a\r\n.b\r\nc\n\r\n")
    for (const o of r.out) assert.strictEqual(o.buffer, buf.buffer)
  })

  it("stays linear on bodies full of bare CRs or bare LFs (no rescans)", () => {
    const size = 2 << 20
    for (const unit of ["a\r", "\r", "a\n", "\n", "\r\r\n", "x".repeat(77) + "\r\n"]) {
      const body = new Uint8Array(size)
      const u = bytes(unit)
      for (let i = 0; i + u.length <= size; i += u.length) body.set(u, i)
      for (const policy of policies) {
        const started = performance.now()
        const r = new DotDecoder(policy).decode(body, 0)
        const ms = performance.now() - started
        assert.isFalse(r.done)
        // A rescan per line would take minutes; linear is well under a second even when slow.
        assert.isBelow(ms, 5000, `${JSON.stringify(unit)} ${policy}: ${ms} ms`)
      }
    }
  })
})

describe("DotEncoder against the per-byte reference", () => {
  it("same bytes for every call and the same end, whatever the split", () => {
    fc.assert(
      fc.property(bodyArb, cutsArb, (input, cuts) => {
        const chunks = split(input, cuts)
        const fast = new DotEncoder()
        const ref = new ReferenceEncoder()
        for (const c of chunks) assert.strictEqual(text(fast.encode(c)), text(ref.encode(c)))
        assert.strictEqual(text(fast.end()), text(ref.end()))
      }),
      { numRuns: 5000 }
    )
  })

  it("returns the input itself when nothing changes, a copy otherwise (the input is never modified)", () => {
    const e = new DotEncoder()
    const clean = bytes("a\r\nb\r\n")
    assert.strictEqual(e.encode(clean), clean)
    const lf = bytes("c\nd")
    const before = text(lf)
    const out = e.encode(lf)
    assert.notStrictEqual(out, lf)
    assert.strictEqual(text(out), "c\r\nd")
    assert.strictEqual(text(lf), before)
    assert.strictEqual(text(e.end()), "\r\n.\r\n")
  })

  it("grows its output when a body needs many changes (every byte an LF or a leading dot)", () => {
    for (const unit of ["\n", "\r", ".\n", "\n."]) {
      const input = bytes(unit.repeat(5000))
      const fast = new DotEncoder()
      const ref = new ReferenceEncoder()
      assert.strictEqual(text(fast.encode(input)), text(ref.encode(input)))
      assert.strictEqual(text(fast.end()), text(ref.end()))
    }
  })

  it("stays linear on bodies full of bare CRs or bare LFs", () => {
    const size = 2 << 20
    for (const unit of ["a\r", "\r", "a\n", "\n", "x".repeat(77) + "\r\n"]) {
      const body = new Uint8Array(size)
      const u = bytes(unit)
      for (let i = 0; i + u.length <= size; i += u.length) body.set(u, i)
      const started = performance.now()
      new DotEncoder().encode(body)
      const ms = performance.now() - started
      assert.isBelow(ms, 5000, `${JSON.stringify(unit)}: ${ms} ms`)
    }
  })
})
