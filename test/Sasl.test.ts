import * as NodeCrypto from "@effect/platform-node/NodeCrypto"
import { assert, describe, it } from "@effect/vitest"
import * as Digest from "effect/crypto/Digest"
import * as Mac from "effect/crypto/Mac"
import * as SecureRandom from "effect/crypto/SecureRandom"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as fc from "fast-check"
import { createHmac } from "node:crypto"
import * as Sasl from "../src/Sasl.ts"
import type { PeerCertificate, TlsState } from "../src/Transport.ts"

// --- helpers -----------------------------------------------------------------------------

const enc = (s: string) => new TextEncoder().encode(s)
const dec = (b: Uint8Array) => new TextDecoder().decode(b)
const b64 = Sasl.encodeBase64
const unb64 = (s: string) => Result.getOrThrow(Sasl.decodeBase64(s))
const secret = (s: string) => Redacted.make(s)

const expectFailure = <A>(eff: Effect.Effect<A, Sasl.SaslError>, reason: Sasl.SaslErrorReason) =>
  Effect.gen(function*() {
    const e = yield* Effect.flip(eff)
    assert.strictEqual(e._tag, "SaslError")
    assert.strictEqual(e.reason, reason, e.message)
    return e
  })

const challengeOf = (step: Sasl.Step): Uint8Array => {
  assert.strictEqual(step._tag, "Challenge")
  return step._tag === "Challenge" ? step.data : new Uint8Array(0)
}

/** Drives a client against a server, passing every message through base64 as SMTP would. */
const exchange = (mechanism: Sasl.ClientMechanism, server: Sasl.SaslServer) =>
  Effect.gen(function*() {
    const wire = (bytes: Uint8Array) => Effect.fromResult(Sasl.decodeResponse(b64(bytes) === "" ? "=" : b64(bytes)))
    const client = yield* mechanism.client
    const ir = yield* client.start
    let step = yield* server.start(ir === undefined ? undefined : yield* wire(ir))
    let rounds = 0
    while (step._tag === "Challenge") {
      if (++rounds > 10) assert.fail("too many rounds")
      const response = yield* client.next(unb64(b64(step.data)))
      step = yield* server.next(yield* wire(response))
    }
    yield* client.finish(step.data)
    assert.isTrue(yield* client.done)
    return step
  })

const users: Record<string, string> = { tim: "tanstaaftanstaaf", Kurt: "xipj3plmq", user: "pencil" }
const lookup = (username: string) => Effect.succeed(users[username] === undefined ? undefined : secret(users[username]))
const password = Sasl.passwordVerifier(lookup)

const certificate: PeerCertificate = {
  subject: { CN: "alice" },
  issuer: { CN: "Test CA" },
  subjectAltName: "email:alice@example.com",
  fingerprint256: "AA:BB",
  raw: new Uint8Array([1, 2, 3])
}
const tlsWith = (authorized: boolean, peerCertificate: PeerCertificate | undefined): TlsState => ({
  protocol: "TLSv1.3",
  cipher: "TLS_AES_128_GCM_SHA256",
  servername: "mx.example.com",
  authorized,
  authorizationError: authorized ? undefined : "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  peerCertificate
})
const secure: Sasl.ServerContext = { tls: tlsWith(false, undefined) }
const withCert: Sasl.ServerContext = { tls: tlsWith(true, certificate) }
const plaintext: Sasl.ServerContext = {}

const externalVerifier: Sasl.ExternalVerifier = ({ authzid, certificate }) => {
  const cn = certificate.subject["CN"]
  const name = typeof cn === "string" ? cn : undefined
  if (name === undefined) return Effect.fail(new Sasl.SaslError({ reason: "AuthenticationFailed", message: "no CN" }))
  return authzid === undefined || authzid === name
    ? Effect.succeed({ identity: name })
    : Effect.fail(new Sasl.SaslError({ reason: "AuthenticationFailed", message: "not authorized" }))
}

const bearerVerifier: Sasl.BearerVerifier = ({ token, username }) =>
  Redacted.value(token) === "good-token" || Redacted.value(token) === "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
    ? Effect.succeed({ identity: username ?? "token-user" })
    : Effect.fail(
      new Sasl.SaslError({
        reason: "AuthenticationFailed",
        message: "bad token",
        oauth: { status: "invalid_token", schemes: "bearer mac", scope: "https://mail.example.com/" }
      })
    )

const scramLookup = (() => {
  const cache = new Map<string, Sasl.ScramCredential>()
  return (username: string) =>
    Effect.gen(function*() {
      const pw = users[username]
      if (pw === undefined) return undefined
      const hit = cache.get(username)
      if (hit !== undefined) return hit
      const c = yield* Sasl.deriveScramCredential(secret(pw), { salt: unb64("W22ZaJ0SNY7soEsUEjb6gQ=="), iterations: 4096 })
      cache.set(username, c)
      return c
    })
})()

const allVerifiers: Sasl.Verifiers = {
  password,
  cramMd5: lookup,
  scramSha256: scramLookup,
  bearer: bearerVerifier,
  anonymous: ({ trace }) => Effect.succeed({ identity: trace === "" ? "anonymous" : `anonymous:${trace}` }),
  external: externalVerifier
}
const registry = Sasl.serverMechanisms(allVerifiers)
const server = (name: string, context: Sasl.ServerContext = secure) => Sasl.startServer(registry, name, context)

/**
 * The crypto services a program could provide: NodeCrypto's, with the Digest and Mac calls
 * counted so that a test can tell they were used instead of the WebCrypto defaults.
 */
const nodeCrypto = () => {
  const calls = { digest: 0, mac: 0 }
  const digest = Layer.effect(
    Digest.Digest,
    Effect.map(Effect.service(Digest.Digest), (node) =>
      Digest.Digest.of({
        digest: (algorithm, data) => Effect.suspend(() => (calls.digest++, node.digest(algorithm, data))),
        digestHex: node.digestHex
      }))
  ).pipe(Layer.provide(NodeCrypto.layerDigest))
  const mac = Mac.layerWebCryptoWith({
    hmac: (hash, key, data) => {
      calls.mac++
      return new Uint8Array(createHmac(hash.replace("-", "").toLowerCase(), key).update(data).digest())
    }
  }).pipe(Layer.provide(NodeCrypto.layerSecureRandom))
  return { calls, layer: Layer.mergeAll(digest, mac, NodeCrypto.layerKdf, NodeCrypto.layerSecureRandom) }
}

// --- PLAIN -------------------------------------------------------------------------------

describe("PLAIN (RFC 4616)", () => {
  it.effect("RFC 4616 example 1: tim authenticates", () =>
    Effect.gen(function*() {
      // C: a002 AUTHENTICATE "PLAIN" {20+} <NUL>tim<NUL>tanstaaftanstaaf
      const client = yield* Sasl.plain({ username: "tim", password: secret("tanstaaftanstaaf") }).client
      const ir = yield* client.start
      assert.deepStrictEqual(ir, enc("\0tim\0tanstaaftanstaaf"))
      const step = yield* server("PLAIN").start(ir)
      assert.deepStrictEqual(step, { _tag: "Success", identity: "tim", username: "tim" })
    }))

  it.effect("RFC 4616 example 2: Kurt may not act as Ursel by default", () =>
    Effect.gen(function*() {
      // C: a002 AUTHENTICATE "PLAIN" {24+} Ursel<NUL>Kurt<NUL>xipj3plmq
      // S: a002 NO "Not authorized to requested authorization identity"
      const client = yield* Sasl.plain({ username: "Kurt", password: secret("xipj3plmq"), authzid: "Ursel" }).client
      const ir = (yield* client.start)!
      assert.deepStrictEqual(ir, enc("Ursel\0Kurt\0xipj3plmq"))
      const e = yield* expectFailure(server("PLAIN").start(ir), "AuthenticationFailed")
      assert.strictEqual(Sasl.toSmtpError(e).code, 535)
    }))

  it.effect("RFC 4616 example 2 with an authorizer that lets Kurt act as Ursel", () =>
    Effect.gen(function*() {
      const verify = Sasl.passwordVerifier(lookup, {
        authorize: ({ authzid, username }) =>
          Effect.succeed({ identity: username === "Kurt" && authzid === "Ursel" ? "Ursel" : username })
      })
      const s = Sasl.plainServer(verify).make(secure)
      const step = yield* s.start(enc("Ursel\0Kurt\0xipj3plmq"))
      assert.deepStrictEqual(step, { _tag: "Success", identity: "Ursel", username: "Kurt" })
    }))

  it.effect("no initial response: an empty challenge, then the message", () =>
    Effect.gen(function*() {
      const s = server("PLAIN")
      assert.deepStrictEqual(challengeOf(yield* s.start(undefined)), new Uint8Array(0))
      const step = yield* s.next(enc("\0tim\0tanstaaftanstaaf"))
      assert.strictEqual(step._tag, "Success")
    }))

  it.effect("wrong password and unknown user fail the same way", () =>
    Effect.gen(function*() {
      yield* expectFailure(server("PLAIN").start(enc("\0tim\0wrong")), "AuthenticationFailed")
      yield* expectFailure(server("PLAIN").start(enc("\0nobody\0tanstaaftanstaaf")), "AuthenticationFailed")
    }))

  it.effect.each([
    ["two fields", "tim\0tanstaaftanstaaf"],
    ["four fields", "\0tim\0pw\0extra"],
    ["one field", "tim"],
    ["empty", ""],
    ["empty authcid", "\0\0pw"],
    ["empty password", "\0tim\0"]
  ] as const)("malformed: %s", ([, message]) => expectFailure(server("PLAIN").start(enc(message)), "MalformedResponse"))

  it.effect("malformed: invalid UTF-8", () =>
    expectFailure(server("PLAIN").start(Uint8Array.of(0, 0xff, 0xfe, 0, 0x61)), "MalformedResponse"))

  it.effect("the client refuses credentials with NUL or empty fields", () =>
    Effect.gen(function*() {
      yield* expectFailure(Sasl.plain({ username: "a\0b", password: secret("x") }).client, "InvalidCredentials")
      yield* expectFailure(Sasl.plain({ username: "a", password: secret("x\0y") }).client, "InvalidCredentials")
      yield* expectFailure(Sasl.plain({ username: "a", password: secret("x"), authzid: "\0" }).client, "InvalidCredentials")
      yield* expectFailure(Sasl.plain({ username: "", password: secret("x") }).client, "InvalidCredentials")
    }))

  it.effect("the client fails on a challenge after its initial response", () =>
    Effect.gen(function*() {
      const c = yield* Sasl.plain({ username: "tim", password: secret("x") }).client
      yield* c.start
      yield* expectFailure(c.next(enc("huh")), "MalformedChallenge")
    }))
})

// --- LOGIN -------------------------------------------------------------------------------

describe("LOGIN", () => {
  it.effect("challenges Username: then Password:", () =>
    Effect.gen(function*() {
      const s = server("LOGIN")
      assert.strictEqual(dec(challengeOf(yield* s.start(undefined))), "Username:")
      assert.strictEqual(dec(challengeOf(yield* s.next(enc("tim")))), "Password:")
      const step = yield* s.next(enc("tanstaaftanstaaf"))
      assert.deepStrictEqual(step, { _tag: "Success", identity: "tim", username: "tim" })
    }))

  it.effect("takes an initial response as the username", () =>
    Effect.gen(function*() {
      const s = server("LOGIN")
      assert.strictEqual(dec(challengeOf(yield* s.start(enc("tim")))), "Password:")
      yield* expectFailure(s.next(enc("nope")), "AuthenticationFailed")
    }))

  it.effect("malformed: NUL, empty username, invalid UTF-8", () =>
    Effect.gen(function*() {
      yield* expectFailure(server("LOGIN").start(enc("t\0m")), "MalformedResponse")
      yield* expectFailure(server("LOGIN").start(enc("")), "MalformedResponse")
      const s = server("LOGIN")
      yield* s.start(enc("tim"))
      yield* expectFailure(s.next(Uint8Array.of(0xc3)), "MalformedResponse")
    }))

  it.effect("the client answers prompts in order and refuses a password prompt first", () =>
    Effect.gen(function*() {
      const mech = Sasl.login({ username: "tim", password: secret("pw") })
      const c = yield* mech.client
      assert.isUndefined(yield* c.start)
      assert.strictEqual(dec(yield* c.next(enc("Username:"))), "tim")
      assert.strictEqual(dec(yield* c.next(enc("Password:"))), "pw")
      const c2 = yield* mech.client
      yield* expectFailure(c2.next(enc("Password:")), "MalformedChallenge")
      const c3 = yield* mech.client
      yield* expectFailure(c3.next(enc("Something else")), "MalformedChallenge")
    }))
})

// --- CRAM-MD5 ----------------------------------------------------------------------------

describe("CRAM-MD5 (RFC 2195)", () => {
  const rfcChallenge = "<1896.697170952@postoffice.reston.mci.net>"

  it.effect("RFC 2195 example, server side", () =>
    Effect.gen(function*() {
      const s = Sasl.cramMd5Server(lookup, { challenge: Effect.succeed(rfcChallenge) }).make(plaintext)
      const c = challengeOf(yield* s.start(undefined))
      // S: + PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+
      assert.strictEqual(b64(c), "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
      // C: dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw
      const step = yield* s.next(unb64("dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"))
      assert.deepStrictEqual(step, { _tag: "Success", identity: "tim", username: "tim" })
    }))

  it.effect("RFC 2195 example, client side", () =>
    Effect.gen(function*() {
      const c = yield* Sasl.cramMd5({ username: "tim", password: secret("tanstaaftanstaaf") }).client
      assert.isUndefined(yield* c.start)
      const response = yield* c.next(enc(rfcChallenge))
      assert.strictEqual(dec(response), "tim b913a602c7eda7a495b4e6e7334d3890")
      assert.strictEqual(b64(response), "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw")
    }))

  it.effect("RFC 2195 example on node:crypto, through the Digest the program provides", () =>
    Effect.gen(function*() {
      const { calls, layer } = nodeCrypto()
      const s = Sasl.cramMd5Server(lookup, { challenge: Effect.succeed(rfcChallenge) }).make(plaintext)
      yield* s.start(undefined)
      const step = yield* s.next(enc("tim b913a602c7eda7a495b4e6e7334d3890")).pipe(Effect.provide(layer))
      assert.deepStrictEqual(step, { _tag: "Success", identity: "tim", username: "tim" })
      assert.strictEqual(calls.digest, 2) // HMAC: the inner and the outer MD5
    }))

  it.effect("the default challenge is a msg-id with the configured host", () =>
    Effect.gen(function*() {
      const s = Sasl.cramMd5Server(lookup, { hostname: "mx.example.com" }).make(plaintext)
      assert.match(dec(challengeOf(yield* s.start(undefined))), /^<\d+\.\d+@mx\.example\.com>$/)
    }))

  it.effect("refuses an initial response, bad digests and unknown users", () =>
    Effect.gen(function*() {
      yield* expectFailure(server("CRAM-MD5").start(enc("tim")), "MalformedResponse")
      const respond = (text: string) =>
        Effect.gen(function*() {
          const s = Sasl.cramMd5Server(lookup, { challenge: Effect.succeed(rfcChallenge) }).make(plaintext)
          yield* s.start(undefined)
          return yield* s.next(enc(text))
        })
      yield* expectFailure(respond("tim B913A602C7EDA7A495B4E6E7334D3890"), "MalformedResponse")
      yield* expectFailure(respond("timb913a602c7eda7a495b4e6e7334d3890"), "MalformedResponse")
      yield* expectFailure(respond("tim b913a602"), "MalformedResponse")
      yield* expectFailure(respond(" b913a602c7eda7a495b4e6e7334d3890"), "MalformedResponse")
      yield* expectFailure(respond("tim b913a602c7eda7a495b4e6e7334d3891"), "AuthenticationFailed")
      yield* expectFailure(respond("bob b913a602c7eda7a495b4e6e7334d3890"), "AuthenticationFailed")
    }))
})

// --- SCRAM-SHA-256 -----------------------------------------------------------------------

describe("SCRAM-SHA-256 (RFC 7677, RFC 5802)", () => {
  // RFC 7677 section 3, user "user", password "pencil".
  const clientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
  const serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
  const clientFinal =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
  const serverFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

  const rfcClient = (creds: Partial<Sasl.PasswordCredentials> = {}) =>
    Sasl.scramSha256({ username: "user", password: secret("pencil"), ...creds }, {
      nonce: Effect.succeed("rOprNGfwEbeRWgbNEkqO")
    })
  const rfcServer = (options: Sasl.ExchangeOptions & { readonly authorize?: Sasl.Authorizer } = {}) =>
    Sasl.scramSha256Server(scramLookup, { ...options, nonce: Effect.succeed("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0") }).make(
      plaintext
    )

  it.effect("RFC 7677 example, client side", () =>
    Effect.gen(function*() {
      const c = yield* rfcClient().client
      assert.strictEqual(dec((yield* c.start)!), clientFirst)
      assert.strictEqual(dec(yield* c.next(enc(serverFirst))), clientFinal)
      assert.isFalse(yield* c.done)
      assert.deepStrictEqual(yield* c.next(enc(serverFinal)), new Uint8Array(0))
      assert.isTrue(yield* c.done)
      yield* c.finish()
    }))

  it.effect("RFC 7677 example on node:crypto, through the Mac, Kdf and Digest the program provides", () =>
    Effect.gen(function*() {
      const { calls, layer } = nodeCrypto()
      const c = yield* rfcClient().client
      yield* c.start
      assert.strictEqual(dec(yield* c.next(enc(serverFirst)).pipe(Effect.provide(layer))), clientFinal)
      yield* c.next(enc(serverFinal))
      assert.isTrue(yield* c.done)
      assert.strictEqual(calls.mac, 4) // ClientKey, ServerKey, ClientSignature, ServerSignature
      assert.strictEqual(calls.digest, 1) // StoredKey
      const s = rfcServer()
      yield* s.start(enc(clientFirst))
      assert.strictEqual(dec(challengeOf(yield* s.next(enc(clientFinal)).pipe(Effect.provide(layer)))), serverFinal)
      assert.strictEqual(calls.mac, 6)
    }))

  it.effect("RFC 7677 example, client side with the signature as success data", () =>
    Effect.gen(function*() {
      const c = yield* rfcClient().client
      yield* c.start
      yield* c.next(enc(serverFirst))
      yield* c.finish(enc(serverFinal))
      assert.isTrue(yield* c.done)
    }))

  it.effect("RFC 7677 example, server side (signature sent as a final challenge)", () =>
    Effect.gen(function*() {
      const s = rfcServer()
      assert.strictEqual(dec(challengeOf(yield* s.start(enc(clientFirst)))), serverFirst)
      assert.strictEqual(dec(challengeOf(yield* s.next(enc(clientFinal)))), serverFinal)
      const step = yield* s.next(new Uint8Array(0))
      assert.deepStrictEqual(step, { _tag: "Success", identity: "user", username: "user" })
    }))

  it.effect("RFC 7677 example, server side with additional data with success", () =>
    Effect.gen(function*() {
      const s = rfcServer({ successDataAsChallenge: false })
      yield* s.start(enc(clientFirst))
      const step = yield* s.next(enc(clientFinal))
      assert.strictEqual(step._tag, "Success")
      assert.strictEqual(dec(step._tag === "Success" ? step.data! : new Uint8Array(0)), serverFinal)
    }))

  it.effect("the final challenge must be answered with an empty response", () =>
    Effect.gen(function*() {
      const s = rfcServer()
      yield* s.start(enc(clientFirst))
      yield* s.next(enc(clientFinal))
      yield* expectFailure(s.next(enc("x")), "MalformedResponse")
    }))

  it.effect("derives the RFC's keys from the password", () =>
    Effect.gen(function*() {
      const c = yield* Sasl.deriveScramCredential("pencil", { salt: unb64("W22ZaJ0SNY7soEsUEjb6gQ==") })
      assert.strictEqual(c.iterations, 4096)
      const again = yield* Sasl.deriveScramCredential(secret("pencil"), { salt: c.salt, iterations: 4096 })
      assert.deepStrictEqual(again.storedKey, c.storedKey)
      assert.strictEqual(c.storedKey.length, 32)
      assert.strictEqual(c.serverKey.length, 32)
      const random = yield* Sasl.deriveScramCredential("pencil")
      assert.strictEqual(random.salt.length, 16)
      yield* expectFailure(Sasl.deriveScramCredential("\u0007"), "InvalidCredentials")
    }))

  it.effect("wrong password: the server refuses the proof", () =>
    Effect.gen(function*() {
      const s = rfcServer()
      yield* s.start(enc(clientFirst))
      const bad = clientFinal.replace("p=dHzb", "p=dHzc")
      yield* expectFailure(s.next(enc(bad)), "AuthenticationFailed")
      yield* expectFailure(s.next(enc(clientFinal)), "Unexpected") // no second try in one exchange
    }))

  it.effect("unknown user: a stable made-up salt, then failure at the proof", () =>
    Effect.gen(function*() {
      const mech = Sasl.scramSha256Server(scramLookup)
      const first = (m: Sasl.ServerMechanism) =>
        m.make(plaintext).start(enc("n,,n=nobody,r=abc")).pipe(Effect.map((s) => dec(challengeOf(s))))
      const a = yield* first(mech)
      const b = yield* first(mech)
      const salt = (t: string) => /,s=([^,]+),/.exec(t)![1]
      assert.strictEqual(salt(a), salt(b))
      assert.match(a, /^r=abc[^,]+,s=[^,]+,i=4096$/)
      const c = yield* exchange(Sasl.scramSha256({ username: "nobody", password: secret("x") }), mech.make(plaintext)).pipe(
        Effect.flip
      )
      assert.strictEqual(c.reason, "AuthenticationFailed")
    }))

  it.effect("unknown users get the iteration count real users have, so i= does not reveal them", () =>
    Effect.gen(function*() {
      const real = yield* Sasl.deriveScramCredential("pw", { iterations: 10_000 })
      const mech = Sasl.scramSha256Server((user) => Effect.succeed(user === "alice" ? real : undefined))
      const iterations = (user: string) =>
        mech.make(plaintext).start(enc(`n,,n=${user},r=abc`)).pipe(
          Effect.map((s) => /,i=(\d+)$/.exec(dec(challengeOf(s)))![1])
        )
      assert.strictEqual(yield* iterations("alice"), "10000")
      assert.strictEqual(yield* iterations("nobody"), "10000")
    }))

  it.effect("the client refuses a wrong server signature and a success before it", () =>
    Effect.gen(function*() {
      const c = yield* rfcClient().client
      yield* c.start
      yield* c.next(enc(serverFirst))
      yield* expectFailure(c.next(enc("v=AAAAZAZAZAZAZAZAZAZAZAZAZAZAZAZAZAZAZAZAZAA=")), "ServerVerificationFailed")
      const c2 = yield* rfcClient().client
      yield* c2.start
      yield* c2.next(enc(serverFirst))
      // A server that says 235 without proving itself: the client must not accept it.
      yield* expectFailure(c2.finish(), "ServerVerificationFailed")
      const c3 = yield* rfcClient().client
      yield* c3.start
      yield* c3.next(enc(serverFirst))
      yield* expectFailure(c3.next(enc("e=invalid-proof")), "AuthenticationFailed")
    }))

  it.effect("the client checks the server-first-message", () =>
    Effect.gen(function*() {
      const first = (text: string, options: { minIterations?: number; maxIterations?: number } = {}) =>
        Effect.gen(function*() {
          const c = yield* Sasl.scramSha256({ username: "user", password: secret("pencil") }, {
            nonce: Effect.succeed("abc"),
            ...options
          }).client
          yield* c.start
          return yield* c.next(enc(text))
        })
      yield* expectFailure(first("r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"), "MalformedChallenge") // nonce not ours
      yield* expectFailure(first("r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"), "MalformedChallenge") // server added nothing
      yield* expectFailure(first("r=abcd,s=!!!,i=4096"), "MalformedChallenge")
      yield* expectFailure(first("r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1"), "MalformedChallenge") // too few iterations
      yield* expectFailure(first("r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999"), "MalformedChallenge") // too many
      yield* expectFailure(first("m=x,r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"), "MalformedChallenge")
      yield* expectFailure(first("r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0x10"), "MalformedChallenge")
      const ok = yield* first("r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=2", { minIterations: 1 })
      assert.match(dec(ok), /^c=biws,r=abcd,p=/)
    }))

  it.effect.each([
    ["no GS2 header", "n=user,r=abc"],
    ["unknown cb flag", "x,,n=user,r=abc"],
    ["mandatory extension", "n,,m=ext,n=user,r=abc"],
    ["missing nonce", "n,,n=user"],
    ["empty nonce", "n,,n=user,r="],
    ["comma-less nonce chars", "n,,n=user,r=a\u00e9"],
    ["bad saslname escape", "n,,n=us=er,r=abc"],
    ["empty username", "n,,n=,r=abc"],
    ["empty authzid", "n,a=,n=user,r=abc"],
    ["attributes out of order", "n,,r=abc,n=user"],
    ["prohibited character in username", "n,,n=us\u0007er,r=abc"]
  ] as const)("server refuses a malformed client-first-message: %s", ([, text]) =>
    expectFailure(rfcServer().start(enc(text)), "MalformedResponse"))

  it.effect("server refuses channel binding it does not offer", () =>
    expectFailure(rfcServer().start(enc("p=tls-unique,,n=user,r=abc")), "AuthenticationFailed"))

  it.effect("server refuses a client-final-message with the wrong nonce or binding", () =>
    Effect.gen(function*() {
      const final = (text: string) =>
        Effect.gen(function*() {
          const s = rfcServer()
          yield* s.start(enc(clientFirst))
          return yield* s.next(enc(text))
        })
      yield* expectFailure(final(clientFinal.replace("k0,p=", "k1,p=")), "AuthenticationFailed")
      yield* expectFailure(final(clientFinal.replace("c=biws", "c=eSws")), "AuthenticationFailed") // "y,,"
      yield* expectFailure(final(clientFinal.replace(",p=", ",x=")), "MalformedResponse")
      // An extension is carried into AuthMessage, so the RFC's proof no longer fits it.
      yield* expectFailure(final(clientFinal.replace(",p=", ",x=1,p=")), "AuthenticationFailed")
      yield* expectFailure(final(clientFinal.replace("p=dHzb", "p=!!")), "MalformedResponse")
      yield* expectFailure(final("r=x,c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="), "MalformedResponse")
    }))

  it.effect("SASLprep: the client and server agree on prepared names and passwords", () =>
    Effect.gen(function*() {
      // "I<SOFT HYPHEN>X" prepares to "IX"; U+2168 ROMAN NUMERAL NINE too.
      const cred = yield* Sasl.deriveScramCredential("pass\u00a0word", { iterations: 4096 })
      const lookupIX = (u: string) => Effect.succeed(u === "IX" ? cred : undefined)
      const mech = Sasl.scramSha256Server(lookupIX)
      const step = yield* exchange(Sasl.scramSha256({ username: "I\u00adX", password: secret("pass word") }), mech.make(plaintext))
      assert.deepStrictEqual(step, { _tag: "Success", identity: "IX", username: "IX" })
      yield* exchange(Sasl.scramSha256({ username: "\u2168", password: secret("pass\u00a0word") }), mech.make(plaintext))
      yield* expectFailure(Sasl.scramSha256({ username: "a\u0007", password: secret("x") }).client, "InvalidCredentials")
      yield* expectFailure(Sasl.scramSha256({ username: "a", password: secret("\u0627\u0031") }).client, "InvalidCredentials")
    }))

  it.effect("usernames with ',' and '=' are escaped and unescaped", () =>
    Effect.gen(function*() {
      const cred = yield* Sasl.deriveScramCredential("pw")
      const mech = Sasl.scramSha256Server((u) => Effect.succeed(u === "a,b=c" ? cred : undefined))
      const c = yield* Sasl.scramSha256({ username: "a,b=c", password: secret("pw") }).client
      assert.match(dec((yield* c.start)!), /^n,,n=a=2Cb=3Dc,r=/)
      yield* exchange(Sasl.scramSha256({ username: "a,b=c", password: secret("pw") }), mech.make(plaintext))
    }))

  it.effect("authzid: refused unless the authorizer allows it", () =>
    Effect.gen(function*() {
      const client = Sasl.scramSha256({ username: "user", password: secret("pencil"), authzid: "boss" })
      const c = yield* client.client
      assert.match(dec((yield* c.start)!), /^n,a=boss,n=user,r=/)
      const e = yield* Effect.flip(exchange(client, Sasl.scramSha256Server(scramLookup).make(plaintext)))
      assert.strictEqual(e.reason, "AuthenticationFailed")
      const allowing = Sasl.scramSha256Server(scramLookup, {
        authorize: ({ authzid, username }) => Effect.succeed({ identity: authzid ?? username })
      })
      const step = yield* exchange(client, allowing.make(plaintext))
      assert.deepStrictEqual(step, { _tag: "Success", identity: "boss", username: "user" })
    }))
})

// --- XOAUTH2 -----------------------------------------------------------------------------

describe("XOAUTH2", () => {
  // Google's documented example.
  const googleIr =
    "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="

  it.effect("builds Google's example initial response", () =>
    Effect.gen(function*() {
      const c = yield* Sasl.xoauth2({
        username: "someuser@example.com",
        token: secret("ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
      }).client
      assert.strictEqual(b64((yield* c.start)!), googleIr)
    }))

  it.effect("the server parses it and passes the token to the verifier", () =>
    Effect.gen(function*() {
      let seen: Parameters<Sasl.BearerVerifier>[0] | undefined
      const s = Sasl.xoauth2Server((input) => {
        seen = input
        return Effect.succeed({ identity: input.username! })
      }).make(secure)
      const step = yield* s.start(unb64(googleIr))
      assert.deepStrictEqual(step, { _tag: "Success", identity: "someuser@example.com", username: "someuser@example.com" })
      assert.strictEqual(Redacted.value(seen!.token), "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
      assert.strictEqual(seen!.mechanism, "XOAUTH2")
    }))

  it.effect("refusal: JSON error challenge, empty reply, then failure", () =>
    Effect.gen(function*() {
      const s = Sasl.xoauth2Server(() =>
        Effect.fail(new Sasl.SaslError({ reason: "AuthenticationFailed", message: "expired" }))
      ).make(secure)
      const c = yield* Sasl.xoauth2({ username: "u@example.com", token: secret("bad") }).client
      const json = JSON.parse(dec(challengeOf(yield* s.start((yield* c.start)!))))
      assert.deepStrictEqual(json, { status: "401", schemes: "bearer" })
      const reply = yield* c.next(enc(JSON.stringify(json)))
      assert.strictEqual(reply.length, 0)
      assert.deepStrictEqual(yield* c.oauthError!, { status: "401", scope: undefined, schemes: "bearer", openidConfiguration: undefined })
      assert.isFalse(yield* c.done)
      const e = yield* expectFailure(s.next(reply), "AuthenticationFailed")
      assert.strictEqual(Sasl.toSmtpError(e).code, 535)
    }))

  it.effect.each([
    ["missing final ^A", "user=a\x01auth=Bearer t\x01"],
    ["missing user", "auth=Bearer t\x01\x01"],
    ["missing auth", "user=a\x01\x01"],
    ["not Bearer", "user=a\x01auth=Basic dXNlcg==\x01\x01"],
    ["token with space", "user=a\x01auth=Bearer a b\x01\x01"],
    ["duplicate key", "user=a\x01user=b\x01auth=Bearer t\x01\x01"],
    ["empty pair", "user=a\x01\x01auth=Bearer t\x01\x01"]
  ] as const)("malformed: %s", ([, text]) => expectFailure(server("XOAUTH2").start(enc(text)), "MalformedResponse"))
})

// --- OAUTHBEARER -------------------------------------------------------------------------

describe("OAUTHBEARER (RFC 7628)", () => {
  // RFC 7628 section 4.1 (IMAP, port 143) and 4.4 (SMTP, port 587).
  const imapIr =
    "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
  const smtpIr =
    "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9NTg3AWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
  const smtpError =
    "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NoZW1lcyI6ImJlYXJlciBtYWMiLCJzY29wZSI6Imh0dHBzOi8vbWFpbC5leGFtcGxlLmNvbS8ifQ=="
  const imapError =
    "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0="
  const token = secret("vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==")

  it.effect("RFC 7628 4.1 and 4.2: the client's initial responses", () =>
    Effect.gen(function*() {
      const imap = yield* Sasl.oauthBearer({ username: "user@example.com", token, host: "server.example.com", port: 143 })
        .client
      assert.strictEqual(b64((yield* imap.start)!), imapIr)
      const smtp = yield* Sasl.oauthBearer({ username: "user@example.com", token, host: "server.example.com", port: 587 })
        .client
      assert.strictEqual(b64((yield* smtp.start)!), smtpIr)
      const bare = yield* Sasl.oauthBearer({ token }).client
      assert.strictEqual(dec((yield* bare.start)!), "n,,\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01")
    }))

  it.effect("RFC 7628 4.2: the server accepts the SMTP example", () =>
    Effect.gen(function*() {
      let seen: Parameters<Sasl.BearerVerifier>[0] | undefined
      const s = Sasl.oauthBearerServer((input) => {
        seen = input
        return Effect.succeed({ identity: input.username ?? "" })
      }).make(secure)
      const step = yield* s.start(unb64(smtpIr))
      assert.deepStrictEqual(step, { _tag: "Success", identity: "user@example.com", username: "user@example.com" })
      assert.strictEqual(seen!.host, "server.example.com")
      assert.strictEqual(seen!.port, 587)
      assert.strictEqual(Redacted.value(seen!.token), Redacted.value(token))
    }))

  it.effect("RFC 7628 4.4: failed exchange, JSON error challenge, AQ== and 535", () =>
    Effect.gen(function*() {
      const s = server("OAUTHBEARER")
      // S: 334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NoZW1lcyI6ImJlYXJlciBtYWMiLCJzY29wZSI6Imh0dHBzOi8vbWFpbC5leGFtcGxlLmNvbS8ifQ==
      const c = challengeOf(yield* s.start(enc(dec(unb64(smtpIr)).replace("vF9d", "xF9d"))))
      assert.strictEqual(b64(c), smtpError)
      // C: AQ==
      const client = yield* Sasl.oauthBearer({ username: "user@example.com", token: secret("bad") }).client
      yield* client.start
      const reply = yield* client.next(c)
      assert.strictEqual(b64(reply), "AQ==")
      assert.deepStrictEqual(yield* client.oauthError!, {
        status: "invalid_token",
        schemes: "bearer mac",
        scope: "https://mail.example.com/",
        openidConfiguration: undefined
      })
      // S: 535 5.7.8 Authentication credentials invalid
      const e = yield* expectFailure(s.next(reply), "AuthenticationFailed")
      const smtp = Sasl.toSmtpError(e)
      assert.strictEqual(smtp.code, 535)
      assert.deepStrictEqual(smtp.enhancedCode, [5, 7, 8])
      yield* expectFailure(client.finish(), "Unexpected")
    }))

  it.effect("RFC 7628 4.3: the client reads openid-configuration from the error", () =>
    Effect.gen(function*() {
      const client = yield* Sasl.oauthBearer({ username: "user@example.com", token }).client
      yield* client.start
      assert.deepStrictEqual(yield* client.next(unb64(imapError)), Uint8Array.of(1))
      assert.deepStrictEqual(yield* client.oauthError!, {
        status: "invalid_token",
        scope: "example_scope",
        schemes: undefined,
        openidConfiguration: "https://example.com/.well-known/openid-configuration"
      })
    }))

  it.effect("after the error challenge only the dummy ^A is accepted (an empty one is a typed failure)", () =>
    Effect.gen(function*() {
      const after = (response: Uint8Array) =>
        Effect.gen(function*() {
          const s = server("OAUTHBEARER")
          yield* s.start(enc("n,,\x01auth=Bearer bad\x01\x01"))
          return yield* s.next(response)
        })
      yield* expectFailure(after(new Uint8Array(0)), "MalformedResponse")
      yield* expectFailure(after(enc("\x01\x01")), "MalformedResponse")
      yield* expectFailure(after(Uint8Array.of(1)), "AuthenticationFailed")
    }))

  it.effect("a temporary failure of the verifier ends the exchange at once", () =>
    Effect.gen(function*() {
      const s = Sasl.oauthBearerServer(() =>
        Effect.fail(new Sasl.SaslError({ reason: "TemporaryFailure", message: "token endpoint down" }))
      ).make(secure)
      const e = yield* expectFailure(s.start(unb64(smtpIr)), "TemporaryFailure")
      assert.strictEqual(Sasl.toSmtpError(e).code, 454)
    }))

  it.effect.each([
    ["no GS2 header", "\x01auth=Bearer t\x01\x01"],
    ["the dummy response first", "\x01"],
    ["channel binding", "p=tls-unique,,\x01auth=Bearer t\x01\x01"],
    ["bad authzid escape", "n,a=a=b,\x01auth=Bearer t\x01\x01"],
    ["no auth", "n,,\x01host=x\x01\x01"],
    ["bad port", "n,,\x01port=99999\x01auth=Bearer t\x01\x01"],
    ["control character in value", "n,,\x01host=a\x00b\x01auth=Bearer t\x01\x01"],
    ["missing terminator", "n,,\x01auth=Bearer t\x01"],
    ["key not alpha", "n,,\x01h0st=x\x01auth=Bearer t\x01\x01"]
  ] as const)("malformed: %s", ([, text]) => expectFailure(server("OAUTHBEARER").start(enc(text)), "MalformedResponse"))

  it.effect("token type is matched case-insensitively", () =>
    Effect.gen(function*() {
      const step = yield* server("OAUTHBEARER").start(enc("n,,\x01auth=bEaReR good-token\x01\x01"))
      assert.strictEqual(step._tag, "Success")
    }))
})

// --- ANONYMOUS ---------------------------------------------------------------------------

describe("ANONYMOUS (RFC 4505)", () => {
  it.effect("RFC 4505 example: empty challenge, then c2lyaGM=", () =>
    Effect.gen(function*() {
      // C: A002 AUTHENTICATE ANONYMOUS / S: + / C: c2lyaGM=
      const s = server("ANONYMOUS", plaintext)
      assert.strictEqual(challengeOf(yield* s.start(undefined)).length, 0)
      const step = yield* s.next(unb64("c2lyaGM="))
      assert.deepStrictEqual(step, { _tag: "Success", identity: "anonymous:sirhc", username: undefined })
      const c = yield* Sasl.anonymous({ trace: "sirhc" }).client
      assert.strictEqual(b64((yield* c.start)!), "c2lyaGM=")
    }))

  it.effect("trace: empty allowed; too long, controls and invalid UTF-8 refused", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* server("ANONYMOUS").start(new Uint8Array(0)))._tag, "Success")
      assert.strictEqual((yield* server("ANONYMOUS").start(enc("é".repeat(255))))._tag, "Success")
      yield* expectFailure(server("ANONYMOUS").start(enc("a".repeat(256))), "MalformedResponse")
      yield* expectFailure(server("ANONYMOUS").start(enc("a\0b")), "MalformedResponse")
      yield* expectFailure(server("ANONYMOUS").start(enc("a\u202eb")), "MalformedResponse")
      yield* expectFailure(server("ANONYMOUS").start(Uint8Array.of(0xff)), "MalformedResponse")
      yield* expectFailure(Sasl.anonymous({ trace: "a\nb" }).client, "InvalidCredentials")
    }))
})

// --- EXTERNAL ----------------------------------------------------------------------------

describe("EXTERNAL (RFC 4422 appendix A)", () => {
  it.effect("identity from the verified client certificate", () =>
    Effect.gen(function*() {
      const step = yield* exchange(Sasl.external(), server("EXTERNAL", withCert))
      assert.deepStrictEqual(step, { _tag: "Success", identity: "alice", username: undefined })
      const asked = yield* exchange(Sasl.external({ authzid: "alice" }), server("EXTERNAL", withCert))
      assert.strictEqual(asked._tag === "Success" ? asked.identity : "", "alice")
      const s = server("EXTERNAL", withCert)
      assert.strictEqual(challengeOf(yield* s.start(undefined)).length, 0)
      assert.strictEqual((yield* s.next(new Uint8Array(0)))._tag, "Success")
    }))

  it.effect("refused: another authzid, no certificate, an unverified certificate, NUL", () =>
    Effect.gen(function*() {
      yield* expectFailure(exchange(Sasl.external({ authzid: "root" }), server("EXTERNAL", withCert)), "AuthenticationFailed")
      yield* expectFailure(server("EXTERNAL", secure).start(new Uint8Array(0)), "AuthenticationFailed")
      const unverified: Sasl.ServerContext = { tls: tlsWith(false, certificate) }
      yield* expectFailure(server("EXTERNAL", unverified).start(new Uint8Array(0)), "AuthenticationFailed")
      yield* expectFailure(server("EXTERNAL", withCert).start(enc("a\0b")), "MalformedResponse")
      // Pinning: the verifier sees unverified certificates only when allowed.
      const pinned = Sasl.externalServer(
        ({ authorized, certificate }) =>
          !authorized && certificate.fingerprint256 === "AA:BB"
            ? Effect.succeed({ identity: "pinned" })
            : Effect.fail(new Sasl.SaslError({ reason: "AuthenticationFailed", message: "unknown" })),
        { allowUnverified: true }
      )
      const step = yield* pinned.make(unverified).start(new Uint8Array(0))
      assert.strictEqual(step._tag === "Success" ? step.identity : "", "pinned")
    }))

  it("advertised only with a usable client certificate", () => {
    assert.include(Sasl.advertised(registry, withCert), "EXTERNAL")
    assert.notInclude(Sasl.advertised(registry, secure), "EXTERNAL")
    assert.notInclude(Sasl.advertised(registry, { tls: tlsWith(false, certificate) }), "EXTERNAL")
  })
})

// --- client against server, every mechanism ----------------------------------------------

describe("client against server", () => {
  const cases: ReadonlyArray<readonly [string, Sasl.ClientMechanism, Sasl.ClientMechanism, Sasl.ServerContext]> = [
    ["PLAIN", Sasl.plain({ username: "tim", password: secret("tanstaaftanstaaf") }), Sasl.plain({ username: "tim", password: secret("nope") }), secure],
    ["LOGIN", Sasl.login({ username: "tim", password: secret("tanstaaftanstaaf") }), Sasl.login({ username: "tim", password: secret("nope") }), secure],
    ["CRAM-MD5", Sasl.cramMd5({ username: "tim", password: secret("tanstaaftanstaaf") }), Sasl.cramMd5({ username: "tim", password: secret("nope") }), plaintext],
    ["SCRAM-SHA-256", Sasl.scramSha256({ username: "user", password: secret("pencil") }), Sasl.scramSha256({ username: "user", password: secret("pencil!") }), plaintext],
    ["XOAUTH2", Sasl.xoauth2({ username: "u@example.com", token: secret("good-token") }), Sasl.xoauth2({ username: "u@example.com", token: secret("bad-token") }), secure],
    ["OAUTHBEARER", Sasl.oauthBearer({ username: "u@example.com", token: secret("good-token"), host: "mx.example.com", port: 587 }), Sasl.oauthBearer({ token: secret("bad-token") }), secure],
    ["EXTERNAL", Sasl.external(), Sasl.external({ authzid: "mallory" }), withCert]
  ]

  it.effect.each(cases)("%s: success and failure", ([name, good, bad, context]) =>
    Effect.gen(function*() {
      const ok = yield* exchange(good, server(name, context))
      assert.strictEqual(ok._tag, "Success")
      const e = yield* Effect.flip(exchange(bad, server(name, context)))
      assert.strictEqual(e.reason, "AuthenticationFailed", e.message)
      assert.strictEqual(Sasl.toSmtpError(e).code, 535)
    }))

  it.effect("ANONYMOUS: success, and refusal by the verifier", () =>
    Effect.gen(function*() {
      const ok = yield* exchange(Sasl.anonymous({ trace: "someone@example.com" }), server("ANONYMOUS", plaintext))
      assert.strictEqual(ok._tag === "Success" ? ok.identity : "", "anonymous:someone@example.com")
      const closed = Sasl.serverMechanisms({
        anonymous: () => Effect.fail(new Sasl.SaslError({ reason: "AuthenticationFailed", message: "no guests" }))
      })
      const e = yield* Effect.flip(exchange(Sasl.anonymous(), Sasl.startServer(closed, "ANONYMOUS", plaintext)))
      assert.strictEqual(e.reason, "AuthenticationFailed")
    }))
})

// --- registry ----------------------------------------------------------------------------

describe("server registry", () => {
  it("builds only the mechanisms whose verifiers exist", () => {
    assert.deepStrictEqual(Sasl.serverMechanisms({ password }).mechanisms.map((m) => m.name), ["PLAIN", "LOGIN"])
    assert.deepStrictEqual(Sasl.serverMechanisms({ scramSha256: scramLookup }).mechanisms.map((m) => m.name), [
      "SCRAM-SHA-256"
    ])
    assert.deepStrictEqual(Sasl.serverMechanisms({}).mechanisms, [])
    assert.deepStrictEqual(registry.mechanisms.map((m) => m.name), Sasl.mechanismNames)
    const only = Sasl.serverMechanisms(allVerifiers, { mechanisms: ["PLAIN", "SCRAM-SHA-256", "PLAIN"] })
    assert.deepStrictEqual(only.mechanisms.map((m) => m.name), ["PLAIN", "SCRAM-SHA-256"])
  })

  it("advertises secret-sending mechanisms only over TLS, unless allowed", () => {
    assert.deepStrictEqual(Sasl.advertised(registry, plaintext), ["SCRAM-SHA-256", "CRAM-MD5", "ANONYMOUS"])
    assert.deepStrictEqual(Sasl.advertised(registry, secure), [
      "SCRAM-SHA-256",
      "OAUTHBEARER",
      "XOAUTH2",
      "CRAM-MD5",
      "PLAIN",
      "LOGIN",
      "ANONYMOUS"
    ])
    assert.include(Sasl.advertised(registry, { allowInsecureAuth: true }), "PLAIN")
    assert.include(Sasl.advertised(Sasl.serverMechanisms({ password }, { allowInsecureAuth: true }), plaintext), "PLAIN")
    assert.include(Sasl.advertised(registry, { secure: true }), "PLAIN")
    const plaintextSafe = registry.mechanisms.filter((m) => m.plaintextSafe).map((m) => m.name)
    assert.deepStrictEqual(plaintextSafe, ["EXTERNAL", "SCRAM-SHA-256", "CRAM-MD5", "ANONYMOUS"])
  })

  it.effect("unknown mechanism → 504 5.5.4; secret over plaintext → 538 5.7.11", () =>
    Effect.gen(function*() {
      const unknown = yield* expectFailure(server("GSSAPI").start(undefined), "UnknownMechanism")
      assert.strictEqual(Sasl.toSmtpError(unknown).code, 504)
      assert.deepStrictEqual(Sasl.toSmtpError(unknown).enhancedCode, [5, 5, 4])
      const insecure = yield* expectFailure(server("PLAIN", plaintext).start(enc("\0tim\0x")), "EncryptionRequired")
      assert.strictEqual(Sasl.toSmtpError(insecure).code, 538)
      assert.deepStrictEqual(Sasl.toSmtpError(insecure).enhancedCode, [5, 7, 11])
      yield* expectFailure(Sasl.startServer(Sasl.serverMechanisms({ password }), "SCRAM-SHA-256", secure).start(undefined), "UnknownMechanism")
      // Names are case-insensitive.
      assert.strictEqual((yield* server("plain").start(enc("\0tim\0tanstaaftanstaaf")))._tag, "Success")
    }))
})

// --- bad input, sequencing and error mapping ---------------------------------------------

describe("bad input", () => {
  it("decodeResponse: * cancels, = and empty are empty, base64 is strict, length is bounded", () => {
    const failure = (r: Result.Result<Uint8Array, Sasl.SaslError>) => (Result.isFailure(r) ? r.failure.reason : "ok")
    assert.strictEqual(failure(Sasl.decodeResponse("*")), "Cancelled")
    assert.deepStrictEqual(Result.getOrThrow(Sasl.decodeResponse("=")), new Uint8Array(0))
    assert.deepStrictEqual(Result.getOrThrow(Sasl.decodeResponse("")), new Uint8Array(0))
    assert.deepStrictEqual(Result.getOrThrow(Sasl.decodeResponse("AHRpbQB4")), enc("\0tim\0x"))
    for (const bad of ["AHRpbQB", "AHRpbQB4=", "**", "AHRp bQB4", "AHRpbQB4\r", "AQ", "AR=="]) {
      assert.strictEqual(failure(Sasl.decodeResponse(bad)), "MalformedResponse", bad)
    }
    assert.strictEqual(failure(Sasl.decodeResponse(b64(new Uint8Array(12 * 1024 + 1)))), "TooLong")
    assert.strictEqual(failure(Sasl.decodeResponse(b64(new Uint8Array(12 * 1024)))), "ok")
    assert.strictEqual(failure(Sasl.decodeResponse("AAAA", { maxLength: 2 })), "TooLong")
    assert.strictEqual(failure(Sasl.decodeBase64("!!!!")), "MalformedResponse")
  })

  it.effect("over-long responses fail with TooLong (configurable)", () =>
    Effect.gen(function*() {
      yield* expectFailure(server("PLAIN").start(new Uint8Array(12 * 1024 + 1)), "TooLong")
      const small = Sasl.serverMechanisms({ password }, { maxResponseLength: 16 })
      const s = Sasl.startServer(small, "LOGIN", secure)
      yield* s.start(undefined)
      const e = yield* expectFailure(s.next(new Uint8Array(17)), "TooLong")
      assert.strictEqual(Sasl.toSmtpError(e).code, 500)
      assert.deepStrictEqual(Sasl.toSmtpError(e).enhancedCode, [5, 5, 6])
    }))

  it.effect("a response after completion, before start, or a second start is Unexpected", () =>
    Effect.gen(function*() {
      const s = server("PLAIN")
      yield* s.start(enc("\0tim\0tanstaaftanstaaf"))
      yield* expectFailure(s.next(enc("\0tim\0tanstaaftanstaaf")), "Unexpected")
      yield* expectFailure(server("PLAIN").next(enc("x")), "Unexpected")
      const twice = server("LOGIN")
      yield* twice.start(undefined)
      yield* expectFailure(twice.start(undefined), "Unexpected")
      // After a failure the exchange is over too.
      const failed = server("PLAIN")
      yield* expectFailure(failed.start(enc("junk")), "MalformedResponse")
      yield* expectFailure(failed.next(enc("\0tim\0tanstaaftanstaaf")), "Unexpected")
    }))

  it.effect("cancel ends the exchange with Cancelled → 501 5.0.0", () =>
    Effect.gen(function*() {
      const s = server("LOGIN")
      yield* s.start(undefined)
      const e = yield* expectFailure(s.cancel, "Cancelled")
      const smtp = Sasl.toSmtpError(e)
      assert.strictEqual(smtp.code, 501)
      assert.deepStrictEqual(smtp.enhancedCode, [5, 0, 0])
      assert.strictEqual(smtp.message, "Authentication cancelled")
      yield* expectFailure(s.next(enc("tim")), "Unexpected")
    }))

  it("toSmtpError follows RFC 4954", () => {
    const table: ReadonlyArray<readonly [Sasl.SaslErrorReason, number, readonly [2 | 4 | 5, number, number]]> = [
      ["MalformedResponse", 501, [5, 5, 2]],
      ["Cancelled", 501, [5, 0, 0]],
      ["AuthenticationFailed", 535, [5, 7, 8]],
      ["TemporaryFailure", 454, [4, 7, 0]],
      ["EncryptionRequired", 538, [5, 7, 11]],
      ["UnknownMechanism", 504, [5, 5, 4]],
      ["TooLong", 500, [5, 5, 6]],
      ["Unexpected", 501, [5, 5, 2]],
      ["MalformedChallenge", 454, [4, 7, 0]],
      ["ServerVerificationFailed", 454, [4, 7, 0]],
      ["InvalidCredentials", 454, [4, 7, 0]]
    ]
    for (const [reason, code, enhanced] of table) {
      const e = Sasl.toSmtpError(new Sasl.SaslError({ reason, message: "internal detail: hunter2" }))
      assert.strictEqual(e.code, code, reason)
      assert.deepStrictEqual(e.enhancedCode, enhanced, reason)
      assert.notInclude(e.message, "hunter2") // the peer never sees internal messages
    }
  })
})

// --- constant-time comparison ------------------------------------------------------------

describe("credential comparison", () => {
  const spy = () => {
    const calls: Array<readonly [Uint8Array, Uint8Array]> = []
    const compare: Sasl.Compare = (a, b) => {
      calls.push([a, b])
      return Sasl.constantTimeEqual(a, b)
    }
    return { calls, compare }
  }

  it("constantTimeEqual", () => {
    assert.isTrue(Sasl.constantTimeEqual(enc("abc"), enc("abc")))
    assert.isFalse(Sasl.constantTimeEqual(enc("abc"), enc("abd")))
    assert.isFalse(Sasl.constantTimeEqual(enc("abc"), enc("abcd")))
  })

  it.effect("passwordVerifier compares fixed-length digests through the compare function, also for unknown users", () =>
    Effect.gen(function*() {
      const { calls, compare } = spy()
      const verify = Sasl.passwordVerifier(lookup, { compare })
      const s = Sasl.plainServer(verify).make(secure)
      yield* s.start(enc("\0tim\0tanstaaftanstaaf"))
      yield* expectFailure(Sasl.plainServer(verify).make(secure).start(enc("\0tim\0t")), "AuthenticationFailed")
      yield* expectFailure(Sasl.plainServer(verify).make(secure).start(enc("\0ghost\0t")), "AuthenticationFailed")
      assert.strictEqual(calls.length, 3)
      for (const [a, b] of calls) {
        assert.strictEqual(a.length, 32) // SHA-256 digests: the length of the password does not leak
        assert.strictEqual(b.length, 32)
      }
      // A compare that says "equal" is obeyed (proving the check goes through it)…
      const lenient = Sasl.passwordVerifier(lookup, { compare: () => true })
      assert.strictEqual((yield* Sasl.plainServer(lenient).make(secure).start(enc("\0tim\0wrong")))._tag, "Success")
      // …but never for an unknown user.
      yield* expectFailure(Sasl.plainServer(lenient).make(secure).start(enc("\0ghost\0x")), "AuthenticationFailed")
    }))

  it.effect("CRAM-MD5 and SCRAM use the injected compare", () =>
    Effect.gen(function*() {
      const { calls, compare } = spy()
      const set = Sasl.serverMechanisms({ cramMd5: lookup, scramSha256: scramLookup }, { compare })
      yield* exchange(Sasl.cramMd5({ username: "tim", password: secret("tanstaaftanstaaf") }), Sasl.startServer(set, "CRAM-MD5", plaintext))
      assert.strictEqual(calls.length, 1)
      assert.strictEqual(calls[0]![0].length, 32)
      yield* exchange(Sasl.scramSha256({ username: "user", password: secret("pencil") }), Sasl.startServer(set, "SCRAM-SHA-256", plaintext))
      assert.strictEqual(calls.length, 2)
      assert.strictEqual(calls[1]![0].length, 32)
    }))
})

describe("crypto services", () => {
  // A SecureRandom that always gives 7s: every nonce, salt and challenge must come from it.
  const sevens = Effect.provideService(SecureRandom.SecureRandom, SecureRandom.make((size) => new Uint8Array(size).fill(7)))

  it.effect("nonces, salts and challenges come from the SecureRandom the program provides", () =>
    Effect.gen(function*() {
      const c = yield* Sasl.scramSha256({ username: "user", password: secret("pencil") }).client.pipe(sevens)
      assert.strictEqual(dec((yield* c.start)!), `n,,n=user,r=${"BwcH".repeat(8)}`)
      const credential = yield* Sasl.deriveScramCredential("pencil").pipe(sevens)
      assert.deepStrictEqual(credential.salt, new Uint8Array(16).fill(7))
      const s = Sasl.scramSha256Server(scramLookup).make(plaintext)
      const first = dec(challengeOf(yield* s.start(enc("n,,n=user,r=abc")).pipe(sevens)))
      assert.strictEqual(first, `r=abc${"BwcH".repeat(6)},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096`)
      // CRAM-MD5: eight random bytes as a decimal, then the clock (0 under TestClock).
      const cram = Sasl.cramMd5Server(lookup).make(plaintext)
      assert.strictEqual(dec(challengeOf(yield* cram.start(undefined).pipe(sevens))), "<506381209866536711.0@localhost>")
    }))

  it.effect("without any crypto service the defaults run (WebCrypto), and give fresh randomness", () =>
    Effect.gen(function*() {
      const a = yield* Sasl.deriveScramCredential("pencil")
      const b = yield* Sasl.deriveScramCredential("pencil")
      assert.strictEqual(a.salt.length, 16)
      assert.notDeepEqual(a.salt, b.salt)
    }))

  // node:crypto aborts the whole process on a PBKDF2 count above 2^31 - 1 (it did here before
  // effect/crypto's Kdf, which checks the count first).
  it.effect("iteration counts PBKDF2 cannot take are refused before deriving, never crash", () =>
    Effect.gen(function*() {
      yield* expectFailure(Sasl.deriveScramCredential("pencil", { iterations: 2 ** 31 }), "InvalidCredentials")
      yield* expectFailure(Sasl.deriveScramCredential("pencil", { iterations: 0 }), "InvalidCredentials")
      const c = yield* Sasl.scramSha256({ username: "user", password: secret("pencil") }, {
        nonce: Effect.succeed("abc"),
        maxIterations: 2 ** 32
      }).client
      yield* c.start
      yield* expectFailure(c.next(enc(`r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=${2 ** 31}`)), "TemporaryFailure")
      assert.isFalse(yield* c.done)
    }))
})

// --- secrets -----------------------------------------------------------------------------

describe("secrets stay out of logs", () => {
  it.effect("credentials, mechanisms, clients and errors never print the password", () =>
    Effect.gen(function*() {
      const pw = "hunter2-very-secret"
      const credentials: Sasl.Credentials = { _tag: "Password", username: "tim", password: secret(pw) }
      const printed: Array<string> = [String(credentials.password), JSON.stringify(credentials)]
      for (const m of Sasl.clientMechanisms(credentials)) {
        printed.push(JSON.stringify(m), String(m))
        const c = yield* m.client
        printed.push(JSON.stringify(c), String(c))
      }
      for (const name of ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]) {
        const m = Sasl.clientMechanisms(credentials).find((x) => x.name === name)!
        const e = yield* Effect.flip(exchange(m, server(name, secure)))
        printed.push(String(e), JSON.stringify(e), e.message)
      }
      for (const p of printed) assert.notInclude(p, pw)
      assert.include(JSON.stringify(credentials), "<redacted>")
    }))
})

// --- chooser -----------------------------------------------------------------------------

describe("choose", () => {
  const pw: Sasl.Credentials = { _tag: "Password", username: "tim", password: secret("x") }

  it("picks the strongest advertised mechanism the credentials can drive", () => {
    const name = (advertised: ReadonlyArray<string>, credentials: Sasl.Credentials, isSecure = true) =>
      Sasl.choose(advertised, credentials, { secure: isSecure })?.name
    assert.strictEqual(name(["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"], pw), "SCRAM-SHA-256")
    assert.strictEqual(name(["plain", "login", "cram-md5"], pw), "CRAM-MD5")
    assert.strictEqual(name(["LOGIN", "PLAIN"], pw), "PLAIN")
    assert.strictEqual(name(["LOGIN"], pw), "LOGIN")
    assert.strictEqual(name(["XOAUTH2", "GSSAPI"], pw), undefined)
    // Over plaintext, never a mechanism that sends the password.
    assert.strictEqual(name(["PLAIN", "LOGIN"], pw, false), undefined)
    assert.strictEqual(name(["PLAIN", "CRAM-MD5"], pw, false), "CRAM-MD5")
    assert.strictEqual(Sasl.choose(["PLAIN"], pw, { secure: false, allowInsecure: true })?.name, "PLAIN")
    // An authzid rules out the mechanisms that cannot carry one.
    assert.strictEqual(name(["CRAM-MD5", "LOGIN", "PLAIN"], { ...pw, authzid: "boss" }), "PLAIN")
    const bearer: Sasl.Credentials = { _tag: "Bearer", username: "u@example.com", token: secret("t") }
    assert.strictEqual(name(["XOAUTH2", "OAUTHBEARER", "PLAIN"], bearer), "OAUTHBEARER")
    assert.strictEqual(name(["XOAUTH2", "PLAIN"], bearer), "XOAUTH2")
    assert.strictEqual(name(["XOAUTH2"], { _tag: "Bearer", token: secret("t") }), undefined)
    assert.strictEqual(name(["EXTERNAL", "PLAIN"], { _tag: "External" }, false), "EXTERNAL")
    assert.strictEqual(name(["ANONYMOUS"], { _tag: "Anonymous" }, false), "ANONYMOUS")
    // A list of mechanisms works too.
    const list = [Sasl.plain({ username: "a", password: secret("b") }), Sasl.external()]
    assert.strictEqual(Sasl.choose(["PLAIN", "EXTERNAL"], list, { secure: true })?.name, "EXTERNAL")
  })
})

// --- property: arbitrary bytes never throw or die ----------------------------------------

describe("robustness", () => {
  // Valid first messages for each mechanism, to mutate into near-misses that reach deeper states.
  const seeds: Record<string, ReadonlyArray<string>> = {
    PLAIN: ["\0tim\0tanstaaftanstaaf", "Ursel\0Kurt\0xipj3plmq"],
    LOGIN: ["tim", "tanstaaftanstaaf"],
    "CRAM-MD5": ["tim b913a602c7eda7a495b4e6e7334d3890"],
    "SCRAM-SHA-256": [
      "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
      "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    ],
    XOAUTH2: ["user=a@b\x01auth=Bearer good-token\x01\x01"],
    OAUTHBEARER: ["n,a=user@example.com,\x01host=h\x01port=587\x01auth=Bearer bad-token\x01\x01", "\x01"],
    ANONYMOUS: ["sirhc"],
    EXTERNAL: ["", "alice"]
  }

  // Bytes and fragments that matter to the parsers: separators, escapes, attribute names.
  const interestingByte = fc.oneof(
    fc.constantFrom(0x00, 0x01, 0x2c, 0x3d, 0x20, 0x0a, 0x7f, 0x80, 0xc3, 0xff),
    fc.integer({ min: 0, max: 255 })
  )
  const fragment = fc.oneof(
    { arbitrary: fc.uint8Array({ maxLength: 4 }), weight: 1 },
    { arbitrary: fc.array(interestingByte, { maxLength: 4 }).map((a) => Uint8Array.from(a)), weight: 1 },
    { arbitrary: fc.constantFrom("\0", "\x01", "\x01\x01", ",", "=", ",x=1", "=2C", "=3D", ",p=", "m=x,", " ", "a=b,", "i=0").map(enc), weight: 4 }
  )
  const mutated = (seedList: ReadonlyArray<string>) =>
    fc.tuple(fc.constantFrom(...seedList), fc.nat(64), fragment, fc.nat(4)).map(
      ([seed, at, insert, drop]) => {
        const bytes = enc(seed)
        const i = Math.min(at, bytes.length)
        const out = new Uint8Array(bytes.length - Math.min(drop, bytes.length - i) + insert.length)
        out.set(bytes.subarray(0, i))
        out.set(insert, i)
        out.set(bytes.subarray(i + Math.min(drop, bytes.length - i)), i + insert.length)
        return out
      }
    )

  // SCRAM with the RFC's server nonce, so the seeded client-final gets past the nonce check.
  const fuzzServer = (name: Sasl.MechanismName) =>
    name === "SCRAM-SHA-256"
      ? Sasl.scramSha256Server(scramLookup, { nonce: Effect.succeed("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0") }).make(plaintext)
      : server(name, withCert)

  const message = (name: string) =>
    fc.oneof(
      fc.uint8Array({ maxLength: 80 }),
      fc.array(interestingByte, { maxLength: 40 }).map((a) => Uint8Array.from(a)),
      mutated(seeds[name]!),
      mutated(seeds[name]!),
      fc.constantFrom(...seeds[name]!).map(enc)
    )

  // Valid client transcripts (initial response first), one step of which gets mutated: this
  // reaches the late states (SCRAM's proof check, OAUTHBEARER's dummy response, LOGIN's password).
  const transcripts: ReadonlyArray<readonly [Sasl.MechanismName, ReadonlyArray<string>]> = [
    ["PLAIN", ["Ursel\0Kurt\0xipj3plmq"]],
    ["LOGIN", ["tim", "tanstaaftanstaaf"]],
    ["SCRAM-SHA-256", [...seeds["SCRAM-SHA-256"]!, ""]],
    ["XOAUTH2", ["user=a@b\x01auth=Bearer bad-token\x01\x01", ""]],
    ["OAUTHBEARER", seeds["OAUTHBEARER"]!],
    ["ANONYMOUS", ["sirhc"]],
    ["EXTERNAL", ["alice"]]
  ]

  it.effect("valid transcripts with one step mutated give a step or a typed failure", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...transcripts).chain(([name, steps]) =>
            fc.tuple(
              fc.constant(name),
              fc.constant(steps.map(enc)),
              fc.nat(steps.length - 1),
              fc.array(fc.tuple(fc.nat(120), fc.boolean(), fragment, fc.nat(3)), { minLength: 1, maxLength: 3 })
            )
          ),
          async ([name, steps, k, edits]) => {
            const messages = steps.slice()
            let m = messages[k]!
            for (const [at, atSeparator, insert, drop] of edits) {
              // Half the edits land on a field separator, where the parsers make their decisions.
              const separators: Array<number> = []
              m.forEach((b, j) => (b === 0x00 || b === 0x01 || b === 0x2c || b === 0x3d || b === 0x20) && separators.push(j))
              const i = atSeparator && separators.length > 0 ? separators[at % separators.length]! : Math.min(at, m.length)
              const d = Math.min(drop, m.length - i)
              const out = new Uint8Array(m.length - d + insert.length)
              out.set(m.subarray(0, i))
              out.set(insert, i)
              out.set(m.subarray(i + d), i + insert.length)
              m = out
            }
            messages[k] = m
            const s = fuzzServer(name)
            const exits = [await Effect.runPromiseExit(s.start(messages[0]))]
            for (const r of messages.slice(1)) exits.push(await Effect.runPromiseExit(s.next(r)))
            for (const e of exits) {
              if (Exit.isFailure(e)) {
                const err = Exit.findErrorOption(e)
                if (err._tag !== "Some" || err.value._tag !== "SaslError") {
                  throw new Error(`${name}: not a typed failure: ${String(e.cause)}`)
                }
              }
            }
            return true
          }
        ),
        { numRuns: 6000 }
      )
    ))

  it.effect("every server mechanism turns arbitrary bytes into a step or a typed failure", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...Sasl.mechanismNames).chain((name) =>
            fc.tuple(
              fc.constant(name),
              fc.option(message(name), { nil: undefined }),
              fc.array(message(name), { maxLength: 3 }),
              fc.boolean()
            )
          ),
          async ([name, ir, responses, cancel]) => {
            const program = Effect.gen(function*() {
              const s = fuzzServer(name)
              const exits: Array<Exit.Exit<unknown, Sasl.SaslError>> = [yield* Effect.exit(s.start(ir))]
              for (const r of responses) exits.push(yield* Effect.exit(s.next(r)))
              if (cancel) exits.push(yield* Effect.exit(s.cancel))
              return exits
            })
            const exit = await Effect.runPromiseExit(program)
            if (Exit.isFailure(exit)) throw new Error(`${name} died: ${String(exit.cause)}`)
            for (const e of exit.value) {
              if (Exit.hasDies(e)) throw new Error(`${name} died: ${String(e)}`)
            }
            return true
          }
        ),
        { numRuns: 400 }
      )
    ))

  it.effect("every server mechanism's failures are SaslErrors (never a throw), step by step", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...Sasl.mechanismNames).chain((name) =>
            fc.tuple(fc.constant(name), fc.array(message(name), { minLength: 1, maxLength: 3 }))
          ),
          async ([name, responses]) => {
            const s = fuzzServer(name)
            const steps = [s.start(responses[0]), ...responses.slice(1).map((r) => s.next(r))]
            for (const step of steps) {
              const exit = await Effect.runPromiseExit(step)
              if (Exit.isFailure(exit)) {
                const err = Exit.findErrorOption(exit)
                if (err._tag !== "Some" || err.value._tag !== "SaslError") {
                  throw new Error(`${name}: not a typed failure: ${String(exit.cause)}`)
                }
                Sasl.toSmtpError(err.value) // always maps
              }
            }
            return true
          }
        ),
        { numRuns: 300 }
      )
    ))

  it("decodeResponse never throws on arbitrary lines", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 64 }), (line) => {
        const r = Sasl.decodeResponse(line)
        if (Result.isFailure(r)) assert.include(["Cancelled", "MalformedResponse", "TooLong"], r.failure.reason)
      }),
      { numRuns: 2000 }
    )
  })

  it.effect("clients turn arbitrary challenges into a response or a typed failure", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(
          fc.constantFrom(
            ...Sasl.clientMechanisms({ _tag: "Password", username: "user", password: secret("pencil") }),
            ...Sasl.clientMechanisms({ _tag: "Bearer", username: "u", token: secret("t") }),
            Sasl.external(),
            Sasl.anonymous()
          ),
          fc.array(fc.oneof(fc.uint8Array({ maxLength: 80 }), fc.constant(enc("r=x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"))), {
            maxLength: 3
          }),
          async (mech, challenges) => {
            const program = Effect.gen(function*() {
              const c = yield* mech.client
              yield* c.start
              const exits: Array<Exit.Exit<unknown, Sasl.SaslError>> = []
              for (const ch of challenges) exits.push(yield* Effect.exit(c.next(ch)))
              exits.push(yield* Effect.exit(c.finish()))
              return exits
            })
            const exit = await Effect.runPromiseExit(program)
            if (Exit.isFailure(exit)) throw new Error(`${mech.name} died: ${String(exit.cause)}`)
            for (const e of exit.value) {
              if (Exit.hasDies(e)) throw new Error(`${mech.name} died: ${String(e)}`)
            }
            return true
          }
        ),
        { numRuns: 200 }
      )
    ))
})
