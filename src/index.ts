/**
 * effect-smtp: SMTP and LMTP server and client for Effect.
 *
 * Each module is also importable on its own (`effect-smtp/SmtpServer`), which keeps what a
 * program loads small.
 *
 * @since 0.1.0
 */
export * as Address from "./Address.ts"
export * as Backend from "./Backend.ts"
export * as Command from "./Command.ts"
export * as EnhancedCode from "./EnhancedCode.ts"
export * as Mailer from "./Mailer.ts"
export * as MailQueue from "./MailQueue.ts"
export * as MailOptions from "./MailOptions.ts"
export * as MemoryTransport from "./MemoryTransport.ts"
export * as NodeTransport from "./NodeTransport.ts"
export * as ProxyProtocol from "./ProxyProtocol.ts"
export * as Reply from "./Reply.ts"
export * as Sasl from "./Sasl.ts"
export * as SmtpClient from "./SmtpClient.ts"
export * as SmtpError from "./SmtpError.ts"
export * as SmtpServer from "./SmtpServer.ts"
export * as Transport from "./Transport.ts"
export * as Xtext from "./Xtext.ts"
