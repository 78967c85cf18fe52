/**
 * The replies of one server, formatted once when the server starts: each is the exact text
 * that goes on the wire, so answering a command is a string append.
 */
import type { EnhancedCode } from "../../EnhancedCode.ts"
import { formatReply } from "../../Reply.ts"
import * as SmtpError from "../../SmtpError.ts"
import { lineTooLongError } from "../codec/LineReader.ts"
import type { ResolvedConfig } from "./Config.ts"

/** Wire text of a reply; with ENHANCEDSTATUSCODES off, enhanced codes are left out. */
export type Format = (code: number, enhanced: EnhancedCode | undefined, text: string) => string

const formatter = (enhancedStatusCodes: boolean): Format => (code, enhanced, text) =>
  formatReply(
    enhancedStatusCodes && enhanced !== undefined ? { code, enhancedCode: enhanced, lines: [text] } : { code, lines: [text] }
  )

/** The wire text of an `SmtpError`, as this server sends it. */
const errorFormatter = (enhancedStatusCodes: boolean) => (e: SmtpError.SmtpError): string =>
  e.toReply({ enhancedStatusCodes }).toWire()

/** Whether a reply (its wire text) is negative: 4xx or 5xx. */
export const isNegative = (wire: string): boolean => wire.charCodeAt(0) >= 52 // "4"

/** The reply code of a reply's wire text. */
export const codeOf = (wire: string): number =>
  (wire.charCodeAt(0) - 48) * 100 + (wire.charCodeAt(1) - 48) * 10 + (wire.charCodeAt(2) - 48)

export const make = (c: ResolvedConfig) => {
  const f = formatter(c.extensions.enhancedStatusCodes)
  const e = errorFormatter(c.extensions.enhancedStatusCodes)
  const d = c.domain
  return {
    format: f,
    error: e,
    greeting: f(220, undefined, `${d} ${c.greeting}`),
    lmtpNeedsLhlo: f(500, [5, 5, 1], "This is an LMTP server: use LHLO"),
    smtpRefusesLhlo: f(500, [5, 5, 1], "This is not an LMTP server: use EHLO or HELO"),
    heloFirst: f(503, [5, 5, 1], "Send HELO or EHLO first"),
    ehloFirst: f(503, [5, 5, 1], "Send EHLO first"),
    senderAlreadySpecified: f(503, [5, 5, 1], "Sender already specified"),
    startTlsFirst: f(530, [5, 7, 0], "Must issue a STARTTLS command first"),
    authRequired: e(SmtpError.authRequired),
    utf8AddressNeedsSmtputf8: f(553, [5, 6, 7], "Non-ASCII address requires SMTPUTF8"),
    dataTooLarge: e(SmtpError.dataTooLarge),
    requireTlsNeedsTls: f(530, [5, 7, 10], "REQUIRETLS needs a TLS connection"),
    senderOk: f(250, [2, 1, 0], "Sender OK"),
    mailFirst: f(503, [5, 5, 1], "Send MAIL FROM first"),
    rcptFirst: f(503, [5, 5, 1], "Send RCPT TO first"),
    rcptDuringBdat: f(503, [5, 5, 1], "RCPT not allowed during BDAT"),
    dataDuringBdat: f(503, [5, 5, 1], "DATA not allowed during BDAT"),
    binaryMimeNeedsBdat: f(503, [5, 5, 1], "BODY=BINARYMIME requires BDAT"),
    tooManyRecipients: e(SmtpError.tooManyRecipients),
    recipientOk: f(250, [2, 1, 5], "Recipient OK"),
    startMailInput: f(354, undefined, "Start mail input; end with <CRLF>.<CRLF>"),
    messageAccepted: f(250, [2, 0, 0], "OK: message accepted"),
    bdatNotNegotiated: f(521, [5, 5, 1], `${d} Error: BDAT without CHUNKING negotiated; closing connection`),
    bdatMalformed: f(521, [5, 5, 4], `${d} Syntax: BDAT <size> [LAST]; closing connection`),
    bdatTooLarge: f(552, [5, 3, 4], `${d} Error: BDAT chunk exceeds the message size limit; closing connection`),
    ok: f(250, [2, 0, 0], "OK"),
    startTlsUnsupported: f(502, [5, 5, 1], "STARTTLS not supported"),
    alreadyTls: f(503, [5, 5, 1], "Already running TLS"),
    readyForTls: f(220, [2, 0, 0], "Ready to start TLS"),
    authAlreadyDone: e(SmtpError.authAlreadyDone),
    authDuringTransaction: f(503, [5, 5, 1], "AUTH not allowed during a mail transaction"),
    authUnsupported: f(502, [5, 5, 1], "AUTH not supported"),
    authNeedsEncryption: e(SmtpError.authEncryptionRequired),
    authSucceeded: f(235, [2, 7, 0], "Authentication successful"),
    xclientRefused: f(550, [5, 7, 0], "Error: insufficient authorization"),
    xclientDuringTransaction: f(503, [5, 5, 1], "Error: MAIL transaction in progress"),
    vrfy: f(c.vrfyReply.code, c.vrfyReply.enhancedCode, c.vrfyReply.text),
    expnUnsupported: f(502, [5, 5, 1], "EXPN not supported"),
    help: f(214, [2, 0, 0], "See RFC 5321; commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY"),
    closing: f(221, [2, 0, 0], `${d} Service closing transmission channel`),
    unknownCommand: f(500, [5, 5, 2], "Command not recognized"),
    lineTooLong: f(500, [5, 5, 2], "Line too long"),
    notSmtp: f(221, [2, 7, 0], `${d} Error: that is not an SMTP command; closing connection`),
    unauthorizedPipelining: f(
      554,
      [5, 5, 0],
      `${d} Error: SMTP protocol synchronization (input before the reply it must wait for); closing connection`
    ),
    refusedSession: f(503, [5, 5, 1], "Error: this session was refused; only QUIT is accepted"),
    localError: e(SmtpError.localError),
    tooManyErrors: f(421, [4, 7, 0], `${d} Error: too many errors`),
    tooManyUnknownCommands: f(421, [4, 7, 0], `${d} Error: too many unrecognized commands`),
    tooManyAuthFailures: f(421, [4, 7, 0], `${d} Error: too many failed authentications`),
    timeout: f(421, [4, 4, 2], `${d} Error: timeout exceeded`),
    shuttingDown: f(421, [4, 3, 2], `${d} Service shutting down`),
    internalError: f(421, [4, 3, 0], `${d} Error: internal error, closing connection`),
    unavailable: f(421, [4, 3, 0], `${d} Service not available, closing transmission channel`),
    /** Not a reply: what a text body with a line over `maxBodyLineLength` fails with. */
    bodyLineTooLong: lineTooLongError(c.maxBodyLineLength)
  } as const
}

export type ServerReplies = ReturnType<typeof make>
