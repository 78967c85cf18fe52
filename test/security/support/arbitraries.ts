/**
 * Generators of hostile SMTP input. Every value is a "latin1 string": one char per byte, so
 * any byte sequence (NULs, lone CR/LF, invalid UTF-8) can be built with string operations and
 * sent with `fromLatin1`.
 */
import * as fc from "fast-check"

/** Real UTF-8 bytes of `text`, as a latin1 string. */
const utf8 = (text: string): string => Buffer.from(text, "utf8").toString("latin1")
const base64 = (latin1: string): string => Buffer.from(latin1, "latin1").toString("base64")

const byte = fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c))
export const bytes = (maxLength: number) => fc.string({ unit: byte, maxLength })
/** Printable ASCII without space: what a well-behaved word looks like. */
const word = fc.string({ unit: fc.integer({ min: 33, max: 126 }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 12 })
const repeat = (unit: string, min: number, max: number) => fc.integer({ min, max }).map((n) => unit.repeat(n))

/** Mostly CRLF; sometimes a bare LF, a bare CR, nothing, or worse. */
const lineEnd = fc.oneof(
  { weight: 8, arbitrary: fc.constant("\r\n") },
  { weight: 1, arbitrary: fc.constantFrom("\n", "\r", "", "\r\r\n", "\n\r", "\0\r\n", " \r\n", "\r\0\n") }
)

const verbs = ["HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "VRFY", "EXPN", "HELP", "AUTH", "STARTTLS"]

/** A verb in any case, an unknown one, or a look-alike. */
const verb = fc.oneof(
  { weight: 4, arbitrary: fc.mixedCase(fc.constantFrom(...verbs)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom("XCLIENT", "ETRN", "TURN", "ATRN", "XEXCH50", "GET", "\xff\xfeM", utf8("MAİL"), utf8("ſTARTTLS"), "MAIL\0", "M AIL", "\tNOOP")
  },
  { weight: 1, arbitrary: word }
)

/** Paths of MAIL FROM / RCPT TO, from valid to pathological. */
const path = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom("<a@b.example>", "<>", "<postmaster>", "<Postmaster@b.example>", "<\"a b\"@b.example>") },
  {
    weight: 6,
    arbitrary: fc.oneof(
      repeat("a", 60, 300).map((l) => `<${l}@example.com>`),
      repeat("\\\"", 1, 700).map((q) => `<"${q}"@example.com>`),
      repeat("\"", 1, 700).map((q) => `<${q}@example.com>`),
      fc.integer({ min: 1, max: 600 }).map((n) => "<".repeat(n) + "a@b.example" + ">".repeat(n)),
      repeat("@r.example,", 1, 300).map((r) => `<${r}@s.example:a@b.example>`),
      repeat("[", 1, 600).map((b) => `<a@${b}>`),
      repeat("x.", 1, 300).map((d) => `<a@${d}example>`),
      repeat("a.", 1, 100).map((l) => `<${l}a@b.example>`),
      repeat("\"\"", 1, 500).map((q) => `<${q}@b.example>`),
      fc.constantFrom(
        "<a@[IPv6:::::::::1]>",
        "<a@[300.1.1.1]>",
        `<a@[IPv6:${"1:".repeat(40)}1]>`,
        "<a@[127.0.0.1]>",
        "<a@b",
        "a@b.example",
        "<a@b.example>>",
        "<<a@b.example>",
        "<\"a\0\"@b.example>",
        "<\xff\xfe@b.example>",
        "<a@\xc3\x28.example>",
        utf8("<José@exämple.com>"),
        utf8("<用户@例子.广告>"),
        "<a@b.example\x7f>",
        "<@>",
        "<@:a@b>",
        "<a@-b.example>",
        "<.a@b.example>",
        "<a..b@c.example>",
        "<\"\"@b.example>",
        `<a@${"b".repeat(64)}.example>`,
        `<a@${`${"b".repeat(63)}.`.repeat(5)}x>`,
        "< a@b.example >",
        "<a@b.example> <c@d.example>",
        ":<a@b.example>",
        "<a\\@b@c.example>"
      ),
      bytes(300).map((s) => `<${s}>`)
    )
  }
)

/** One ESMTP parameter of MAIL / RCPT, valid or not. */
const parameter = fc.oneof(
  fc.nat().map((n) => `SIZE=${n}`),
  fc.constantFrom(
    "SIZE=-1",
    `SIZE=${"9".repeat(30)}`,
    "SIZE=",
    "SIZE",
    "SIZE=1e9",
    "BODY=7BIT",
    "BODY=8BITMIME",
    "BODY=BINARYMIME",
    "BODY=JUNK",
    "SMTPUTF8",
    "SMTPUTF8=yes",
    "REQUIRETLS",
    "RET=FULL",
    "RET=X",
    "NOTIFY=NEVER",
    "NOTIFY=NEVER,SUCCESS",
    "NOTIFY=SUCCESS,FAILURE,DELAY",
    "NOTIFY=",
    "ORCPT=rfc822;a@b.example",
    `ORCPT=rfc822;${"+41".repeat(200)}`,
    "ORCPT=rfc822;+ZZ",
    "ORCPT=x",
    "AUTH=<>",
    "AUTH=a+2Bb@c",
    "BY=120;R",
    "BY=-5;N",
    "BY=x",
    "MT-PRIORITY=3",
    "MT-PRIORITY=99",
    "RRVS=2014-04-03T23:01:00Z",
    "RRVS=junk",
    "ENVID=abc",
    `ENVID=${"+2B".repeat(60)}`,
    "=x",
    "X=",
    "X==",
    "=",
    "XUNKNOWN"
  ),
  fc.tuple(word, word).map(([k, v]) => `${k}=${v}`),
  bytes(40)
)

/** A few parameters, or the same one hundreds to thousands of times. */
const parameters = fc.oneof(
  { weight: 9, arbitrary: fc.array(parameter, { maxLength: 8 }).map((ps) => ps.map((p) => ` ${p}`).join("")) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 100, max: 4000 }), parameter).map(([n, p]) => ` ${p}`.repeat(n)) }
)

const mailOrRcpt = fc.tuple(
  fc.mixedCase(fc.constantFrom("MAIL FROM:", "RCPT TO:", "MAIL FROM: ", "RCPT TO:\t", "MAIL FROM", "RCPT  TO:")),
  path,
  parameters
).map(([head, p, ps]) => head + p + ps)

/** BDAT with every kind of size, and some payload (which may or may not match the size). */
const bdat = fc.tuple(
  fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 64 }).map(String) },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        "999999999999999",
        "9".repeat(16),
        "-1",
        "-0",
        "abc",
        "1e3",
        "0x10",
        "+5",
        "",
        "5.0",
        utf8("١٢"),
        "00000000000000000001",
        String(2 ** 53)
      )
    }
  ),
  fc.constantFrom("", " LAST", " last", " LAST extra", " LASTX"),
  bytes(80)
).map(([size, last, payload]) => `BDAT ${size}${last}\r\n${payload}`)

/** A SASL response line: cancel, empty, base64 of anything, not base64, or too long. */
const saslLine = fc.oneof(
  { weight: 2, arbitrary: fc.constantFrom("*", "=") },
  { weight: 3, arbitrary: bytes(60).map(base64) },
  { weight: 3, arbitrary: fc.constantFrom(base64("\0user\0pass"), base64("\0user\0wrong"), base64("user"), base64("pass"), base64("user\0pass")) },
  { weight: 2, arbitrary: fc.constantFrom("!!!!", "a===", "====", "YQ", "YWJj=", "Y W J j", "dXNlcg==\0") },
  { weight: 2, arbitrary: bytes(40) },
  { weight: 1, arbitrary: repeat("QUFB", 3000, 3300) },
  // Past the 12288 limit: dropped and answered (up to twice it), or a hang-up beyond.
  { weight: 1, arbitrary: repeat("QUFB", 4000, 7000) }
)

const auth = fc.tuple(
  fc.mixedCase(fc.constantFrom("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER", "ANONYMOUS", "EXTERNAL", "X-UNKNOWN", "A".repeat(21), "PL@IN")),
  fc.option(saslLine, { nil: undefined, freq: 2 }),
  fc.array(fc.tuple(saslLine, lineEnd), { maxLength: 4 })
).map(([mechanism, initial, responses]) =>
  `AUTH ${mechanism}${initial === undefined ? "" : ` ${initial}`}\r\n` + responses.map(([l, e]) => l + e).join("")
)

/** DATA, body lines with dots and bare line endings, and some ending (or none). */
const data = fc.tuple(
  fc.array(fc.tuple(fc.oneof(bytes(100), fc.constantFrom(".", "..", ". ", ".\r", "\n.", "MAIL FROM:<evil@example.net>", "QUIT")), lineEnd), {
    maxLength: 10
  }),
  fc.constantFrom(".\r\n", "\n.\n", "\r.\r\n", "\n.\r\n", "\r\n.\n", "", ".\n", ".\r")
).map(([lines, end]) => "DATA\r\n" + lines.map(([l, e]) => l + e).join("") + end)

/** Things that are not SMTP at all: HTTP, a TLS ClientHello, PROXY headers. */
export const foreignProtocol = fc.constantFrom(
  "GET / HTTP/1.1\r\nHost: mx.example\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
  "POST /submit HTTP/1.1\r\nHost: mx.example\r\nContent-Type: text/plain\r\nContent-Length: 48\r\n\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n",
  "CONNECT mx.example:25 HTTP/1.1\r\nHost: mx.example:25\r\n\r\n",
  "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
  "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + "\x00".repeat(32) + "\x00\x00\x20\xc0\x2b\xc0\x2f",
  "PROXY TCP4 192.0.2.1 192.0.2.2 12345 25\r\n",
  "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c",
  "\x04\x01\x00\x19\x7f\x00\x00\x01\x00"
)

/** Lines that are not SMTP at all: message headers (content read as commands), HTTP, binary. */
const notSmtp = fc.oneof(
  fc.tuple(fc.constantFrom("Subject", "From", "To", "X-Mailer", "Received", "Content-Type", "DKIM-Signature"), fc.constantFrom(": ", ":", " : "), bytes(40))
    .map(([name, colon, value]) => `${name}${colon}${value}\r\n`),
  fc.constantFrom("GET /favicon.ico HTTP/1.1\r\n", "HEAD / HTTP/1.0\r\n", "OPTIONS * HTTP/1.1\r\n", "\x16\x03\x01\x02\x00\r\n", "<html>\r\n", "--boundary\r\n")
)

/** Lines at and around every length limit. */
const longLine = fc.tuple(
  fc.constantFrom("NOOP ", "MAIL FROM:<", "EHLO ", "", "AUTH PLAIN ", "VRFY "),
  fc.oneof(fc.integer({ min: 1990, max: 2010 }), fc.integer({ min: 12280, max: 12300 }), fc.constant(30_000)),
  fc.constantFrom("x", "A", "\xff", "\0", " ")
).map(([head, n, c]) => head + c.repeat(Math.max(0, n - head.length - 2)) + "\r\n")

/** Commands that move the server into its deeper states. */
const stepping = fc.constantFrom(
  "EHLO c.example\r\n",
  "HELO c.example\r\n",
  "MAIL FROM:<a@b.example>\r\n",
  "RCPT TO:<c@d.example>\r\n",
  "RSET\r\n",
  "NOOP\r\n",
  "STARTTLS\r\n",
  "VRFY postmaster\r\n",
  "HELP\r\n"
)

const freeLine = fc.tuple(verb, fc.option(fc.tuple(fc.constantFrom(" ", "\t", "  "), bytes(60)), { nil: undefined }), lineEnd).map(
  ([v, arg, end]) => v + (arg === undefined ? "" : arg[0] + arg[1]) + end
)

/** One unit of a hostile conversation. */
const atom = fc.oneof(
  { weight: 6, arbitrary: stepping },
  { weight: 2, arbitrary: freeLine },
  { weight: 5, arbitrary: fc.tuple(mailOrRcpt, lineEnd).map(([l, e]) => l + e) },
  { weight: 3, arbitrary: bdat },
  { weight: 3, arbitrary: auth },
  { weight: 3, arbitrary: data },
  { weight: 1, arbitrary: foreignProtocol },
  { weight: 1, arbitrary: notSmtp },
  { weight: 1, arbitrary: longLine },
  { weight: 1, arbitrary: bytes(200) },
  { weight: 1, arbitrary: fc.constant("QUIT\r\n") }
)

const cutUp = (text: fc.Arbitrary<string>) =>
  fc.record({ text, cuts: fc.array(fc.nat(), { maxLength: 8 }), paced: fc.boolean() })

/** A conversation: maybe a proper start, then hostile units, as bytes cut at random places. */
export const conversation = cutUp(
  fc.tuple(
    fc.constantFrom("", "EHLO c.example\r\n", "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"),
    fc.array(atom, { minLength: 1, maxLength: 25 })
  ).map(([start, atoms]) => start + atoms.join(""))
)

/** After EHLO, AUTH exchanges only (and the odd command in between). */
export const authConversation = cutUp(
  fc.array(fc.oneof({ weight: 4, arbitrary: auth }, { weight: 1, arbitrary: stepping }), { minLength: 1, maxLength: 10 })
    .map((atoms) => "EHLO c.example\r\n" + atoms.join(""))
)

/** Lines of every length up to a few hundred bytes (for a tight body line limit), some with a bare line end. */
const longBodyLines = fc.array(fc.tuple(fc.integer({ min: 0, max: 300 }), lineEnd), { maxLength: 8 })
  .map((lines) => lines.map(([n, end]) => "L".repeat(n) + end).join(""))

/** BDAT chunks of text with long lines and bare line ends, split across chunks anywhere. */
const bdatText = fc.tuple(longBodyLines, fc.array(fc.nat(), { maxLength: 4 })).map(([text, cuts]) => {
  const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b)
  const parts: Array<string> = []
  let from = 0
  for (const p of [...points, text.length]) {
    parts.push(text.slice(from, p))
    from = p
  }
  return parts.map((c, i) => `BDAT ${c.length}${i === parts.length - 1 ? " LAST" : ""}\r\n${c}`).join("")
})

/** Inside a transaction: DATA and BDAT bodies of every shape, new envelopes in between. */
export const bodyConversation = cutUp(
  fc.array(
    fc.oneof(
      { weight: 3, arbitrary: data },
      { weight: 3, arbitrary: bdat },
      { weight: 2, arbitrary: longBodyLines.map((text) => `DATA\r\n${text}\r\n.\r\n`) },
      { weight: 2, arbitrary: bdatText },
      { weight: 2, arbitrary: fc.constant("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n") },
      { weight: 1, arbitrary: fc.constantFrom("MAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<c@d.example>\r\n", "RSET\r\n") }
    ),
    { minLength: 1, maxLength: 12 }
  ).map((atoms) => "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n" + atoms.join(""))
)

/** Bytes with no structure at all. */
export const noise = cutUp(bytes(3000))
