import { assert, describe, it } from "@effect/vitest"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as fc from "fast-check"
import * as Address from "../src/Address.ts"
import type { SmtpError } from "../src/SmtpError.ts"

const ok = (text: string, options?: Address.ParseOptions) => {
  const r = Address.parse(text, options)
  assert.isTrue(Result.isSuccess(r), `${text}: ${Result.isFailure(r) ? r.failure.message : ""}`)
  if (Result.isSuccess(r)) assert.strictEqual(r.success, text)
}
const bad = (text: string, reason: string, options?: Address.ParseOptions) => {
  const r = Address.parse(text, options)
  assert.isTrue(Result.isFailure(r), `${text} should be refused`)
  if (Result.isFailure(r)) assert.strictEqual(r.failure.message, reason)
}
const failure = <A>(r: Result.Result<A, SmtpError>): SmtpError => {
  if (Result.isSuccess(r)) throw new Error(`expected a failure, got ${String(r.success)}`)
  return r.failure
}
const reply = (e: SmtpError) => `${e.code} ${e.enhancedCode === "unset" || e.enhancedCode === "none" ? e.enhancedCode : e.enhancedCode.join(".")}`

// Valid addresses, built from the grammar of RFC 5321 4.1.2.
const atextChars = "abcxyzABCXYZ0189!#$%&'*+-/=?^_`{|}~".split("")
const atom = fc.string({ unit: fc.constantFrom(...atextChars), minLength: 1, maxLength: 8 })
const dotString = fc.array(atom, { minLength: 1, maxLength: 4 }).map((a) => a.join("."))
const qcontent = fc.integer({ min: 32, max: 126 }).map((c) => {
  const ch = String.fromCharCode(c)
  return ch === "\"" || ch === "\\" ? `\\${ch}` : ch
})
const quoted = fc.array(qcontent, { maxLength: 12 }).map((a) => `"${a.join("")}"`)
const letDig = fc.constantFrom(..."abzAZ09".split(""))
const label = fc.tuple(letDig, fc.string({ unit: fc.constantFrom(..."ab-9".split("")), maxLength: 6 }), letDig)
  .map(([a, mid, b]) => (mid === "" ? a : `${a}${mid}${b}`))
const domainName = fc.array(label, { minLength: 1, maxLength: 4 }).map((a) => a.join("."))
const ipv4 = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }).map((a) => a.join("."))
const hex = fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16))
const ipv6 = fc.oneof(
  fc.array(hex, { minLength: 8, maxLength: 8 }).map((a) => a.join(":")),
  fc.tuple(fc.array(hex, { maxLength: 3 }), fc.array(hex, { maxLength: 3 })).map(([h, t]) => `${h.join(":")}::${t.join(":")}`),
  fc.tuple(fc.array(hex, { minLength: 6, maxLength: 6 }), ipv4).map(([h, v4]) => `${h.join(":")}:${v4}`),
  fc.tuple(fc.array(hex, { maxLength: 2 }), ipv4).map(([h, v4]) => `${h.join(":")}::${v4}`)
)
const general = fc.tuple(label, fc.string({ unit: fc.constantFrom(..."az09:.@-".split("")), minLength: 1, maxLength: 8 }))
  .filter(([tag]) => tag.toLowerCase() !== "ipv6")
  .map(([tag, content]) => `${tag}:${content}`)
const literal = fc.oneof(ipv4, ipv6.map((s) => `IPv6:${s}`), general).map((s) => `[${s}]`)
const asciiAddress = fc.tuple(fc.oneof(dotString, quoted), fc.oneof({ weight: 3, arbitrary: domainName }, literal))
  .map(([l, d]) => `${l}@${d}`)

const uchar = fc.constantFrom("é", "ß", "中", "😀", "ü")
const uAtom = fc.tuple(fc.array(fc.constantFrom(...atextChars), { maxLength: 4 }), uchar)
  .map(([a, u]) => a.join("") + u)
const uLabel = fc.tuple(letDig, fc.array(uchar, { minLength: 1, maxLength: 4 })).map(([a, u]) => a + u.join(""))
const utf8Address = fc.tuple(uAtom, fc.array(fc.oneof(label, uLabel), { minLength: 1, maxLength: 3 }))
  .map(([l, d]) => `${l}@${d.join(".")}`)

describe("Address.parse", () => {
  it("accepts dot-strings, quoted strings and domain names as written", () => {
    ok("user@example.com")
    ok("first.last+tag@sub.example.co.uk")
    ok("!#$%&'*+-/=?^_`{|}~@example.com")
    ok("a@b")
    ok("a@123.example")
    ok("a@x-y.z9")
    ok("\"john doe\"@example.com")
    ok("\"a@b\\\"c\\\\\"@example.com")
    ok("\"\"@example.com")
    ok("\"with.. dots.\"@example.com")
    ok("User@EXAMPLE.Com")
    ok("postmaster")
    ok("PostMaster")
  })

  it("accepts address literals", () => {
    ok("a@[192.0.2.1]")
    ok("a@[0.0.0.0]")
    ok("a@[255.255.255.255]")
    ok("a@[IPv6:2001:db8:0:0:0:0:0:1]")
    ok("a@[IPv6:2001:db8::1]")
    ok("a@[ipv6:::1]")
    ok("a@[IPv6:::]")
    ok("a@[IPv6:1:2:3:4:5:6::]")
    ok("a@[IPv6:1:2:3:4:5:6:192.0.2.1]")
    ok("a@[IPv6:::ffff:192.0.2.1]")
    ok("a@[IPv6:1:2:3:4::192.0.2.1]")
    ok("a@[x-tag:any!content:here]")
    ok("a@[tag:a@b]")
  })

  it("refuses malformed local parts", () => {
    bad("@example.com", "empty local part")
    bad(".a@example.com", "empty local part")
    bad("a.@example.com", "empty atom in local part")
    bad("a..b@example.com", "empty atom in local part")
    bad("a b@example.com", "missing @domain") // in a path, a space ends the address
    bad("a(b)@example.com", "invalid character in local part")
    bad("a\"b\"@example.com", "invalid character in local part")
    bad("\"abc@example.com", "unterminated quoted local part")
    bad("\"a\tb\"@example.com", "invalid character in quoted local part")
    bad("\"a\\\u0001\"@example.com", "invalid quoted pair in local part")
    bad("\"a\"b@example.com", "invalid character in local part")
    bad("abc", "missing @domain")
    bad(`${"a".repeat(65)}@example.com`, "local part longer than 64 octets")
    ok(`${"a".repeat(64)}@example.com`)
    bad(`${"é".repeat(33)}@example.com`, "local part longer than 64 octets", { utf8: true })
    ok(`${"é".repeat(32)}@example.com`, { utf8: true })
  })

  it("refuses malformed domains", () => {
    bad("a@", "missing domain")
    bad("a@-b.example", "domain label starts with a hyphen")
    bad("a@b-.example", "domain label ends with a hyphen")
    bad("a@b..example", "empty domain label")
    bad("a@example.", "empty domain label")
    bad("a@exa_mple.com", "unexpected text after the address")
    bad("a@b@c", "unexpected text after the address")
    bad(`a@${"a".repeat(64)}.example`, "domain label longer than 63 octets")
    ok(`a@${"a".repeat(63)}.example`)
    // A 255-octet domain does not fit in a 256-octet path; the domain limit shows in source routes.
    const long = Array.from({ length: 4 }, () => "a".repeat(63)).join(".")
    bad(`a@${long}`, "address longer than 254 octets")
    assert.deepStrictEqual(Address.parseReversePath(`<@${long}:a@b>`), Result.succeed(Address.make("a@b")))
    assert.strictEqual(
      failure(Address.parseReversePath(`<@${long}.b:a@b>`)).message,
      "Bad sender address syntax: source route: domain longer than 255 octets"
    )
  })

  it("refuses malformed address literals", () => {
    bad("a@[1.2.3]", "invalid IPv4 address literal")
    bad("a@[1.2.3.4.5]", "invalid IPv4 address literal")
    bad("a@[1.2.3.256]", "invalid IPv4 address literal")
    bad("a@[1.2.3.1234]", "invalid IPv4 address literal")
    bad("a@[1..3.4]", "invalid IPv4 address literal")
    bad("a@[]", "invalid IPv4 address literal")
    bad("a@[1.2.3.4", "unterminated address literal")
    bad("a@[1.2.3 .4]", "invalid character in address literal")
    bad("a@[a\\b]", "invalid character in address literal")
    bad("a@[IPv6:1:2:3:4:5:6:7]", "invalid IPv6 address literal")
    bad("a@[IPv6:1:2:3:4:5:6:7:8:9]", "invalid IPv6 address literal")
    bad("a@[IPv6:1::2::3]", "invalid IPv6 address literal")
    bad("a@[IPv6::::1]", "invalid IPv6 address literal")
    bad("a@[IPv6:12345::1]", "invalid IPv6 address literal")
    bad("a@[IPv6:g::1]", "invalid IPv6 address literal")
    bad("a@[IPv6:1:]", "invalid IPv6 address literal")
    bad("a@[IPv6::1]", "invalid IPv6 address literal")
    // RFC 5321: "::" stands for at least two groups, so at most six others may be written.
    bad("a@[IPv6:1:2:3:4:5:6:7::]", "invalid IPv6 address literal")
    bad("a@[IPv6:1:2:3:4:5::1.2.3.4]", "invalid IPv6 address literal")
    bad("a@[IPv6:1:2:3:4:5:1.2.3.4]", "invalid IPv6 address literal")
    bad("a@[IPv6:::1.2.3.256]", "invalid IPv6 address literal")
    ok("a@[-tag:x]") // Ldh-str may start with a hyphen
    bad("a@[ta_g:x]", "invalid address literal tag")
    bad("a@[tag-:x]", "invalid address literal tag")
    bad("a@[tag:]", "empty address literal")
  })

  it("accepts UTF-8 only with SMTPUTF8", () => {
    bad("jöran@example.com", "non-ASCII address needs SMTPUTF8")
    bad("user@bücher.example", "non-ASCII address needs SMTPUTF8")
    ok("jöran@example.com", { utf8: true })
    ok("用户@例子.广告", { utf8: true })
    ok("\"ü x\"@example.com", { utf8: true })
    ok("a@xn--bcher-kva.example")
    ok("😀@example.com", { utf8: true })
    bad("a\ud800@example.com", "invalid Unicode", { utf8: true })
    bad("a\udc00b@example.com", "invalid Unicode", { utf8: true })
    bad("a@b\ud800", "invalid Unicode", { utf8: true })
    bad("a@ü-.example", "domain label ends with a hyphen", { utf8: true })
  })

  it("make throws an AddressError; the Schema validates and brands", () => {
    assert.strictEqual(Address.make("a@b.example"), "a@b.example")
    assert.strictEqual(Address.make("ü@b.example"), "ü@b.example")
    assert.throws(() => Address.make("nope"), /missing @domain/)
    const isAddress = Schema.is(Address.Address)
    assert.isTrue(isAddress("a@b"))
    assert.isTrue(isAddress("postmaster"))
    assert.isFalse(isAddress("a@b "))
    const decoded = Schema.decodeUnknownResult(Address.Address)("a..b@c")
    assert.isTrue(Result.isFailure(decoded))
    if (Result.isFailure(decoded)) assert.include(decoded.failure.message, "empty atom in local part")
    const isMailbox = Schema.is(Address.Mailbox)
    assert.isTrue(isMailbox("postmaster@b"))
    assert.isFalse(isMailbox("postmaster"))
    assert.isFalse(isMailbox("a"))
  })
})

describe("Address helpers", () => {
  it("split local part and domain as written", () => {
    const a = Address.make("\"a@b\\\"\"@[tag:c@d]")
    assert.strictEqual(Address.localPart(a), "\"a@b\\\"\"")
    assert.strictEqual(Address.domain(a), "[tag:c@d]")
    assert.strictEqual(Address.localPart(Address.make("x.y@z")), "x.y")
    assert.strictEqual(Address.domain(Address.make("x.y@z")), "z")
    assert.strictEqual(Address.localPart(Address.make("Postmaster")), "Postmaster")
    assert.strictEqual(Address.domain(Address.make("Postmaster")), "")
  })

  it("isUtf8 and isPostmaster", () => {
    assert.isFalse(Address.isUtf8(Address.make("a@b")))
    assert.isTrue(Address.isUtf8(Address.make("a@bü")))
    assert.isTrue(Address.isPostmaster(Address.make("POSTMASTER")))
    assert.isFalse(Address.isPostmaster(Address.make("postmaster@example.com")))
  })
})

describe("paths", () => {
  it("reverse-path: <>, brackets, source routes, no brackets", () => {
    const p = (t: string) => Address.parseReversePath(t)
    assert.deepStrictEqual(p("<>"), Result.succeed(null))
    assert.deepStrictEqual(p("<a@b.example>"), Result.succeed(Address.make("a@b.example")))
    assert.deepStrictEqual(p("a@b.example"), Result.succeed(Address.make("a@b.example")))
    assert.deepStrictEqual(p("<@r1.example,@[1.2.3.4]:a@b.example>"), Result.succeed(Address.make("a@b.example")))
    assert.deepStrictEqual(p("<\"x> y\"@b>"), Result.succeed(Address.make("\"x> y\"@b")))
  })

  it("reverse-path errors are 501 5.1.7 with a reason", () => {
    const e = (t: string) => failure(Address.parseReversePath(t))
    assert.strictEqual(reply(e("<postmaster>")), "501 5.1.7")
    assert.strictEqual(e("<postmaster>").message, "Bad sender address syntax: missing @domain")
    assert.strictEqual(e("").message, "Bad sender address syntax: missing address")
    assert.strictEqual(e("<a@b").message, "Bad sender address syntax: missing closing >")
    assert.strictEqual(e("<a@b>x").message, "Bad sender address syntax: unexpected text after the address")
    assert.strictEqual(e("<a@b> ").message, "Bad sender address syntax: unexpected text after the address")
    assert.strictEqual(e("<@a.example:>").message, "Bad sender address syntax: missing address")
    assert.strictEqual(e("<@a.example;b@c>").message, "Bad sender address syntax: malformed source route")
    assert.strictEqual(e("<@a.example,b@c>").message, "Bad sender address syntax: malformed source route")
    assert.strictEqual(e("<@-a:b@c>").message, "Bad sender address syntax: source route: domain label starts with a hyphen")
    assert.strictEqual(e("< a@b>").message, "Bad sender address syntax: missing address")
    assert.strictEqual(e("<a@b >").message, "Bad sender address syntax: missing closing >")
    const utf8 = e("<ü@b>")
    assert.strictEqual(reply(utf8), "553 5.6.7")
    assert.strictEqual(utf8.message, "Non-ASCII sender address requires SMTPUTF8")
    assert.deepStrictEqual(Address.parseReversePath("<ü@b>", { utf8: true }), Result.succeed(Address.make("ü@b")))
  })

  it("forward-path: <postmaster> in any case, no <>, 501 5.1.3", () => {
    const p = (t: string) => Address.parseForwardPath(t)
    assert.deepStrictEqual(p("<postmaster>"), Result.succeed(Address.make("postmaster")))
    assert.deepStrictEqual(p("<PostMaster>"), Result.succeed(Address.make("PostMaster")))
    assert.deepStrictEqual(p("postmaster"), Result.succeed(Address.make("postmaster")))
    assert.deepStrictEqual(p("<postmaster@x.example>"), Result.succeed(Address.make("postmaster@x.example")))
    assert.strictEqual(failure(p("<@a.example:postmaster>")).message, "Bad recipient address syntax: missing @domain")
    assert.strictEqual(failure(p("<postmasters>")).message, "Bad recipient address syntax: missing @domain")
    const nullPath = failure(p("<>"))
    assert.strictEqual(reply(nullPath), "501 5.1.3")
    assert.strictEqual(nullPath.message, "Bad recipient address syntax: the null path <> is not a recipient")
    assert.strictEqual(reply(failure(p("<a..b@c>"))), "501 5.1.3")
    assert.strictEqual(reply(failure(p("<用户@例子.广告>"))), "553 5.6.7")
  })

  it("limits the path to 256 octets", () => {
    const local = "a".repeat(64)
    const domain = `${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}` // 189 octets
    const longest = `${local}@${domain}` // 254 octets: 256 with the brackets
    assert.deepStrictEqual(Address.parseForwardPath(`<${longest}>`), Result.succeed(Address.make(longest)))
    assert.strictEqual(
      failure(Address.parseForwardPath(`<${local}@${domain}d>`)).message,
      "Bad recipient address syntax: address longer than 254 octets"
    )
  })

  it("scanPath reports where the path ends", () => {
    const line = "FROM:<a@b> SIZE=1"
    assert.deepStrictEqual(
      Address.scanPath(line, 5, "sender"),
      Result.succeed({ address: Address.make("a@b"), end: 10 })
    )
    assert.deepStrictEqual(Address.scanPath("x@y z", 0, "recipient"), Result.succeed({ address: Address.make("x@y"), end: 3 }))
    assert.deepStrictEqual(Address.scanPath("postmaster\tz", 0, "recipient"), Result.succeed({ address: Address.make("postmaster"), end: 10 }))
  })
})

describe("properties", () => {
  it("every address built from the grammar parses to itself", () => {
    fc.assert(fc.property(asciiAddress, (a) => {
      if (new TextEncoder().encode(a).length > 254 || Address.localPart(a as Address.Address).length > 64) return
      const r = Address.parse(a)
      assert.deepStrictEqual(r, Result.succeed(a as Address.Address))
      assert.strictEqual(`${Address.localPart(a as Address.Address)}@${Address.domain(a as Address.Address)}`, a)
      assert.deepStrictEqual(Address.parseForwardPath(`<${a}>`), Result.succeed(a as Address.Address))
    }), { numRuns: 2000 })
  })

  it("UTF-8 addresses need the utf8 option", () => {
    fc.assert(fc.property(utf8Address, (a) => {
      if (new TextEncoder().encode(a).length > 254) return
      assert.isTrue(Result.isFailure(Address.parse(a)))
      assert.deepStrictEqual(Address.parse(a, { utf8: true }), Result.succeed(a as Address.Address))
      assert.isTrue(Address.isUtf8(a))
    }))
  })

  it("never throws, and whatever it accepts satisfies the Schema", () => {
    const isAddress = Schema.is(Address.Address)
    const noise = fc.string({ unit: fc.constantFrom(..."a.@\"\\[]:<>,- é\ud800IPv6".split("")), maxLength: 40 })
    fc.assert(fc.property(fc.oneof(fc.string({ unit: "binary" }), noise), fc.boolean(), (s, utf8) => {
      const r = Address.parse(s, { utf8 })
      if (Result.isSuccess(r)) assert.isTrue(isAddress(r.success))
      for (const kind of ["sender", "recipient"] as const) {
        const p = Address.scanPath(s, 0, kind)
        if (Result.isSuccess(p) && p.success.address !== null) assert.isTrue(isAddress(p.success.address))
      }
      Address.parseReversePath(s, { utf8 })
      Address.parseForwardPath(s, { utf8 })
    }), { numRuns: 3000 })
  })

  it("runs in linear time on 100 KB hostile inputs", () => {
    const n = 100_000
    const hostile = [
      "a".repeat(n),
      `"${"\\a".repeat(n / 2)}`,
      `${"a.".repeat(n / 2)}@b`,
      `a@${"b.".repeat(n / 2)}`,
      `a@${"b-".repeat(n / 2)}`,
      `a@[${"1".repeat(n)}]`,
      `a@[IPv6:${":".repeat(n)}]`,
      `a@[IPv6:${"1:".repeat(n / 2)}]`,
      `a@[${"1.".repeat(n / 2)}]`,
      `<${"@a,".repeat(n / 3)}:b@c>`,
      `<${"<".repeat(n)}`,
      "é".repeat(n),
      "\ud83d\ude00".repeat(n / 2)
    ]
    const start = Date.now()
    for (const s of hostile) {
      Address.parse(s, { utf8: true })
      Address.parseReversePath(s, { utf8: true })
      Address.parseForwardPath(`<${s}>`, { utf8: true })
    }
    assert.isBelow(Date.now() - start, 5_000) // a backtracking parser would take minutes
  })
})
