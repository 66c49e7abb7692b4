// A third-party OAuth 2.0 client, panva's oauth4webapi (an OpenID-certified implementation,
// strict about RFC 8414, 6749, 7009 and 7662), run by tests/suite/interop.rs against a live
// Keygate. Everything it learns about Keygate comes from discovery.
//
// Keygate's issuer is an https URL (as in production, behind a TLS-terminating proxy); the
// "proxy" here is `customFetch`, which sends each request for the issuer's origin to the test
// server's plain-HTTP address. So the library runs in its strict mode: https only.
//
// Input: one JSON object on argv[2]; output: one JSON object on stdout describing what the
// library saw. Any error the library raises ends the script with a non-zero status.
import * as oauth from 'oauth4webapi'

const input = JSON.parse(process.argv[2])
const issuer = new URL(input.issuer)
const server = new URL(input.server)

// The reverse proxy: the issuer's origin → the test server.
const proxy = (url, options) => {
  const target = new URL(url)
  if (target.origin !== issuer.origin) {
    throw new Error(`a request left the issuer's origin: ${target.href}`)
  }
  target.protocol = server.protocol
  target.host = server.host
  return fetch(target.href, options)
}
const opts = (extra = {}) => ({ [oauth.customFetch]: proxy, ...extra })

const out = {}

// Discovery by both transformation algorithms: OpenID Connect Discovery and RFC 8414.
for (const algorithm of ['oidc', 'oauth2']) {
  const response = await oauth.discoveryRequest(issuer, opts({ algorithm }))
  const as = await oauth.processDiscoveryResponse(issuer, response)
  out[`discovery_${algorithm}`] = as
}
const as = out.discovery_oauth2

// A public client: the password grant (RFC 6749 section 4.3), then the refresh-token grant.
const spa = { client_id: 'single-page-app', token_endpoint_auth_method: 'none' }
const login = await oauth.processGenericTokenEndpointResponse(
  as,
  spa,
  await oauth.genericTokenEndpointRequest(
    as,
    spa,
    oauth.None(),
    'password',
    { username: input.username, password: input.password, scope: 'profile' },
    opts(),
  ),
)
out.password = { token_type: login.token_type, scope: login.scope, has_refresh: !!login.refresh_token }
const refreshed = await oauth.processRefreshTokenResponse(
  as,
  spa,
  await oauth.refreshTokenGrantRequest(as, spa, oauth.None(), login.refresh_token, opts()),
)
out.refresh = { rotated: refreshed.refresh_token !== login.refresh_token }

// A wrong password: an RFC 6749 error in the body.
try {
  await oauth.processGenericTokenEndpointResponse(
    as,
    spa,
    await oauth.genericTokenEndpointRequest(
      as,
      spa,
      oauth.None(),
      'password',
      { username: input.username, password: 'not the password' },
      opts(),
    ),
  )
  out.wrong_password = 'accepted'
} catch (err) {
  out.wrong_password = err instanceof oauth.ResponseBodyError ? err.error : String(err)
}

// A confidential client by HTTP Basic (id and secret form-encoded first, RFC 6749 section
// 2.3.1: the secret has characters that encoding changes) and in the body.
const service = { client_id: input.service_id }
out.client_credentials = []
for (const auth of [oauth.ClientSecretBasic(input.service_secret), oauth.ClientSecretPost(input.service_secret)]) {
  const token = await oauth.processClientCredentialsResponse(
    as,
    service,
    await oauth.clientCredentialsGrantRequest(as, service, auth, {}, opts()),
  )
  out.client_credentials.push({ token_type: token.token_type, has_refresh: !!token.refresh_token, access_token: token.access_token })
}

// A wrong client secret: 401 with a Basic challenge, which the library reports as such.
try {
  await oauth.processClientCredentialsResponse(
    as,
    service,
    await oauth.clientCredentialsGrantRequest(as, service, oauth.ClientSecretBasic('not the secret at all'), {}, opts()),
  )
  out.wrong_secret = 'accepted'
} catch (err) {
  if (err instanceof oauth.WWWAuthenticateChallengeError) {
    out.wrong_secret = { status: err.status, schemes: err.cause.map((c) => c.scheme) }
  } else {
    out.wrong_secret = String(err)
  }
}

// A resource server introspects (RFC 7662), revokes (RFC 7009), and introspects again.
const rs = { client_id: input.rs_id }
const rsAuth = oauth.ClientSecretBasic(input.rs_secret)
const introspect = async (token) =>
  oauth.processIntrospectionResponse(as, rs, await oauth.introspectionRequest(as, rs, rsAuth, token, opts()))
out.introspection_live = await introspect(refreshed.access_token)
out.introspection_refresh = await introspect(refreshed.refresh_token)
await oauth.processRevocationResponse(
  await oauth.revocationRequest(as, rs, rsAuth, refreshed.refresh_token, opts({ additionalParameters: { token_type_hint: 'refresh_token' } })),
)
out.introspection_after_revocation = await introspect(refreshed.access_token)
// Revoking a token Keygate never issued is still a success.
await oauth.processRevocationResponse(await oauth.revocationRequest(as, rs, rsAuth, 'not a token', opts()))
out.revoked_garbage = true

process.stdout.write(JSON.stringify(out))
