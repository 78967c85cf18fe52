import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { createHash, createHmac } from "node:crypto"
import * as B64 from "../../src/internal/sasl/base64.ts"
import * as Bytes from "../../src/internal/sasl/bytes.ts"
import { hmacMd5, md5 } from "../../src/internal/sasl/md5.ts"
import { saslprep } from "../../src/internal/sasl/saslprep.ts"

const hex = (b: Uint8Array) => Bytes.toHex(b)
const ascii = (s: string) => Bytes.utf8(s)

describe("md5", () => {
  // RFC 1321 appendix A.5, the test suite.
  it.each([
    ["", "d41d8cd98f00b204e9800998ecf8427e"],
    ["a", "0cc175b9c0f1b6a831c399e269772661"],
    ["abc", "900150983cd24fb0d6963f7d28e17f72"],
    ["message digest", "f96b697d7cb7938d525a2f31aaf161d0"],
    ["abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"],
    ["ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"],
    [
      "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
      "57edf4a22be3c955ac49da2e2107b67a"
    ]
  ])("RFC 1321 MD5(%j)", (input, expected) => {
    assert.strictEqual(hex(md5(ascii(input))), expected)
  })

  // RFC 2104 section 2 test vectors (and RFC 2202's larger-than-block key).
  it("RFC 2104 HMAC-MD5 vectors", () => {
    assert.strictEqual(hex(hmacMd5(new Uint8Array(16).fill(0x0b), ascii("Hi There"))), "9294727a3638bb1c13f48ef8158bfc9d")
    assert.strictEqual(hex(hmacMd5(ascii("Jefe"), ascii("what do ya want for nothing?"))), "750c783e6ab0b503eaa86e310a5db738")
    assert.strictEqual(hex(hmacMd5(new Uint8Array(16).fill(0xaa), new Uint8Array(50).fill(0xdd))), "56be34521d144c88dbb8c733f0e8b3f6")
    assert.strictEqual(
      hex(hmacMd5(new Uint8Array(80).fill(0xaa), ascii("Test Using Larger Than Block-Size Key - Hash Key First"))),
      "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"
    )
  })

  it("agrees with node:crypto on arbitrary input (all padding boundaries)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ maxLength: 100 }), (msg, key) => {
        assert.strictEqual(hex(md5(msg)), createHash("md5").update(msg).digest("hex"))
        assert.strictEqual(hex(hmacMd5(key, msg)), createHmac("md5", key).update(msg).digest("hex"))
      }),
      { numRuns: 300 }
    )
  })
})

describe("base64", () => {
  // RFC 4648 section 10.
  it.each([
    ["", ""],
    ["f", "Zg=="],
    ["fo", "Zm8="],
    ["foo", "Zm9v"],
    ["foob", "Zm9vYg=="],
    ["fooba", "Zm9vYmE="],
    ["foobar", "Zm9vYmFy"]
  ])("RFC 4648 %j <-> %j", (plain, encoded) => {
    assert.strictEqual(B64.encode(ascii(plain)), encoded)
    assert.deepStrictEqual(B64.decode(encoded), ascii(plain))
  })

  it.each([
    "Zg", // no padding
    "Zg=", // short padding
    "Zm9", // length not a multiple of 4
    "Zh==", // non-zero unused bits
    "Zm9=", // non-zero unused bits
    "Z===",
    "====",
    "Zg==Zg==", // padding in the middle
    "Zm9v\r\n",
    " Zm9v",
    "Zm 9v",
    "Zm9v!mFy",
    "Zm9-", // base64url alphabet
    "Zm9_",
    "Zm9\u00e9"
  ])("rejects %j", (text) => {
    assert.strictEqual(B64.decode(text), undefined)
  })

  it("round-trips and agrees with Buffer on arbitrary bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const text = B64.encode(bytes)
        assert.strictEqual(text, Buffer.from(bytes).toString("base64"))
        assert.deepStrictEqual(B64.decode(text), bytes)
        assert.strictEqual(B64.decodedLength(text), bytes.length)
      })
    )
  })

  it("never throws on arbitrary strings, and accepts only canonical encodings", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (text) => {
        const bytes = B64.decode(text)
        if (bytes !== undefined) assert.strictEqual(B64.encode(bytes), text)
      }),
      { numRuns: 2000 }
    )
  })
})

describe("constantTimeEqual", () => {
  it("compares bytes", () => {
    assert.isTrue(Bytes.constantTimeEqual(ascii("abc"), ascii("abc")))
    assert.isTrue(Bytes.constantTimeEqual(new Uint8Array(0), new Uint8Array(0)))
    assert.isFalse(Bytes.constantTimeEqual(ascii("abc"), ascii("abd")))
    assert.isFalse(Bytes.constantTimeEqual(ascii("abc"), ascii("ab")))
    assert.isFalse(Bytes.constantTimeEqual(ascii("ab"), ascii("abc")))
    assert.isFalse(Bytes.constantTimeEqual(ascii("\0"), new Uint8Array(0)))
  })

  it("reads every byte whatever the first difference (no early exit)", () => {
    // Count index reads through a Proxy: a mismatch in the first byte costs the same as none.
    const counting = (bytes: Uint8Array) => {
      let reads = 0
      const p = new Proxy(bytes, {
        get(target, key) {
          if (typeof key === "string" && /^\d+$/.test(key)) reads++
          const v: unknown = Reflect.get(target, key)
          return typeof v === "function" ? v.bind(target) : v
        }
      })
      return { p, reads: () => reads }
    }
    const a = counting(ascii("secret-password"))
    Bytes.constantTimeEqual(a.p, ascii("Xecret-password"))
    const b = counting(ascii("secret-password"))
    Bytes.constantTimeEqual(b.p, ascii("secret-password"))
    assert.strictEqual(a.reads(), 15)
    assert.strictEqual(b.reads(), 15)
  })

  it("agrees with plain equality on arbitrary input", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 8 }), fc.uint8Array({ maxLength: 8 }), (a, b) => {
        assert.strictEqual(Bytes.constantTimeEqual(a, b), Buffer.from(a).equals(Buffer.from(b)))
      })
    )
  })
})

describe("saslprep", () => {
  // RFC 4013 section 3 examples.
  it.each([
    ["I\u00adX", "IX"], // SOFT HYPHEN mapped to nothing
    ["user", "user"],
    ["USER", "USER"],
    ["\u00aa", "a"], // NFKC
    ["\u2168", "IX"], // NFKC
    ["a\u00a0b", "a b"] // non-ASCII space mapped to SPACE
  ])("prepares %j as %j", (input, expected) => {
    assert.strictEqual(saslprep(input), expected)
  })

  it.each([
    ["\u0007"], // prohibited: control character
    ["\u0627\u0031"] // bidi rule: RandALCat string must start and end with RandALCat
  ])("refuses %j", (input) => {
    assert.strictEqual(saslprep(input), undefined)
  })
})
