// A resource server's verifier that caches Keygate's JWKS exactly as long as its
// `Cache-Control: max-age` allows and never fetches it again early (not even for an unknown
// `kid`): the strictest cache a verifier may keep. Built on panva's jose. Run by
// tests/suite/keys.rs during a key rotation to show that such a verifier never refuses a
// valid token.
//
// argv[2]: JSON {jwks_url, issuer, audience, algorithm}. Then one access token per line on
// stdin; for each, one JSON line on stdout: {"ok": true, "kid": …} or {"ok": false, "kid": …,
// "error": …}.
import * as jose from 'jose'
import * as readline from 'node:readline'

const input = JSON.parse(process.argv[2])
let keys = null
let freshUntil = 0

async function jwks() {
  if (keys && Date.now() < freshUntil) return keys
  const response = await fetch(input.jwks_url)
  const maxAge = /max-age=(\d+)/.exec(response.headers.get('cache-control') ?? '')
  freshUntil = Date.now() + 1000 * (maxAge ? Number(maxAge[1]) : 0)
  keys = jose.createLocalJWKSet(await response.json())
  return keys
}

const lines = readline.createInterface({ input: process.stdin })
for await (const token of lines) {
  let kid = null
  try {
    kid = jose.decodeProtectedHeader(token).kid ?? null
    await jose.jwtVerify(token, await jwks(), {
      issuer: input.issuer,
      audience: input.audience,
      algorithms: [input.algorithm],
      typ: 'at+jwt',
    })
    process.stdout.write(JSON.stringify({ ok: true, kid }) + '\n')
  } catch (err) {
    process.stdout.write(JSON.stringify({ ok: false, kid, error: String(err) }) + '\n')
  }
}
