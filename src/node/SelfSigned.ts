/**
 * A throwaway certificate for `serve --tls-self-signed`, made with the `openssl` command
 * (present on practically every system that runs a mail server; no dependency needed).
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"

export class CertificateError extends Data.TaggedError("CertificateError")<{ readonly message: string }> {}

export interface KeyPair {
  readonly key: string
  readonly cert: string
}

/** A self-signed certificate for `localhost`, 127.0.0.1 and ::1 (and `domain`), valid for 30 days. */
export const make = (domain: string): Effect.Effect<KeyPair, CertificateError> =>
  Effect.acquireUseRelease(
    Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "effect-smtp-cert-"))),
    (dir) =>
      Effect.callback<KeyPair, CertificateError>((resume) => {
        const key = path.join(dir, "key.pem")
        const cert = path.join(dir, "cert.pem")
        const names = [...new Set(["localhost", domain])].map((n) => `DNS:${n}`).join(",")
        execFile("openssl", [
          "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
          "-keyout", key, "-out", cert, "-days", "30", "-subj", `/CN=${domain}`,
          "-addext", `subjectAltName=${names},IP:127.0.0.1,IP:::1`
        ], (error) => {
          if (error) {
            resume(Effect.fail(new CertificateError({ message: `openssl could not make a certificate: ${error.message}` })))
            return
          }
          resume(Effect.promise(async () => ({
            key: await fs.readFile(key, "utf8"),
            cert: await fs.readFile(cert, "utf8")
          })))
        })
      }),
    (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
  )
