/**
 * A private Dovecot instance whose LMTP server delivers into Maildirs in the test's scratch
 * directory: its own config file, base and state directories, a Unix socket, no TCP port,
 * never the system service. Users come from a passwd-file; a user can be given a tiny
 * quota so that delivery to it fails after the message (a per-recipient LMTP failure).
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as os from "node:os"
import type { Scratch } from "./files.ts"
import { daemon, type ProcessError } from "./process.ts"

export interface DovecotUser {
  readonly name: string
  /** A quota this small rejects every message. */
  readonly overQuota?: boolean | undefined
}

export interface Dovecot {
  /** The LMTP socket. */
  readonly socket: string
  /** The messages delivered to a user's INBOX (Maildir `new/`), in no particular order. */
  readonly inbox: (user: string) => ReadonlyArray<string>
}

export const start = (files: Scratch, users: ReadonlyArray<DovecotUser>): Effect.Effect<Dovecot, ProcessError, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = files.dir
    const mail = files.path("mail")
    const socket = files.path("lmtp.sock")
    // As root, Dovecot runs its services as its own users and delivers as "nobody"; otherwise
    // everything runs as the current user.
    const asRoot = process.getuid?.() === 0
    const me = os.userInfo()
    const uid = asRoot ? 65534 : me.uid
    const gid = asRoot ? 65534 : me.gid
    fs.mkdirSync(mail)
    if (asRoot) {
      fs.chmodSync(dir, 0o755)
      fs.chownSync(mail, uid, gid)
    }
    files.write(
      "users",
      users.map((u) => `${u.name}:::::::${u.overQuota === true ? "userdb_quota_rule=*:storage=1B" : ""}\n`).join("")
    )
    const config = files.write(
      "dovecot.conf",
      `
base_dir = ${dir}/run
state_dir = ${dir}/state
instance_name = effect-smtp-test-${process.pid}-${Math.random().toString(36).slice(2)}
log_path = /dev/stderr
protocols = lmtp
ssl = no
listen = 127.0.0.1
default_internal_user = ${asRoot ? "dovecot" : me.username}
default_internal_group = ${asRoot ? "dovecot" : me.username}
default_login_user = ${asRoot ? "dovenull" : me.username}
first_valid_uid = 1
auth_username_format = %Ln
mail_location = maildir:${mail}/%n
mail_plugins = quota
passdb {
  driver = static
  args = nopassword=y
}
userdb {
  driver = passwd-file
  args = ${dir}/users
  default_fields = uid=${uid} gid=${gid} home=${mail}/%n
}
plugin {
  quota = maildir:User quota
  quota_rule = *:storage=10M
}
service lmtp {
  unix_listener ${socket} {
    mode = 0666
  }
}
`
    )
    const dovecot = yield* daemon("/usr/sbin/dovecot", ["-F", "-c", config])
    yield* dovecot.listening(socket)
    return {
      socket,
      inbox: (user) => {
        const at = `${mail}/${user}/new`
        return fs.existsSync(at) ? fs.readdirSync(at).map((f) => fs.readFileSync(`${at}/${f}`, "utf8")) : []
      }
    }
  })

/** A private Dovecot that only authenticates: the SASL service Postfix's smtpd asks. */
export interface DovecotAuth {
  /** The auth socket (Postfix: `smtpd_sasl_type = dovecot`, `smtpd_sasl_path = <socket>`). */
  readonly socket: string
}

/**
 * Starts Dovecot's auth service alone (`protocols = none`), with users and plaintext passwords
 * from a passwd-file (so every mechanism, SCRAM-SHA-256 included, can be offered), listening on
 * a Unix socket anybody may connect to (Postfix's smtpd runs as `postfix`).
 */
export const startAuth = (
  files: Scratch,
  users: Readonly<Record<string, string>>
): Effect.Effect<DovecotAuth, ProcessError, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = files.dir
    const socket = files.path("auth.sock")
    const asRoot = process.getuid?.() === 0
    const me = os.userInfo()
    if (asRoot) fs.chmodSync(dir, 0o755)
    files.write("passwords", Object.entries(users).map(([name, password]) => `${name}:{PLAIN}${password}\n`).join(""))
    const config = files.write(
      "dovecot-auth.conf",
      `
base_dir = ${dir}/auth-run
state_dir = ${dir}/auth-state
instance_name = effect-smtp-auth-${process.pid}-${Math.random().toString(36).slice(2)}
log_path = /dev/stderr
protocols = none
listen = 127.0.0.1
ssl = no
default_internal_user = ${asRoot ? "dovecot" : me.username}
default_internal_group = ${asRoot ? "dovecot" : me.username}
default_login_user = ${asRoot ? "dovenull" : me.username}
auth_mechanisms = plain login cram-md5 scram-sha-256
# No pause after a failed login: the tests try wrong passwords on purpose.
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = ${dir}/passwords
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}
service auth {
  unix_listener ${socket} {
    mode = 0666
  }
}
`
    )
    const dovecot = yield* daemon("/usr/sbin/dovecot", ["-F", "-c", config])
    yield* dovecot.listening(socket)
    return { socket }
  })
