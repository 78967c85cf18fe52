import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import * as Effect from "effect/Effect"
import * as Base64 from "effect/encoding/Base64"
import * as Hex from "effect/encoding/Hex"
import * as Result from "effect/Result"
import { createHmac } from "node:crypto"
import * as B64 from "../../../src/internal/sasl/base64.ts"
import * as Bytes from "../../../src/internal/sasl/bytes.ts"
import * as Crypto from "../../../src/internal/sasl/crypto.ts"
import { saslprep } from "../../../src/internal/sasl/saslprep.ts"
import { constantTimeEqual } from "../../../src/Sasl.ts"

const hex = (b: Uint8Array) => Hex.encode(b)
const ascii = (s: string) => Bytes.utf8(s)

describe("hmacMd5 (RFC 2104 on effect/crypto's Digest.md5)", () => {
  const hmac = (key: Uint8Array, message: Uint8Array) => hex(Effect.runSync(Crypto.hmacMd5(key, message)))

  // RFC 2104 section 2 test vectors (and RFC 2202's larger-than-block key).
  it("RFC 2104 HMAC-MD5 vectors", () => {
    assert.strictEqual(hmac(new Uint8Array(16).fill(0x0b), ascii("Hi There")), "9294727a3638bb1c13f48ef8158bfc9d")
    assert.strictEqual(hmac(ascii("Jefe"), ascii("what do ya want for nothing?")), "750c783e6ab0b503eaa86e310a5db738")
    assert.strictEqual(hmac(new Uint8Array(16).fill(0xaa), new Uint8Array(50).fill(0xdd)), "56be34521d144c88dbb8c733f0e8b3f6")
    assert.strictEqual(
      hmac(new Uint8Array(80).fill(0xaa), ascii("Test Using Larger Than Block-Size Key - Hash Key First")),
      "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"
    )
  })

  it("agrees with node:crypto on arbitrary input (keys shorter, as long as and longer than a block)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ maxLength: 100 }), (msg, key) => {
        assert.strictEqual(hmac(key, msg), createHmac("md5", key).update(msg).digest("hex"))
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

  // Why the strict decoder exists: effect/encoding's Base64.decode repairs what we refuse.
  it.each(["Zm9v\r\n", "Zm\n9v", "Zh==", "Zm9="])("Effect's Base64.decode accepts %j, the strict decoder does not", (text) => {
    assert.isTrue(Result.isSuccess(Base64.decode(text)))
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
    assert.isTrue(constantTimeEqual(ascii("abc"), ascii("abc")))
    assert.isTrue(constantTimeEqual(new Uint8Array(0), new Uint8Array(0)))
    assert.isFalse(constantTimeEqual(ascii("abc"), ascii("abd")))
    assert.isFalse(constantTimeEqual(ascii("abc"), ascii("ab")))
    assert.isFalse(constantTimeEqual(ascii("ab"), ascii("abc")))
    assert.isFalse(constantTimeEqual(ascii("\0"), new Uint8Array(0)))
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
    constantTimeEqual(a.p, ascii("Xecret-password"))
    const b = counting(ascii("secret-password"))
    constantTimeEqual(b.p, ascii("secret-password"))
    assert.strictEqual(a.reads(), 15)
    assert.strictEqual(b.reads(), 15)
  })

  it("agrees with plain equality on arbitrary input", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 8 }), fc.uint8Array({ maxLength: 8 }), (a, b) => {
        assert.strictEqual(constantTimeEqual(a, b), Buffer.from(a).equals(Buffer.from(b)))
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
  ])("prepares %j as %j", async (input, expected) => {
    assert.strictEqual(await Effect.runPromise(saslprep(input)), expected)
  })

  it.each([
    ["\u0007"], // prohibited: control character
    ["\u0627\u0031"] // bidi rule: RandALCat string must start and end with RandALCat
  ])("refuses %j", async (input) => {
    assert.strictEqual(await Effect.runPromise(saslprep(input)), undefined)
  })
})
