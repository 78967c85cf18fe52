import { assert, describe, it } from "@effect/vitest"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as fc from "fast-check"
import * as EnhancedCode from "../src/EnhancedCode.ts"
import * as Reply from "../src/Reply.ts"
import * as SmtpError from "../src/SmtpError.ts"

const parseOk = (wire: string) => {
  const r = Reply.parse(wire)
  if (Result.isFailure(r)) throw new Error(`expected ${JSON.stringify(wire)} to parse: ${r.failure.message}`)
  return r.success
}
const parseError = (wire: string) => {
  const r = Reply.parse(wire)
  assert.isTrue(Result.isFailure(r), `expected ${JSON.stringify(wire)} to be refused`)
  return Result.isFailure(r) ? r.failure.message : ""
}

const code = fc.integer({ min: 2, max: 5 }).chain((a) =>
  fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 9 })).map(([b, c]) => a * 100 + b * 10 + c)
)
// Reply text: printable ASCII that does not itself start like an enhanced code.
const text = fc.stringMatching(/^[ -~]{0,60}$/).filter((t) => !/^[245]\.\d/.test(t))
const reply = fc.record({
  code,
  enhanced: fc.option(fc.tuple(fc.integer({ min: 0, max: 999 }), fc.integer({ min: 0, max: 999 })), { nil: undefined }),
  lines: fc.array(text, { minLength: 1, maxLength: 6 })
}).map(({ code, enhanced, lines }) => {
  const cls = Math.floor(code / 100)
  return new Reply.Reply(
    enhanced !== undefined && cls !== 3
      ? { code, enhancedCode: [cls as 2 | 4 | 5, enhanced[0], enhanced[1]], lines: [lines[0]!, ...lines.slice(1)] }
      : { code, lines: [lines[0]!, ...lines.slice(1)] }
  )
})

describe("Reply", () => {
  it("formats single and multi-line replies, with enhanced codes on every line", () => {
    assert.strictEqual(Reply.Reply.of(250, "OK").toWire(), "250 OK\r\n")
    assert.strictEqual(Reply.Reply.of(250, [2, 1, 0], "Sender OK").toWire(), "250 2.1.0 Sender OK\r\n")
    assert.strictEqual(
      Reply.Reply.of(250, "mx.example Hello", "PIPELINING", "SIZE 100").toWire(),
      "250-mx.example Hello\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
    )
    assert.strictEqual(
      Reply.Reply.of(550, [5, 7, 1], "first", "second").toWire(),
      "550-5.7.1 first\r\n550 5.7.1 second\r\n"
    )
    // An empty challenge keeps its space: "334 " (RFC 4954).
    assert.strictEqual(Reply.Reply.of(334, "").toWire(), "334 \r\n")
  })

  it("parses replies from the wire", () => {
    const ehlo = parseOk("250-mx.example\r\n250-8BITMIME\r\n250 SIZE 1000\r\n")
    assert.strictEqual(ehlo.code, 250)
    assert.deepStrictEqual(ehlo.lines, ["mx.example", "8BITMIME", "SIZE 1000"])
    assert.isUndefined(ehlo.enhancedCode)
    const rejected = parseOk("550-5.1.1 No such user\r\n550 5.1.1 here\r\n")
    assert.deepStrictEqual(rejected.enhancedCode, [5, 1, 1])
    assert.deepStrictEqual(rejected.lines, ["No such user", "here"])
    assert.isTrue(rejected.isPermanent)
    assert.deepStrictEqual(parseOk("354").lines, [""])
    assert.deepStrictEqual(parseOk("334 ").lines, [""])
    // An enhanced code whose class differs from the reply's is just text.
    assert.deepStrictEqual(parseOk("250 5.1.1 odd").lines, ["5.1.1 odd"])
  })

  it("refuses malformed replies with a typed error", () => {
    assert.include(parseError("25 OK"), "three-digit")
    assert.include(parseError("abc OK"), "three-digit")
    assert.include(parseError("199 too low"), "invalid reply code")
    assert.include(parseError("600 too high"), "invalid reply code")
    assert.include(parseError("270 second digit"), "invalid reply code")
    assert.include(parseError("250_OK"), "space or hyphen")
    assert.include(parseError("250-first\r\n550 second"), "mixes codes")
    assert.include(parseError("250 last\r\n250 again"), "out of order")
    assert.include(parseError("250-never ends"), "out of order")
    assert.include(parseError("250 " + "x".repeat(Reply.MAX_LINE_LENGTH)), "too long")
    assert.include(parseError(Array.from({ length: Reply.MAX_LINES + 1 }, () => "250-x").join("\r\n")), "too many")
  })

  it("format then parse gives the same reply (property)", () => {
    fc.assert(fc.property(reply, (r) => {
      const back = parseOk(r.toWire())
      assert.strictEqual(back.code, r.code)
      assert.deepStrictEqual(back.enhancedCode, r.enhancedCode)
      assert.deepStrictEqual(back.lines, r.lines)
    }), { numRuns: 500 })
  })

  it("ReplyFromWire is the same codec as a Schema", () => {
    fc.assert(fc.property(reply, (r) => {
      const wire = Schema.encodeSync(Reply.ReplyFromWire)(r)
      assert.strictEqual(wire, r.toWire())
      const back = Schema.decodeUnknownSync(Reply.ReplyFromWire)(wire)
      assert.deepStrictEqual(back.lines, r.lines)
    }), { numRuns: 200 })
    assert.throws(() => Schema.decodeUnknownSync(Reply.ReplyFromWire)("99 nope"))
  })

  it("never throws on arbitrary input", () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => {
      Reply.parse(s)
      Reply.parseLine(s)
    }), { numRuns: 2000 })
  })
})

describe("SmtpError", () => {
  it("fills an unset enhanced code from the reply class, and leaves it out when asked", () => {
    assert.deepStrictEqual(SmtpError.SmtpError.of(451, "unset", "later").toReply().enhancedCode, [4, 0, 0])
    assert.isUndefined(SmtpError.SmtpError.of(550, "none", "no").toReply().enhancedCode)
    assert.deepStrictEqual(SmtpError.mailboxUnavailable.toReply().enhancedCode, [5, 1, 1])
    assert.isUndefined(SmtpError.mailboxUnavailable.toReply({ enhancedStatusCodes: false }).enhancedCode)
  })

  it("turns a message with newlines into a multi-line reply", () => {
    const wire = SmtpError.SmtpError.of(550, [5, 7, 1], "Rejected\nSee https://example.com").toReply().toWire()
    assert.strictEqual(wire, "550-5.7.1 Rejected\r\n550 5.7.1 See https://example.com\r\n")
  })

  it("knows temporary from permanent, and comes back from a reply", () => {
    assert.isTrue(SmtpError.tooManyRecipients.isTemporary)
    assert.isFalse(SmtpError.dataTooLarge.isTemporary)
    const e = SmtpError.SmtpError.fromReply(parseOk("452-4.2.2 Mailbox full\r\n452 4.2.2 try later"))
    assert.strictEqual(e.code, 452)
    assert.deepStrictEqual(e.enhancedCode, [4, 2, 2])
    assert.strictEqual(e.message, "Mailbox full\ntry later")
  })

  it("validates its fields", () => {
    assert.throws(() => SmtpError.SmtpError.of(250, "unset", "not an error"))
    assert.throws(() => SmtpError.SmtpError.of(600, "unset", "no such code"))
    // A second digit over 5 is no reply code (RFC 5321 4.2.1): refused here, not when sent.
    assert.throws(() => SmtpError.SmtpError.of(470, "unset", "not a reply code"))
  })

  it("the well-known errors carry the codes of RFC 5321, 3463 and 4954", () => {
    const table: Array<[SmtpError.SmtpError, number, string]> = [
      [SmtpError.authRequired, 530, "5.7.0"],
      [SmtpError.authFailed, 535, "5.7.8"],
      [SmtpError.authUnknownMechanism, 504, "5.5.4"],
      [SmtpError.authEncryptionRequired, 538, "5.7.11"],
      [SmtpError.dataTooLarge, 552, "5.3.4"],
      [SmtpError.tooManyRecipients, 452, "4.5.3"],
      [SmtpError.badSequence, 503, "5.5.1"],
      [SmtpError.unknownCommand, 500, "5.5.2"],
      [SmtpError.parameterNotRecognized, 555, "5.5.4"],
      [SmtpError.localError, 451, "4.3.0"],
      [SmtpError.serviceNotAvailable, 421, "4.3.2"]
    ]
    for (const [e, c, enhanced] of table) {
      assert.strictEqual(e.code, c)
      assert.strictEqual(EnhancedCode.format(e.resolvedEnhancedCode!), enhanced)
    }
  })
})
