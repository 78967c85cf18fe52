/**
 * Files the peers read: a scratch directory per test (removed afterwards), the test CA as a
 * PEM file, messages with exact bytes.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { testCerts } from "../../support/certs.ts"

export interface Scratch {
  readonly dir: string
  /** The absolute path of `name` inside the directory. */
  readonly path: (name: string) => string
  /** Writes a file and returns its path. */
  readonly write: (name: string, content: string | Uint8Array, mode?: number) => string
  /** The test CA's certificate, written once as `ca.pem`. */
  readonly caFile: () => string
}

/**
 * A fresh directory under the system temp dir, removed when the scope closes. Its path is
 * short, so Unix socket paths inside it stay under the 108-byte limit.
 */
export const scratch: Effect.Effect<Scratch, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "esmtp-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir): Scratch => {
  const at = (name: string) => path.join(dir, name)
  const write = (name: string, content: string | Uint8Array, mode?: number) => {
    fs.writeFileSync(at(name), content, mode === undefined ? undefined : { mode })
    return at(name)
  }
  return {
    dir,
    path: at,
    write,
    caFile: () => fs.existsSync(at("ca.pem")) ? at("ca.pem") : write("ca.pem", testCerts().ca)
  }
}))

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)
export const latin1 = (data: Uint8Array): string => Buffer.from(data).toString("latin1")
export const sha256 = (data: Uint8Array): string => createHash("sha256").update(data).digest("hex")

/**
 * A message body of about `size` bytes: CRLF lines of varied printable text, some starting
 * with "." so that dot-stuffing is exercised all the way through.
 */
export const bigMessage = (size: number): Uint8Array => {
  const header = "From: big@example.org\r\nTo: sink@example.net\r\nSubject: big\r\n\r\n"
  const lines: Array<string> = [header]
  let total = header.length
  for (let i = 0; total < size; i++) {
    const line = `${i % 50 === 0 ? "." : ""}line ${i} ${"abcdefghijklmnopqrstuvwxyz0123456789".repeat(2)}\r\n`
    lines.push(line)
    total += line.length
  }
  return bytes(lines.join(""))
}
