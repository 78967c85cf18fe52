import { assert, describe, it } from "@effect/vitest"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as fc from "fast-check"
import * as Address from "../src/Address.ts"
import * as MailOptions from "../src/MailOptions.ts"
import type { SmtpError } from "../src/SmtpError.ts"
import * as Xtext from "../src/Xtext.ts"

const { allEnabled, noneEnabled } = MailOptions

const mail = (params: ReadonlyArray<string>, enabled = allEnabled) => MailOptions.parseMailParameters(params, enabled)
const rcpt = (params: ReadonlyArray<string>, enabled = allEnabled) => MailOptions.parseRcptParameters(params, enabled)

const success = <A>(r: Result.Result<A, SmtpError>): A => {
  if (Result.isFailure(r)) throw new Error(`expected a success, got ${r.failure.code} ${r.failure.message}`)
  return r.success
}
/** "code x.y.z message" of a failure. */
const error = <A>(r: Result.Result<A, SmtpError>): string => {
  if (Result.isSuccess(r)) throw new Error(`expected a failure, got ${JSON.stringify(r.success)}`)
  const e = r.failure
  const enhanced = typeof e.enhancedCode === "string" ? e.enhancedCode : e.enhancedCode.join(".")
  return `${e.code} ${enhanced} ${e.message}`
}

describe("Xtext", () => {
  it("encodes +, = and everything outside ! .. ~ as +XX of the UTF-8 octets", () => {
    assert.strictEqual(Xtext.encode("abc"), "abc")
    assert.strictEqual(Xtext.encode("a+b=c d"), "a+2Bb+3Dc+20d")
    assert.strictEqual(Xtext.encode("\r\n\u0000\u007f"), "+0D+0A+00+7F")
    assert.strictEqual(Xtext.encode("é"), "+C3+A9")
    assert.strictEqual(Xtext.encode("😀"), "+F0+9F+98+80")
    assert.strictEqual(Xtext.encode(""), "")
  })

  it("decodes, refusing malformed escapes and characters outside xtext", () => {
    assert.strictEqual(Xtext.decode("a+2Bb+3Dc+20d"), "a+b=c d")
    assert.strictEqual(Xtext.decode("+C3+A9t+C3+A9"), "été")
    assert.strictEqual(Xtext.decode(""), "")
    for (const bad of ["+", "+2", "+2b", "+ZZ", "a=b", "a b", "é", "+C3", "+C3+28", "+ED+A0+80", "+C0+80", "\r"]) {
      assert.isUndefined(Xtext.decode(bad), bad)
    }
  })

  it("RFC 6533 utf-8-addr-xtext / unitext", () => {
    assert.strictEqual(Xtext.encodeUtf8Address("jöran@example.com"), "j\\x{F6}ran@example.com")
    assert.strictEqual(Xtext.encodeUtf8Address("a+b=c\\d e"), "a\\x{2B}b\\x{3D}c\\x{5C}d\\x{20}e")
    assert.strictEqual(Xtext.encodeUtf8Address("\t😀"), "\\x{09}\\x{1F600}")
    assert.strictEqual(Xtext.decodeUtf8Address("j\\x{F6}ran@example.com"), "jöran@example.com")
    assert.strictEqual(Xtext.decodeUtf8Address("j\\x{f6}ran"), "jöran")
    assert.strictEqual(Xtext.decodeUtf8Address("jöran@例子.广告"), "jöran@例子.广告") // unitext: raw UTF-8
    assert.strictEqual(Xtext.decodeUtf8Address("\\x{1F600}\\x{10FFFF}\\x{100}"), "😀\u{10FFFF}\u0100")
    for (const bad of [
      "\\x{41}", // must be raw
      "\\x{0041}", // leading zero
      "\\x{00}",
      "\\x{D800}",
      "\\x{110000}",
      "\\x{}",
      "\\x{1234567}",
      "\\x{12",
      "\\y{41}",
      "\\",
      "a+b",
      "a=b",
      "a b",
      "\ud800"
    ]) {
      assert.isUndefined(Xtext.decodeUtf8Address(bad), bad)
    }
  })

  it("round trips, and encodes to printable ASCII only", () => {
    const wellFormed = fc.string({ unit: "grapheme" })
    fc.assert(fc.property(wellFormed, (s) => {
      const x = Xtext.encode(s)
      assert.match(x, /^[!-~]*$/)
      assert.strictEqual(Xtext.decode(x), s)
      const u = Xtext.encodeUtf8Address(s)
      assert.match(u, /^[!-~]*$/)
      if (!s.includes("\u0000")) assert.strictEqual(Xtext.decodeUtf8Address(u), s)
    }), { numRuns: 2000 })
    fc.assert(fc.property(fc.string({ unit: "binary" }), (s) => {
      Xtext.decode(s)
      Xtext.decodeUtf8Address(s)
    }))
  })
})

describe("parseMailParameters", () => {
  it("reads every MAIL parameter, keywords and keyword-like values in any case", () => {
    assert.deepStrictEqual(
      success(mail([
        "size=1000",
        "Body=8bitmime",
        "SMTPUTF8",
        "requiretls",
        "AUTH=j+2Bdoe@example.com",
        "RET=hdrs",
        "ENVID=QQ314159+2Bx",
        "BY=120;rt",
        "MT-PRIORITY=-3"
      ])),
      {
        size: 1000,
        body: "8BITMIME",
        smtputf8: true,
        requireTls: true,
        auth: Address.make("j+doe@example.com"),
        ret: "HDRS",
        envelopeId: "QQ314159+x",
        deliverBy: { seconds: 120, mode: "R", trace: true },
        mtPriority: -3
      }
    )
    assert.deepStrictEqual(success(mail([])), {})
    assert.deepStrictEqual(success(mail(["BODY=7BIT", "SIZE=0"])), { body: "7BIT", size: 0 })
    assert.deepStrictEqual(success(mail(["BODY=BINARYMIME"])), { body: "BINARYMIME" })
    assert.deepStrictEqual(success(mail(["AUTH=<>"])), { auth: null })
    assert.deepStrictEqual(success(mail(["AUTH=+C3+BC@example.com"])), { auth: Address.make("ü@example.com") })
    assert.deepStrictEqual(success(mail(["BY=0;N"])), { deliverBy: { seconds: 0, mode: "N", trace: false } })
    assert.deepStrictEqual(success(mail(["BY=-60;n"])), { deliverBy: { seconds: -60, mode: "N", trace: false } })
    assert.deepStrictEqual(success(mail(["BY=+999999999;R"])), { deliverBy: { seconds: 999999999, mode: "R", trace: false } })
    assert.deepStrictEqual(success(mail(["MT-PRIORITY=9"])), { mtPriority: 9 })
    assert.deepStrictEqual(success(mail(["SIZE=9007199254740991"])), { size: Number.MAX_SAFE_INTEGER })
  })

  it("refuses a parameter of an extension that is off with 555 5.5.4", () => {
    const off = (param: string, enabled: Partial<MailOptions.Enabled>) =>
      error(mail([param], { ...allEnabled, ...enabled }))
    assert.strictEqual(off("SIZE=1", { size: false }), "555 5.5.4 SIZE parameter not supported")
    assert.strictEqual(off("BODY=8BITMIME", { eightBitMime: false }), "555 5.5.4 BODY=8BITMIME parameter not supported")
    assert.strictEqual(off("BODY=BINARYMIME", { binaryMime: false }), "555 5.5.4 BODY=BINARYMIME parameter not supported")
    assert.strictEqual(off("BODY=7BIT", { eightBitMime: false, binaryMime: false }), "555 5.5.4 BODY=7BIT parameter not supported")
    assert.deepStrictEqual(success(mail(["BODY=7BIT"], { ...noneEnabled, binaryMime: true })), { body: "7BIT" })
    assert.strictEqual(off("SMTPUTF8", { smtputf8: false }), "555 5.5.4 SMTPUTF8 parameter not supported")
    assert.strictEqual(off("REQUIRETLS", { requireTls: false }), "555 5.5.4 REQUIRETLS parameter not supported")
    assert.strictEqual(off("AUTH=<>", { auth: false }), "555 5.5.4 AUTH parameter not supported")
    assert.strictEqual(off("RET=FULL", { dsn: false }), "555 5.5.4 RET parameter not supported")
    assert.strictEqual(off("ENVID=x", { dsn: false }), "555 5.5.4 ENVID parameter not supported")
    assert.strictEqual(off("BY=10;R", { deliverBy: false }), "555 5.5.4 BY parameter not supported")
    assert.strictEqual(off("MT-PRIORITY=1", { mtPriority: false }), "555 5.5.4 MT-PRIORITY parameter not supported")
  })

  it("refuses unknown parameters with 555 5.5.4, RCPT ones included", () => {
    assert.strictEqual(error(mail(["FOO=bar"])), "555 5.5.4 MAIL parameter not recognized")
    assert.strictEqual(error(mail(["X-TRACE"])), "555 5.5.4 MAIL parameter not recognized")
    assert.strictEqual(error(mail(["NOTIFY=NEVER"])), "555 5.5.4 MAIL parameter not recognized")
    assert.strictEqual(error(mail(["RRVS=2020-01-01T00:00:00Z"])), "555 5.5.4 MAIL parameter not recognized")
  })

  it("refuses repeats with 501 5.5.4, whatever their case", () => {
    assert.strictEqual(error(mail(["SIZE=1", "size=2"])), "501 5.5.4 Duplicate SIZE parameter")
    assert.strictEqual(error(mail(["SMTPUTF8", "SMTPUTF8"])), "501 5.5.4 Duplicate SMTPUTF8 parameter")
  })

  it("refuses malformed items and values with 501 5.5.4 naming the parameter", () => {
    const cases: ReadonlyArray<readonly [string, string]> = [
      ["SIZE", "SIZE"],
      ["SIZE=", "Syntax error in MAIL parameters"],
      ["SIZE=abc", "SIZE"],
      ["SIZE=-1", "SIZE"],
      ["SIZE=1.5", "SIZE"],
      ["SIZE=9007199254740992", "SIZE"],
      ["SIZE=123456789012345678901", "SIZE"],
      ["BODY=9BIT", "BODY"],
      ["BODY", "BODY"],
      ["SMTPUTF8=yes", "SMTPUTF8"],
      ["REQUIRETLS=1", "REQUIRETLS"],
      ["AUTH", "AUTH"],
      ["AUTH=nobody", "AUTH"],
      ["AUTH=<a@b>", "AUTH"],
      ["AUTH=a+ZZ@b", "AUTH"],
      ["AUTH=postmaster", "AUTH"],
      ["RET=ALL", "RET"],
      ["ENVID=a+2", "ENVID"],
      ["ENVID=+0A", "ENVID"],
      ["ENVID=+C3+A9", "ENVID"],
      [`ENVID=${"x".repeat(101)}`, "ENVID"],
      ["BY=10", "BY"],
      ["BY=10;", "BY"],
      ["BY=;R", "BY"],
      ["BY=0;R", "BY"],
      ["BY=-5;R", "BY"],
      ["BY=10;X", "BY"],
      ["BY=10;NTX", "BY"],
      ["BY=10;NX", "BY"],
      ["BY=1234567890;N", "BY"],
      ["BY=1a;N", "BY"],
      ["MT-PRIORITY=10", "MT-PRIORITY"],
      ["MT-PRIORITY=-0", "MT-PRIORITY"],
      ["MT-PRIORITY=+1", "MT-PRIORITY"],
      ["MT-PRIORITY=-10", "MT-PRIORITY"],
      ["MT-PRIORITY=", "Syntax error in MAIL parameters"],
      ["=x", "Syntax error in MAIL parameters"],
      ["-X=1", "Syntax error in MAIL parameters"],
      ["A=b=c", "Syntax error in MAIL parameters"],
      ["A=b c", "Syntax error in MAIL parameters"],
      ["A_B=1", "Syntax error in MAIL parameters"],
      ["A=\u0001", "Syntax error in MAIL parameters"]
    ]
    for (const [param, what] of cases) {
      const expected = what.startsWith("Syntax") ? `501 5.5.4 ${what}` : `501 5.5.4 Malformed ${what} parameter value`
      assert.strictEqual(error(mail([param])), expected, param)
    }
    assert.deepStrictEqual(success(mail([`ENVID=${"x".repeat(100)}`])), { envelopeId: "x".repeat(100) })
  })

  it("reports the first problem in the order given", () => {
    assert.strictEqual(error(mail(["SIZE=x", "FOO"])), "501 5.5.4 Malformed SIZE parameter value")
    assert.strictEqual(error(mail(["FOO", "SIZE=x"])), "555 5.5.4 MAIL parameter not recognized")
  })
})

describe("parseRcptParameters", () => {
  it("NOTIFY: NEVER alone, or a list kept in order", () => {
    assert.deepStrictEqual(success(rcpt(["NOTIFY=NEVER"])), { notify: ["NEVER"] })
    assert.deepStrictEqual(success(rcpt(["notify=delay,Success"])), { notify: ["DELAY", "SUCCESS"] })
    assert.deepStrictEqual(success(rcpt(["NOTIFY=SUCCESS,FAILURE,DELAY"])), { notify: ["SUCCESS", "FAILURE", "DELAY"] })
    for (const bad of ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SUCCESS,SUCCESS", "NOTIFY=SUCCESS,", "NOTIFY=ALWAYS", "NOTIFY"]) {
      assert.strictEqual(error(rcpt([bad])), "501 5.5.4 Malformed NOTIFY parameter value", bad)
    }
  })

  it("ORCPT: rfc822 xtext and RFC 6533 utf-8 forms, decoded", () => {
    assert.deepStrictEqual(success(rcpt(["ORCPT=rfc822;John+2BDoe@example.com"])), {
      originalRecipient: { addressType: "RFC822", address: "John+Doe@example.com" }
    })
    assert.deepStrictEqual(success(rcpt(["ORCPT=UTF-8;j\\x{F6}ran@example.com"])), {
      originalRecipient: { addressType: "UTF-8", address: "jöran@example.com" }
    })
    assert.deepStrictEqual(success(rcpt(["ORCPT=utf-8;jöran@例子.广告"])), {
      originalRecipient: { addressType: "UTF-8", address: "jöran@例子.广告" }
    })
    assert.deepStrictEqual(success(rcpt(["ORCPT=x-other;a;b"])), {
      originalRecipient: { addressType: "X-OTHER", address: "a;b" }
    })
    for (const bad of [
      "ORCPT=rfc822",
      "ORCPT=;a@b",
      "ORCPT=rfc822;",
      "ORCPT=rfc822;a+2",
      "ORCPT=rfc822;+0Da@b",
      "ORCPT=rfc822;+C3+A9@b",
      "ORCPT=utf-8;a\\x{0A}b",
      "ORCPT=utf-8;a\\x{41}",
      "ORCPT=a(b;c@d",
      `ORCPT=rfc822;${"a".repeat(494)}`
    ]) {
      assert.strictEqual(error(rcpt([bad])), "501 5.5.4 Malformed ORCPT parameter value", bad)
    }
    assert.isTrue(Result.isSuccess(rcpt([`ORCPT=rfc822;${"a".repeat(493)}`])))
  })

  it("RRVS: an RFC 3339 date-time and an optional mode", () => {
    assert.deepStrictEqual(success(rcpt(["RRVS=2014-04-03T23:01:00Z"])), {
      requireRecipientValidSince: { date: new Date("2014-04-03T23:01:00Z") }
    })
    assert.deepStrictEqual(success(rcpt(["RRVS=2014-04-03t23:01:00.5+02:30;c"])), {
      requireRecipientValidSince: { date: new Date("2014-04-03T20:31:00.500Z"), mode: "C" }
    })
    assert.deepStrictEqual(success(rcpt(["RRVS=2016-02-29T00:00:00.123456-01:00;R"])), {
      requireRecipientValidSince: { date: new Date("2016-02-29T01:00:00.123Z"), mode: "R" }
    })
    assert.deepStrictEqual(success(rcpt(["RRVS=0050-01-01T00:00:00z"])), {
      requireRecipientValidSince: { date: new Date("0050-01-01T00:00:00Z") }
    })
    assert.deepStrictEqual(success(rcpt(["RRVS=2016-12-31T23:59:60Z"])), { // a leap second
      requireRecipientValidSince: { date: new Date("2017-01-01T00:00:00Z") }
    })
    for (const bad of [
      "RRVS=2014-04-03",
      "RRVS=2014-04-03T23:01:00",
      "RRVS=2014-04-03_23:01:00Z",
      "RRVS=2014-02-30T00:00:00Z",
      "RRVS=2015-02-29T00:00:00Z",
      "RRVS=2014-13-01T00:00:00Z",
      "RRVS=2014-04-03T24:00:00Z",
      "RRVS=2014-04-03T23:60:00Z",
      "RRVS=2014-04-03T23:01:00.Z",
      "RRVS=2014-04-03T23:01:00+0200",
      "RRVS=2014-04-03T23:01:00ZZ",
      "RRVS=2014-04-03T23:01:00Z;",
      "RRVS=2014-04-03T23:01:00Z;X",
      "RRVS=0000-01-01T00:00:00+00:01"
    ]) {
      assert.strictEqual(error(rcpt([bad])), "501 5.5.4 Malformed RRVS parameter value", bad)
    }
  })

  it("refusals: off, unknown, repeated", () => {
    assert.strictEqual(error(rcpt(["NOTIFY=NEVER"], { ...allEnabled, dsn: false })), "555 5.5.4 NOTIFY parameter not supported")
    assert.strictEqual(error(rcpt(["ORCPT=rfc822;a@b"], noneEnabled)), "555 5.5.4 ORCPT parameter not supported")
    assert.strictEqual(error(rcpt(["RRVS=2014-04-03T23:01:00Z"], { ...allEnabled, rrvs: false })), "555 5.5.4 RRVS parameter not supported")
    assert.strictEqual(error(rcpt(["SIZE=10"])), "555 5.5.4 RCPT parameter not recognized")
    assert.strictEqual(error(rcpt(["NOTIFY=NEVER", "Notify=NEVER"])), "501 5.5.4 Duplicate NOTIFY parameter")
    assert.strictEqual(error(rcpt(["NOTIFY=a=b"])), "501 5.5.4 Syntax error in RCPT parameters")
  })
})

describe("formatting", () => {
  it("formats MAIL and RCPT parameters, xtext where the RFCs say", () => {
    assert.deepStrictEqual(
      success(MailOptions.formatMailParameters({
        body: "8BITMIME",
        size: 1234,
        smtputf8: true,
        requireTls: true,
        auth: Address.make("a+b=c@example.com"),
        ret: "FULL",
        envelopeId: "id with space",
        deliverBy: { seconds: 60, mode: "N", trace: true },
        mtPriority: 0
      })),
      [
        "BODY=8BITMIME",
        "SIZE=1234",
        "SMTPUTF8",
        "REQUIRETLS",
        "AUTH=a+2Bb+3Dc@example.com",
        "RET=FULL",
        "ENVID=id+20with+20space",
        "BY=60;NT",
        "MT-PRIORITY=0"
      ]
    )
    assert.deepStrictEqual(success(MailOptions.formatMailParameters({ auth: null, smtputf8: false })), ["AUTH=<>"])
    assert.deepStrictEqual(
      success(MailOptions.formatRcptParameters({
        notify: ["FAILURE", "DELAY"],
        originalRecipient: { addressType: "UTF-8", address: "jö ran@example.com" },
        requireRecipientValidSince: { date: new Date("2020-05-06T07:08:09Z"), mode: "R" }
      })),
      ["NOTIFY=FAILURE,DELAY", "ORCPT=UTF-8;j\\x{F6}\\x{20}ran@example.com", "RRVS=2020-05-06T07:08:09.000Z;R"]
    )
    assert.deepStrictEqual(
      success(MailOptions.formatRcptParameters({ originalRecipient: { addressType: "RFC822", address: "a+b@c" } })),
      ["ORCPT=RFC822;a+2Bb@c"]
    )
  })

  it("refuses values that are not valid, so nothing unsafe reaches the wire", () => {
    const badMail: ReadonlyArray<readonly [MailOptions.MailOptions, string]> = [
      [{ size: -1 }, "SIZE"],
      [{ size: 1.5 }, "SIZE"],
      [{ size: Number.NaN }, "SIZE"],
      [{ body: "9BIT" as "7BIT" }, "BODY"],
      [{ envelopeId: "a\r\nRSET" }, "ENVID"],
      [{ envelopeId: "" }, "ENVID"],
      [{ envelopeId: "é" }, "ENVID"],
      [{ envelopeId: "+".repeat(34) }, "ENVID"],
      [{ auth: "a@b\r\nRSET" as Address.Address }, "AUTH"],
      [{ auth: Address.make("postmaster") }, "AUTH"],
      [{ ret: "NONE" as "FULL" }, "RET"],
      [{ deliverBy: { seconds: 0, mode: "R", trace: false } }, "BY"],
      [{ deliverBy: { seconds: 1e10, mode: "N", trace: false } }, "BY"],
      [{ mtPriority: 10 }, "MT-PRIORITY"]
    ]
    for (const [options, what] of badMail) {
      assert.strictEqual(error(MailOptions.formatMailParameters(options)), `501 5.5.4 Malformed ${what} parameter value`)
    }
    const badRcpt: ReadonlyArray<readonly [MailOptions.RcptOptions, string]> = [
      [{ notify: ["NEVER", "DELAY"] }, "NOTIFY"],
      [{ notify: ["DELAY", "DELAY"] }, "NOTIFY"],
      [{ originalRecipient: { addressType: "rfc822", address: "a@b" } }, "ORCPT"],
      [{ originalRecipient: { addressType: "RFC822", address: "a\n@b" } }, "ORCPT"],
      [{ originalRecipient: { addressType: "RFC822", address: "é@b" } }, "ORCPT"],
      [{ originalRecipient: { addressType: "UTF-8", address: "a\r\n@b" } }, "ORCPT"],
      [{ originalRecipient: { addressType: "UTF-8", address: "" } }, "ORCPT"],
      [{ originalRecipient: { addressType: "A B", address: "x" } }, "ORCPT"],
      [{ originalRecipient: { addressType: "RFC822", address: "+".repeat(200) } }, "ORCPT"],
      [{ requireRecipientValidSince: { date: new Date(Number.NaN) } }, "RRVS"],
      [{ requireRecipientValidSince: { date: new Date("+010000-01-01T00:00:00Z") } }, "RRVS"]
    ]
    for (const [options, what] of badRcpt) {
      assert.strictEqual(error(MailOptions.formatRcptParameters(options)), `501 5.5.4 Malformed ${what} parameter value`)
    }
  })
})

// Arbitraries of valid options.
const printable = fc.string({ unit: fc.integer({ min: 32, max: 126 }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 40 })
const mailbox = fc.constantFrom("a@b.example", "\"x y\"@[1.2.3.4]", "ü+1=2@例子.example", "first.last@[IPv6:::1]").map(Address.make)
const mailOptions: fc.Arbitrary<MailOptions.MailOptions> = fc.record({
  body: fc.constantFrom("7BIT", "8BITMIME", "BINARYMIME"),
  size: fc.maxSafeNat(),
  smtputf8: fc.constant(true),
  requireTls: fc.constant(true),
  auth: fc.option(mailbox, { nil: null }),
  ret: fc.constantFrom("FULL", "HDRS"),
  envelopeId: printable.filter((s) => Xtext.encode(s).length <= 100),
  deliverBy: fc.oneof(
    fc.record({ seconds: fc.integer({ min: 1, max: 999_999_999 }), mode: fc.constant("R" as const), trace: fc.boolean() }),
    fc.record({ seconds: fc.integer({ min: -999_999_999, max: 999_999_999 }), mode: fc.constant("N" as const), trace: fc.boolean() })
  ),
  mtPriority: fc.integer({ min: -9, max: 9 })
}, { requiredKeys: [] })
const notify: fc.Arbitrary<typeof MailOptions.Notify.Type> = fc.oneof(
  fc.constant(["NEVER"] as const),
  fc.uniqueArray(fc.constantFrom("SUCCESS", "FAILURE", "DELAY"), { minLength: 1 }).map((a) => [a[0]!, ...a.slice(1)] as const)
)
const rcptOptions: fc.Arbitrary<MailOptions.RcptOptions> = fc.record({
  notify,
  originalRecipient: fc.oneof(
    fc.record({ addressType: fc.constantFrom("RFC822", "X-FOO"), address: printable }),
    fc.record({
      addressType: fc.constant("UTF-8"),
      address: fc.string({ unit: "grapheme", minLength: 1, maxLength: 30 }).filter((s) => !/[\u0000-\u001f\u007f]/.test(s))
    })
  ),
  requireRecipientValidSince: fc.record({
    date: fc.date({ min: new Date("0000-01-01T00:00:00Z"), max: new Date("9999-12-31T23:59:59.999Z"), noInvalidDate: true }),
    mode: fc.constantFrom("C", "R")
  }, { requiredKeys: ["date"] })
}, { requiredKeys: [] })

describe("properties", () => {
  it("parse(format(mail options)) is the options, and the items are printable ASCII", () => {
    const isMailOptions = Schema.is(MailOptions.MailOptions)
    fc.assert(fc.property(mailOptions, (o) => {
      assert.isTrue(isMailOptions(o))
      const items = success(MailOptions.formatMailParameters(o))
      for (const item of items) assert.match(item, /^[!-~]+$/)
      assert.deepStrictEqual(success(mail(items)), o)
    }), { numRuns: 1000 })
  })

  it("parse(format(rcpt options)) is the options", () => {
    const isRcptOptions = Schema.is(MailOptions.RcptOptions)
    fc.assert(fc.property(rcptOptions, (o) => {
      if (!isRcptOptions(o)) return // e.g. an ORCPT too long once encoded
      const items = success(MailOptions.formatRcptParameters(o))
      for (const item of items) assert.match(item, /^[!-~]+$/)
      assert.deepStrictEqual(success(rcpt(items)), o)
    }), { numRuns: 1000 })
  })

  it("never throws, and what it accepts satisfies the Schemas", () => {
    const isMailOptions = Schema.is(MailOptions.MailOptions)
    const isRcptOptions = Schema.is(MailOptions.RcptOptions)
    const keyword = fc.constantFrom("SIZE", "BODY", "AUTH", "RET", "ENVID", "BY", "MT-PRIORITY", "SMTPUTF8", "NOTIFY", "ORCPT", "RRVS", "X")
    const value = fc.string({ unit: fc.constantFrom(..."0123456789-+;,:.=<>@TZNRCa\\x{}é ".split("")), maxLength: 30 })
    const item = fc.oneof(fc.tuple(keyword, value).map(([k, v]) => `${k}=${v}`), keyword, fc.string({ unit: "binary" }))
    fc.assert(fc.property(fc.array(item, { maxLength: 4 }), (items) => {
      const m = mail(items)
      if (Result.isSuccess(m)) assert.isTrue(isMailOptions(m.success))
      const r = rcpt(items)
      if (Result.isSuccess(r)) assert.isTrue(isRcptOptions(r.success))
    }), { numRuns: 3000 })
  })

  it("handles 100 KB values in linear time", () => {
    const n = 100_000
    const start = Date.now()
    for (const v of ["+".repeat(n), "+2B".repeat(n / 3), "a".repeat(n), "\\x{".repeat(n / 3), "1".repeat(n), ",".repeat(n)]) {
      mail([`ENVID=${v}`, `AUTH=${v}`, `SIZE=${v}`, `BY=${v}`])
      rcpt([`ORCPT=utf-8;${v}`, `NOTIFY=${v}`, `RRVS=${v}`])
      Xtext.decode(v)
      Xtext.decodeUtf8Address(v)
    }
    assert.isBelow(Date.now() - start, 5_000)
  })
})
