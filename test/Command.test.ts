import { assert, describe, it } from "@effect/vitest"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as fc from "fast-check"
import * as Address from "../src/Address.ts"
import * as Command from "../src/Command.ts"
import type { SmtpError } from "../src/SmtpError.ts"

const parsed = (line: string, options?: Command.ParseOptions): Command.Command => {
  const r = Command.parse(line, options)
  if (Result.isFailure(r)) throw new Error(`${line}: ${r.failure.code} ${r.failure.message}`)
  return r.success
}
/** "code x.y.z message" of a failure. */
const refused = (line: string, options?: Command.ParseOptions): string => {
  const r = Command.parse(line, options)
  if (Result.isSuccess(r)) throw new Error(`${line}: expected a failure, got ${JSON.stringify(r.success)}`)
  const e: SmtpError = r.failure
  const enhanced = typeof e.enhancedCode === "string" ? e.enhancedCode : e.enhancedCode.join(".")
  return `${e.code} ${enhanced} ${e.message}`
}
const a = Address.make

describe("Command.parse", () => {
  it("greetings: one word, verbs in any case", () => {
    assert.deepStrictEqual(parsed("HELO mx.example"), { _tag: "Helo", domain: "mx.example" })
    assert.deepStrictEqual(parsed("ehlo [192.0.2.1]"), { _tag: "Ehlo", domain: "[192.0.2.1]" })
    assert.deepStrictEqual(parsed("LhLo client"), { _tag: "Lhlo", domain: "client" })
    assert.deepStrictEqual(parsed("EHLO  x  trailing words "), { _tag: "Ehlo", domain: "x" })
    assert.deepStrictEqual(parsed("EHLO\tx"), { _tag: "Ehlo", domain: "x" })
    assert.strictEqual(refused("EHLO"), "501 5.5.4 EHLO needs a domain or address literal")
    assert.strictEqual(refused("HELO   "), "501 5.5.4 HELO needs a domain or address literal")
  })

  it("greetings: a control character anywhere in the argument is 501 5.5.4 (tab separates words)", () => {
    for (const c of ["\x01", "\x07", "\x1b", "\x1f", "\x7f"]) {
      assert.strictEqual(refused(`EHLO mx${c}.example`), "501 5.5.4 EHLO argument holds control characters")
      assert.strictEqual(refused(`HELO mx.example trailing${c}`), "501 5.5.4 HELO argument holds control characters")
      assert.strictEqual(refused(`LHLO ${c}`), "501 5.5.4 LHLO argument holds control characters")
      assert.isFalse(Schema.is(Command.Command)({ _tag: "Ehlo", domain: `mx${c}` }))
    }
    // Bytes beyond ASCII are not control characters: clients send all sorts of names.
    assert.deepStrictEqual(parsed("EHLO b\u00fccher.example"), { _tag: "Ehlo", domain: "b\u00fccher.example" })
    assert.deepStrictEqual(parsed("EHLO \ufffd\ufffd"), { _tag: "Ehlo", domain: "\ufffd\ufffd" })
  })

  it("MAIL FROM: paths and raw parameters", () => {
    assert.deepStrictEqual(parsed("MAIL FROM:<a@b.example>"), { _tag: "Mail", from: a("a@b.example"), params: [] })
    assert.deepStrictEqual(parsed("mail from:<>"), { _tag: "Mail", from: null, params: [] })
    assert.deepStrictEqual(parsed("MAIL FROM: <a@b>"), { _tag: "Mail", from: a("a@b"), params: [] })
    assert.deepStrictEqual(parsed("MAIL FROM:a@b SIZE=10"), { _tag: "Mail", from: a("a@b"), params: ["SIZE=10"] })
    assert.deepStrictEqual(
      parsed("MAIL FROM:<@r.example:a@b>  SIZE=10 body=8BITMIME\tSMTPUTF8 "),
      { _tag: "Mail", from: a("a@b"), params: ["SIZE=10", "body=8BITMIME", "SMTPUTF8"] }
    )
    assert.deepStrictEqual(
      parsed("MAIL FROM:<\"a> b\"@c> AUTH=<>"),
      { _tag: "Mail", from: a("\"a> b\"@c"), params: ["AUTH=<>"] }
    )
    assert.strictEqual(refused("MAIL"), "501 5.5.4 Syntax: MAIL FROM:<address>")
    assert.strictEqual(refused("MAIL TO:<a@b>"), "501 5.5.4 Syntax: MAIL FROM:<address>")
    assert.strictEqual(refused("MAIL FROM <a@b>"), "501 5.5.4 Syntax: MAIL FROM:<address>")
    assert.strictEqual(refused("MAIL FROM:"), "501 5.1.7 Bad sender address syntax: missing address")
    assert.strictEqual(refused("MAIL FROM:<a@b"), "501 5.1.7 Bad sender address syntax: missing closing >")
    assert.strictEqual(refused("MAIL FROM:<postmaster>"), "501 5.1.7 Bad sender address syntax: missing @domain")
    assert.strictEqual(refused("MAIL FROM:<a@b>SIZE=1"), "501 5.1.7 Bad sender address syntax: unexpected text after the address")
    assert.strictEqual(refused("MAIL FROM:<a..b@c>"), "501 5.1.7 Bad sender address syntax: empty atom in local part")
    assert.strictEqual(refused("MAIL FROM:<a@b> SIZE==1"), "501 5.5.4 Syntax error in MAIL parameters")
    assert.strictEqual(refused("MAIL FROM:<a@b> SIZE="), "501 5.5.4 Syntax error in MAIL parameters")
    assert.strictEqual(refused("MAIL FROM:<a@b> =1"), "501 5.5.4 Syntax error in MAIL parameters")
  })

  it("RCPT TO: postmaster, no null path", () => {
    assert.deepStrictEqual(parsed("RCPT TO:<b@c.example>"), { _tag: "Rcpt", to: a("b@c.example"), params: [] })
    assert.deepStrictEqual(parsed("rcpt to: <Postmaster>"), { _tag: "Rcpt", to: a("Postmaster"), params: [] })
    assert.deepStrictEqual(
      parsed("RCPT TO:<b@c> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@c"),
      { _tag: "Rcpt", to: a("b@c"), params: ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b@c"] }
    )
    assert.strictEqual(refused("RCPT TO:<>"), "501 5.1.3 Bad recipient address syntax: the null path <> is not a recipient")
    assert.strictEqual(refused("RCPT TO:<b>"), "501 5.1.3 Bad recipient address syntax: missing @domain")
    assert.strictEqual(refused("RCPT FROM:<b@c>"), "501 5.5.4 Syntax: RCPT TO:<address>")
    assert.strictEqual(refused("RCPT TO:<b@c> A=\u0001"), "501 5.5.4 Syntax error in RCPT parameters")
  })

  it("non-ASCII addresses need SMTPUTF8: 553 5.6.7", () => {
    assert.strictEqual(refused("MAIL FROM:<jöran@example.com>"), "553 5.6.7 Non-ASCII sender address requires SMTPUTF8")
    assert.deepStrictEqual(
      parsed("MAIL FROM:<jöran@example.com> smtputf8"),
      { _tag: "Mail", from: a("jöran@example.com"), params: ["smtputf8"] }
    )
    assert.deepStrictEqual(
      parsed("MAIL FROM:<jöran@example.com>", { utf8: true }),
      { _tag: "Mail", from: a("jöran@example.com"), params: [] }
    )
    assert.strictEqual(refused("RCPT TO:<用户@例子.广告>"), "553 5.6.7 Non-ASCII recipient address requires SMTPUTF8")
    assert.deepStrictEqual(parsed("RCPT TO:<用户@例子.广告>", { utf8: true }), { _tag: "Rcpt", to: a("用户@例子.广告"), params: [] })
    // A syntax error wins over the SMTPUTF8 rule.
    assert.strictEqual(refused("RCPT TO:<ü..x@y>"), "501 5.1.3 Bad recipient address syntax: empty atom in local part")
  })

  it("BDAT size [LAST]", () => {
    assert.deepStrictEqual(parsed("BDAT 1000"), { _tag: "Bdat", size: 1000, last: false })
    assert.deepStrictEqual(parsed("bdat 0 last"), { _tag: "Bdat", size: 0, last: true })
    assert.deepStrictEqual(parsed("BDAT  42   LAST "), { _tag: "Bdat", size: 42, last: true })
    assert.deepStrictEqual(parsed("BDAT 999999999999999"), { _tag: "Bdat", size: 999999999999999, last: false })
    assert.strictEqual(refused("BDAT"), "501 5.5.4 BDAT needs a chunk size")
    assert.strictEqual(refused("BDAT 1 LAST x"), "501 5.5.4 Too many BDAT arguments")
    assert.strictEqual(refused("BDAT 1 FIRST"), "501 5.5.4 Unknown BDAT argument")
    assert.strictEqual(refused("BDAT -1"), "501 5.5.4 Malformed BDAT chunk size")
    assert.strictEqual(refused("BDAT 1e3"), "501 5.5.4 Malformed BDAT chunk size")
    assert.strictEqual(refused("BDAT 1000000000000000"), "501 5.5.4 Malformed BDAT chunk size")
  })

  it("isBdatSyntaxError tells a refused BDAT line from every other refusal", () => {
    const failureOf = (line: string) => {
      const r = Command.parse(line)
      if (r._tag === "Success") throw new Error(`parsed: ${line}`)
      return r.failure
    }
    for (const line of ["BDAT", "BDAT 1 LAST x", "bdat 1 FIRST", "BDAT -1", "BDAT 1e3", "BDAT  abc  LAST"]) {
      assert.isTrue(Command.isBdatSyntaxError(failureOf(line)), line)
    }
    for (const line of ["EHLO", "DATA x", "MAIL FROM:<", "RCPT TO:<>", "AUTH", "VRFY", "\tBDAT 1", "BDAT\r1"]) {
      assert.isFalse(Command.isBdatSyntaxError(failureOf(line)), line)
    }
  })

  it("AUTH mechanism [initial-response]", () => {
    assert.deepStrictEqual(parsed("AUTH PLAIN"), { _tag: "Auth", mechanism: "PLAIN" })
    assert.deepStrictEqual(parsed("auth plain AGZvbwBiYXI="), { _tag: "Auth", mechanism: "PLAIN", initialResponse: "AGZvbwBiYXI=" })
    assert.deepStrictEqual(parsed("AUTH EXTERNAL ="), { _tag: "Auth", mechanism: "EXTERNAL", initialResponse: "=" })
    assert.deepStrictEqual(parsed("AUTH SCRAM-SHA-256 biws"), { _tag: "Auth", mechanism: "SCRAM-SHA-256", initialResponse: "biws" })
    assert.deepStrictEqual(parsed("AUTH X_Y dGVzdA=="), { _tag: "Auth", mechanism: "X_Y", initialResponse: "dGVzdA==" })
    assert.strictEqual(refused("AUTH"), "501 5.5.4 AUTH needs a mechanism")
    assert.strictEqual(refused("AUTH PLAIN a b"), "501 5.5.4 Too many AUTH arguments")
    assert.strictEqual(refused("AUTH PL.AIN"), "501 5.5.4 Malformed AUTH mechanism name")
    assert.strictEqual(refused(`AUTH ${"A".repeat(21)}`), "501 5.5.4 Malformed AUTH mechanism name")
    for (const bad of ["abc", "a===", "ab=c", "====", "Zm9v!", "=="]) {
      assert.strictEqual(refused(`AUTH PLAIN ${bad}`), "501 5.5.2 Cannot decode the base64 initial response", bad)
    }
  })

  it("commands without arguments refuse them", () => {
    assert.deepStrictEqual(parsed("DATA"), { _tag: "Data" })
    assert.deepStrictEqual(parsed("rset "), { _tag: "Rset" })
    assert.deepStrictEqual(parsed("QUIT"), { _tag: "Quit" })
    assert.deepStrictEqual(parsed("StartTLS"), { _tag: "StartTls" })
    assert.strictEqual(refused("DATA now"), "501 5.5.4 DATA takes no arguments")
    assert.strictEqual(refused("RSET x"), "501 5.5.4 RSET takes no arguments")
    assert.strictEqual(refused("QUIT bye"), "501 5.5.4 QUIT takes no arguments")
    assert.strictEqual(refused("STARTTLS x"), "501 5.5.4 STARTTLS takes no arguments")
  })

  it("NOOP, HELP, VRFY, EXPN keep their text", () => {
    assert.deepStrictEqual(parsed("NOOP"), { _tag: "Noop" })
    assert.deepStrictEqual(parsed("NOOP  hello there "), { _tag: "Noop", arg: "hello there" })
    assert.deepStrictEqual(parsed("HELP"), { _tag: "Help" })
    assert.deepStrictEqual(parsed("help mail"), { _tag: "Help", arg: "mail" })
    assert.deepStrictEqual(parsed("VRFY John Smith"), { _tag: "Vrfy", arg: "John Smith" })
    assert.deepStrictEqual(parsed("EXPN staff"), { _tag: "Expn", arg: "staff" })
    assert.strictEqual(refused("VRFY"), "501 5.5.4 VRFY needs an argument")
    assert.strictEqual(refused("EXPN "), "501 5.5.4 EXPN needs an argument")
  })

  it("unknown verbs are left to the server", () => {
    assert.deepStrictEqual(parsed("XCLIENT NAME=x ADDR=1.2.3.4"), { _tag: "Unknown", verb: "XCLIENT", arg: "NAME=x ADDR=1.2.3.4" })
    assert.deepStrictEqual(parsed("turn"), { _tag: "Unknown", verb: "turn", arg: "" })
    assert.deepStrictEqual(parsed("MAILX FROM:<a@b>"), { _tag: "Unknown", verb: "MAILX", arg: "FROM:<a@b>" })
    assert.deepStrictEqual(parsed("ſtarttls"), { _tag: "Unknown", verb: "ſtarttls", arg: "" }) // no Unicode case folding
    assert.deepStrictEqual(parsed("GET / HTTP/1.1"), { _tag: "Unknown", verb: "GET", arg: "/ HTTP/1.1" })
  })

  it("refuses lines with no verb or with CR, LF, NUL: 500 5.5.2", () => {
    assert.strictEqual(refused(""), "500 5.5.2 Syntax error: no command")
    assert.strictEqual(refused(" NOOP"), "500 5.5.2 Syntax error: no command")
    assert.strictEqual(refused("NOOP\r"), "500 5.5.2 Syntax error: command line holds CR, LF or NUL")
    assert.strictEqual(refused("NOOP a\nRSET"), "500 5.5.2 Syntax error: command line holds CR, LF or NUL")
    assert.strictEqual(refused("MAIL FROM:<a@b>\u0000"), "500 5.5.2 Syntax error: command line holds CR, LF or NUL")
  })
})

describe("Command.format", () => {
  it("formats every command", () => {
    const cases: ReadonlyArray<readonly [Command.Command, string]> = [
      [{ _tag: "Helo", domain: "x" }, "HELO x"],
      [{ _tag: "Ehlo", domain: "x" }, "EHLO x"],
      [{ _tag: "Lhlo", domain: "x" }, "LHLO x"],
      [{ _tag: "Mail", from: null, params: [] }, "MAIL FROM:<>"],
      [{ _tag: "Mail", from: a("a@b"), params: ["SIZE=1", "SMTPUTF8"] }, "MAIL FROM:<a@b> SIZE=1 SMTPUTF8"],
      [{ _tag: "Rcpt", to: a("postmaster"), params: [] }, "RCPT TO:<postmaster>"],
      [{ _tag: "Data" }, "DATA"],
      [{ _tag: "Bdat", size: 5, last: false }, "BDAT 5"],
      [{ _tag: "Bdat", size: 0, last: true }, "BDAT 0 LAST"],
      [{ _tag: "Rset" }, "RSET"],
      [{ _tag: "Noop" }, "NOOP"],
      [{ _tag: "Noop", arg: "x y" }, "NOOP x y"],
      [{ _tag: "Quit" }, "QUIT"],
      [{ _tag: "Vrfy", arg: "x" }, "VRFY x"],
      [{ _tag: "Expn", arg: "x" }, "EXPN x"],
      [{ _tag: "Help" }, "HELP"],
      [{ _tag: "Help", arg: "x" }, "HELP x"],
      [{ _tag: "Auth", mechanism: "PLAIN" }, "AUTH PLAIN"],
      [{ _tag: "Auth", mechanism: "PLAIN", initialResponse: "=" }, "AUTH PLAIN ="],
      [{ _tag: "StartTls" }, "STARTTLS"],
      [{ _tag: "Unknown", verb: "XFOO", arg: "" }, "XFOO"],
      [{ _tag: "Unknown", verb: "XFOO", arg: "a b" }, "XFOO a b"]
    ]
    for (const [command, line] of cases) {
      assert.strictEqual(Command.format(command), line)
      assert.deepStrictEqual(Command.parse(line), Result.succeed(command))
    }
  })

  it("the Schema refuses commands that would smuggle CR/LF or change meaning", () => {
    const encode = Schema.encodeResult(Command.CommandFromLine)
    const bad: ReadonlyArray<unknown> = [
      { _tag: "Helo", domain: "x\r\nRSET" },
      { _tag: "Helo", domain: "x y" },
      { _tag: "Mail", from: "a@b>\r\nRCPT TO:<c@d", params: [] },
      { _tag: "Mail", from: "postmaster", params: [] },
      { _tag: "Mail", from: "a@b", params: ["SIZE=1 RSET"] },
      { _tag: "Rcpt", to: "a@b", params: ["A\nB"] },
      { _tag: "Noop", arg: "" },
      { _tag: "Noop", arg: " x" },
      { _tag: "Vrfy", arg: "a\u0000" },
      { _tag: "Bdat", size: -1, last: false },
      { _tag: "Bdat", size: 1.5, last: false },
      { _tag: "Auth", mechanism: "plain" },
      { _tag: "Auth", mechanism: "PLAIN", initialResponse: "a b" },
      { _tag: "Unknown", verb: "mail", arg: "FROM:<a@b>" },
      { _tag: "Unknown", verb: "X Y", arg: "" }
    ]
    for (const c of bad) assert.isTrue(Result.isFailure(encode(c as Command.Command)), JSON.stringify(c))
    assert.deepStrictEqual(encode({ _tag: "Quit" }), Result.succeed("QUIT"))
  })
})

// Arbitraries of valid commands.
const word = fc.string({ unit: fc.constantFrom(..."az09.-[]:_é".split("")), minLength: 1, maxLength: 12 })
const text = fc.string({ unit: fc.constantFrom(..."ab <>@:=é\t".split("")), minLength: 1, maxLength: 20 })
  .map((s) => s.trim()).filter((s) => s.length > 0)
const address = fc.oneof(
  fc.constantFrom("a@b", "x.y+z@sub.example", "\"q u\\\"o\"@[1.2.3.4]", "a@[IPv6:2001:db8::1]", "a@[x-y:z]", "ü@bücher.example"),
  fc.tuple(fc.stringMatching(/^[a-z0-9!#$%&'*+\/=?^_`{|}~-]{1,10}$/), fc.stringMatching(/^[a-z0-9]{1,10}$/))
    .map(([l, d]) => `${l}@${d}.example`)
).map(Address.make)
const param = fc.tuple(fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9-]{0,8}$/), fc.option(fc.stringMatching(/^[!-<>-~]{1,10}$/)))
  .map(([k, v]) => (v === null ? k : `${k}=${v}`))
const params = fc.array(param, { maxLength: 4 })
const base64 = fc.uint8Array({ minLength: 1, maxLength: 30 }).map((b) => Buffer.from(b).toString("base64"))

const command: fc.Arbitrary<Command.Command> = fc.oneof(
  word.map((domain) => ({ _tag: "Helo" as const, domain })),
  word.map((domain) => ({ _tag: "Ehlo" as const, domain })),
  word.map((domain) => ({ _tag: "Lhlo" as const, domain })),
  fc.record({ _tag: fc.constant("Mail" as const), from: fc.option(address, { nil: null }), params }),
  fc.record({ _tag: fc.constant("Rcpt" as const), to: fc.oneof(address, fc.constant(Address.make("PostMaster"))), params }),
  fc.constant({ _tag: "Data" as const }),
  fc.record({ _tag: fc.constant("Bdat" as const), size: fc.integer({ min: 0, max: 999_999_999_999_999 }), last: fc.boolean() }),
  fc.constant({ _tag: "Rset" as const }),
  fc.record({ _tag: fc.constant("Noop" as const), arg: text }, { requiredKeys: ["_tag"] }),
  fc.constant({ _tag: "Quit" as const }),
  text.map((arg) => ({ _tag: "Vrfy" as const, arg })),
  text.map((arg) => ({ _tag: "Expn" as const, arg })),
  fc.record({ _tag: fc.constant("Help" as const), arg: text }, { requiredKeys: ["_tag"] }),
  fc.record({
    _tag: fc.constant("Auth" as const),
    mechanism: fc.stringMatching(/^[A-Z0-9_-]{1,20}$/),
    initialResponse: fc.oneof(fc.constant("="), base64)
  }, { requiredKeys: ["_tag", "mechanism"] }),
  fc.constant({ _tag: "StartTls" as const }),
  fc.record({
    _tag: fc.constant("Unknown" as const),
    verb: fc.stringMatching(/^[A-Za-z]{1,10}$/).filter((verb) => Schema.is(Command.Command)({ _tag: "Unknown", verb, arg: "" })),
    arg: fc.oneof(fc.constant(""), text)
  })
)

// Lines built to hit the parser's edges.
const fragment = fc.constantFrom(
  "MAIL", "RCPT", "FROM:", "TO:", "<", ">", "<>", "@", "\"", "\\", "[", "]", ":", ",", "=", " ", "\t", "IPv6:", "a", "b.c",
  "postmaster", "SIZE=1", "SMTPUTF8", "é", "\ud800", "\udc00", "😀", "BDAT", "AUTH", "LAST", "1", "=", "\r", "\u0000", "HELO"
)
const hostileLine = fc.array(fragment, { maxLength: 20 }).map((a) => a.join(""))

describe("properties", () => {
  it("parse(format(c)) is c for every valid command", () => {
    const isCommand = Schema.is(Command.Command)
    fc.assert(fc.property(command, (c) => {
      assert.isTrue(isCommand(c), JSON.stringify(c))
      assert.deepStrictEqual(Command.parse(Command.format(c), { utf8: true }), Result.succeed(c))
      assert.deepStrictEqual(Schema.encodeResult(Command.CommandFromLine)(c), Result.succeed(Command.format(c)))
    }), { numRuns: 3000 })
  })

  it("parse never throws, and the Schema decode agrees with it", () => {
    const decode = Schema.decodeUnknownResult(Command.CommandFromLine)
    const isCommand = Schema.is(Command.Command)
    const line = fc.oneof(fc.string({ unit: "binary" }), fc.string(), hostileLine, command.map(Command.format))
    fc.assert(fc.property(line, fc.boolean(), (s, utf8) => {
      const fast = Command.parse(s, { utf8 })
      if (Result.isSuccess(fast)) assert.isTrue(isCommand(fast.success), s)
      const viaSchema = decode(s)
      const reference = Command.parse(s, { utf8: true })
      assert.strictEqual(Result.isSuccess(viaSchema), Result.isSuccess(reference), s)
      if (Result.isSuccess(viaSchema) && Result.isSuccess(reference)) {
        assert.deepStrictEqual(viaSchema.success, reference.success)
      }
    }), { numRuns: 5000 })
  })

  it("runs in linear time on 100 KB hostile lines", () => {
    const n = 100_000
    const lines = [
      "A".repeat(n),
      `MAIL FROM:<${"a".repeat(n)}@b>`,
      `MAIL FROM:<a@b>${" X".repeat(n / 2)}`,
      `MAIL FROM:<a@b> ${"=".repeat(n)}`,
      `RCPT TO:<${"\"".repeat(n)}>`,
      `RCPT TO:<"${"\\\"".repeat(n / 2)}`,
      `RCPT TO:<${"@a,".repeat(n / 3)}b@c>`,
      `RCPT TO:<a@[IPv6:${"::".repeat(n / 2)}]>`,
      `EHLO ${" ".repeat(n)}x`,
      `NOOP ${"\t ".repeat(n / 2)}`,
      `BDAT ${"1".repeat(n)}`,
      `AUTH PLAIN ${"A".repeat(n)}`,
      `AUTH ${"PLAIN ".repeat(n / 6)}`,
      `${" ".repeat(n)}`,
      `MAIL FROM:${"<".repeat(n)}`
    ]
    const start = Date.now()
    for (const line of lines) {
      Command.parse(line)
      Command.parse(line, { utf8: true })
    }
    assert.isBelow(Date.now() - start, 5_000)
  })
})
