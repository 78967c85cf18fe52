#!/usr/bin/env bash
# Installs the real SMTP/LMTP programs the interop tests talk to, from Debian's packages.
# Idempotent and quick when everything is already there.
set -euo pipefail

need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v msmtp >/dev/null 2>&1 || need+=(msmtp)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/sbin/smtp-source ] || need+=(postfix)
command -v python3 >/dev/null 2>&1 || need+=(python3)

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
"${sudo[@]}" apt-get update -qq >/dev/null
# postfix is only wanted for smtp-source/smtp-sink; its service is never started.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
