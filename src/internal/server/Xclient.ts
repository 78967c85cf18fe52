/**
 * XCLIENT, Postfix's extension for trusted proxies and test tools (XCLIENT_README): the command's
 * attributes, what they make of the connection's facts, and the session they open in place of
 * the one before (Conversation asks `isXclient` and hands the command to `xclient`).
 *
 *     XCLIENT 1*( SP name "=" xtext-value ), name one of NAME ADDR PORT PROTO HELO LOGIN
 *     DESTADDR DESTPORT (any case); [UNAVAILABLE], [TEMPUNAVAIL] and IPV6: in any case.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Result from "effect/Result"
import * as Scope from "effect/Scope"
import type { Backend, Session, XclientAttributes } from "../../Backend.ts"
import type * as Command from "../../Command.ts"
import type { Endpoint } from "../../Transport.ts"
import * as Xtext from "../../Xtext.ts"
import * as IpNetworks from "../transport/IpNetworks.ts"
import type { Conversation } from "./Conversation.ts"
import { codeOf } from "./Replies.ts"
import { loadSasl } from "./Security.ts"
import { Close, type Step } from "./Step.ts"

/** The EHLO keyword with the attributes this server takes. */
export const KEYWORD = "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT"

const isVerb = (verb: string): boolean => verb.length === 7 && verb.toUpperCase() === "XCLIENT"

const UNAVAILABLE = "[UNAVAILABLE]"
const TEMPUNAVAIL = "[TEMPUNAVAIL]"

type Key = keyof XclientAttributes
type Mutable = { -readonly [K in Key]?: XclientAttributes[K] }

const hasControl = (s: string) => /[\u0000-\u001f\u007f]/.test(s)
const isLabel = (l: string) => l.length <= 63 && /^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?$/.test(l)
const isHostname = (s: string) => s.length <= 255 && s.split(".").every(isLabel)
const isPort = (s: string) => /^(?:0|[1-9]\d{0,4})$/.test(s) && Number(s) <= 65535

/** A value's canonical form, or undefined when it is not valid for the attribute. */
const canonical = (key: Key, v: string): string | undefined => {
  const upper = v.toUpperCase()
  if (upper === UNAVAILABLE) return UNAVAILABLE
  switch (key) {
    case "name":
      return upper === TEMPUNAVAIL ? TEMPUNAVAIL : isHostname(v) ? v : undefined
    case "addr":
    case "destaddr": {
      const ip = upper.startsWith("IPV6:") ? v.slice(5) : v
      return IpNetworks.isIPv4(ip) || IpNetworks.isIPv6(ip) ? IpNetworks.normalize(ip) : undefined
    }
    case "port":
    case "destport":
      return isPort(v) ? v : undefined
    case "proto":
      return upper === "SMTP" || upper === "ESMTP" ? upper : undefined
    case "helo":
    case "login":
      return v.length > 0 && v.length <= 255 && !hasControl(v) ? v : undefined
  }
}

const keys: Readonly<Record<string, Key>> = {
  NAME: "name",
  ADDR: "addr",
  PORT: "port",
  PROTO: "proto",
  HELO: "helo",
  LOGIN: "login",
  DESTADDR: "destaddr",
  DESTPORT: "destport"
}

/** The attributes of one XCLIENT command, or what is wrong with them (for a 501 reply). */
const parse = (arg: string): Result.Result<XclientAttributes, string> => {
  const words = arg.split(/[ \t]+/).filter((w) => w !== "")
  if (words.length === 0) return Result.fail("Syntax: XCLIENT attribute=value ...")
  const out: Mutable = {}
  for (const word of words) {
    const eq = word.indexOf("=")
    const key = eq <= 0 ? undefined : keys[word.slice(0, eq).toUpperCase()]
    if (key === undefined) return Result.fail(`Bad XCLIENT attribute: ${eq <= 0 ? word : word.slice(0, eq)}`)
    const decoded = Xtext.decode(word.slice(eq + 1))
    const value = decoded === undefined ? undefined : canonical(key, decoded)
    if (value === undefined) return Result.fail(`Bad ${word.slice(0, eq).toUpperCase()} value`)
    ;(out as Record<Key, string>)[key] = value
  }
  return Result.succeed(out)
}

/** A value that is there: not absent, not [UNAVAILABLE] (nor [TEMPUNAVAIL]). */
const known = (v: string | undefined): string | undefined => v === undefined || v.startsWith("[") ? undefined : v

/**
 * An endpoint with what XCLIENT said of it: the address (none when unavailable) and port (0
 * when unavailable, or when the address was replaced and no port given).
 */
const endpoint = (original: Endpoint | undefined, addr: string | undefined, port: string | undefined): Endpoint | undefined => {
  if (addr === undefined && port === undefined) return original
  const host = addr !== undefined ? known(addr) : original?._tag === "Tcp" ? original.host : undefined
  if (host === undefined) return undefined
  return { _tag: "Tcp", host, port: Number(known(port) ?? 0) }
}

/** XCLIENT is a command only where it is configured; elsewhere it is unknown. */
export function isXclient(self: Conversation, cmd: Command.Unknown): boolean {
  return self.c.xclient !== undefined && isVerb(cmd.verb)
}

/**
 * XCLIENT: a trusted client says whom it speaks for. As Postfix does, the session starts over
 * as if the client had just connected with those facts: a new backend session and a 220.
 */
export function xclient(self: Conversation, arg: string): Step {
  const r = self.r
  if (!self.xclientAllowed) return r.xclientRefused
  if (self.tx !== undefined) return r.xclientDuringTransaction
  const parsed = parse(arg)
  if (Result.isFailure(parsed)) return r.format(501, [5, 5, 4], parsed.failure)
  const a: XclientAttributes = { ...self.xclientAttributes, ...parsed.success }
  return Effect.gen(function*() {
    self.xclientAttributes = a
    self.remote = endpoint(self.transport.remoteEndpoint, a.addr, a.port)
    self.local = endpoint(self.transport.localEndpoint, a.destaddr, a.destport)
    self.helo = known(a.helo)
    self.extended = self.helo !== undefined && a.proto !== "SMTP"
    self.pipelining = true
    self.authIdentity = known(a.login)
    yield* Effect.logInfo("XCLIENT", a)
    const sessions = self.sessions!
    // The old session ends (its finalizers run) before the new one begins.
    if (sessions.current !== undefined) yield* Scope.close(sessions.current, Exit.void)
    const opened = yield* Effect.exit(openSession(self, sessions))
    if (Exit.isSuccess(opened)) {
      self.session = opened.value
      if (opened.value.auth !== undefined) yield* loadSasl
      return r.greeting
    }
    // As at connect: a 421 closes, any other refusal waits for QUIT.
    const wire = yield* self.refused(opened.cause)
    if (codeOf(wire) === 421) return yield* Effect.fail(new Close(wire))
    self.refuse(wire)
    return wire
  })
}

/** A session XCLIENT can replace: the backend, the connection's scope, and the session's own in it. */
export interface Sessions {
  readonly backend: Backend["Service"]
  readonly parent: Scope.Scope
  current: Scope.Closeable | undefined
}

/** A session of the backend's in a scope of its own, which the next XCLIENT closes. */
export const openSession = (self: Conversation, sessions: Sessions): Effect.Effect<Session, unknown> => {
  const scope = Scope.forkUnsafe(sessions.parent)
  sessions.current = scope
  return Scope.provide(sessions.backend.newSession(self.info), scope)
}
