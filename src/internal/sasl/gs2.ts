/**
 * The GS2 header (RFC 5801) and saslname escaping, as OAUTHBEARER (RFC 7628) and
 * SCRAM (RFC 5802) both use them.
 */

/** cb-flag, then an optional authzid: `n,,` `y,a=bob,` `p=tls-unique,,`. */
export const gs2Header = /^(n|y|p=[A-Za-z0-9.-]+),(?:a=([^,]+))?,/

/** Decodes a saslname (`=2C` → ",", `=3D` → "="); `undefined` for any other "=". */
export const decodeSaslname = (s: string): string | undefined =>
  /=(?!2C|3D)/.test(s) ? undefined : s.replace(/=2C/g, ",").replace(/=3D/g, "=")

export const encodeSaslname = (s: string): string => s.replace(/=/g, "=3D").replace(/,/g, "=2C")
