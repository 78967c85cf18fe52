/** The client tour of the README, kept here so that the type check covers it. */
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as NodeTransport from "effect-smtp/NodeTransport"
import * as SmtpClient from "effect-smtp/SmtpClient"

export const send = SmtpClient.sendMail({
  host: "smtp.example.com",
  port: 587, // STARTTLS is required by default and certificates are verified
  auth: { _tag: "Password", username: "app", password: Redacted.make("secret") },
  from: "app@example.com",
  to: ["alice@example.com", "bob@example.com"],
  body: "Subject: Hello\r\n\r\nHi there.\r\n" // or bytes, or a Stream<Uint8Array>
}).pipe(Effect.provide(NodeTransport.layer))
// Effect<SendResult, SmtpError | TransportError | RecipientsRefused | …>:
// accepted and refused recipients, each refusal with its code and enhanced code.
