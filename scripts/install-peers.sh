#!/usr/bin/env bash
# Installs the real SMTP/LMTP programs the interop tests talk to, from Debian's packages.
# Idempotent and quick when everything is already there.
set -euo pipefail

need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
# swaks speaks TLS through Net::SSLeay, only a recommendation of its package.
perl -MNet::SSLeay -e 1 >/dev/null 2>&1 || need+=(libnet-ssleay-perl)
command -v msmtp >/dev/null 2>&1 || need+=(msmtp)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/sbin/smtp-source ] || need+=(postfix)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# aiosmtpd for Debian's own Python (a python3 earlier on PATH, e.g. pyenv's, would not see it).
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || need+=(python3-aiosmtpd)
# Dovecot's LMTP server (dovecot-core comes with it); the tests run a private instance.
[ -x /usr/lib/dovecot/lmtp ] || need+=(dovecot-lmtpd)
# The mail queue's stores; the tests run private instances (test/queue/support/).
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# HAProxy in front of the server, sending the PROXY protocol (a private instance per test).
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
# A real browser for the web inbox's page tests (driven by playwright-core, headless).
[ -x /usr/bin/chromium ] || need+=(chromium)

[ ${#need[@]} -eq 0 ] && exit 0

echo "installing interop peers: ${need[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
    echo "not root and no sudo: install these Debian packages first: ${need[*]}" >&2
    exit 1
  fi
else
  sudo=()
fi
export DEBIAN_FRONTEND=noninteractive
# postfix, dovecot and haproxy are wanted for private instances the tests start themselves (and
# smtp-source/smtp-sink), redis and postgresql for the queue's stores: their system services are
# never started. Where no policy says so already, a temporary
# policy-rc.d tells the packages' install scripts not to start them.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi
"${sudo[@]}" apt-get update -qq >/dev/null
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
