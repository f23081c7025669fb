// A real OpenID provider for Toolgate's end-to-end tests: `oidc-provider`,
// the certified Node implementation, with just enough configuration for the
// authorization-code + PKCE flow.
//
// It listens on a free loopback port (port 0), then prints ONE line of JSON
// to stdout, {"issuer": "http://127.0.0.1:<port>"}, so the pytest fixture
// never has to guess a port.  Everything else it logs goes to stderr.
//
// Environment:
//   REDIRECT_URIS    comma separated redirect URIs registered for every client
//                    (default http://127.0.0.1:8501/auth/callback)
//   CONFORM_ID_TOKEN "1": spec-conform mode, scope claims (email, groups, ...)
//                    are only in the userinfo response, not in the ID token;
//                    anything else: they are in the ID token as well.
//
// Clients (secrets are test values only):
//   toolgate         confidential, client_secret_basic, secret "toolgate-test-secret"
//   toolgate-post    confidential, client_secret_post,  secret "toolgate-post-secret"
//   toolgate-public  public (token_endpoint_auth_method "none")
// PKCE (S256) is required for all of them.
//
// Accounts: the login form of oidc-provider's devInteractions takes the
// account id as "login" (no password); see ACCOUNTS below.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const redirectUris = (process.env.REDIRECT_URIS || 'http://127.0.0.1:8501/auth/callback')
  .split(',').map((s) => s.trim()).filter(Boolean);
const conform = process.env.CONFORM_ID_TOKEN === '1';

const ACCOUNTS = {
  alice: {
    preferred_username: 'alice',
    name: 'Alice Example',
    email: 'alice@example.com',
    email_verified: true,
    groups: ['employees'],
  },
  // An unverified e-mail address and groups sent as one string, as some
  // providers do.
  bob: {
    preferred_username: 'bob',
    name: 'Bob Example',
    email: 'bob@example.com',
    email_verified: false,
    groups: 'employees, ops',
  },
  // No preferred_username: the gateway falls back to `sub`.
  carol: {
    name: 'Carol Example',
    email: 'carol@example.com',
    email_verified: true,
    groups: ['security'],
  },
};

function signingKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: `rsa-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' },
    { ...ec, kid: `ec-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'ES256' },
  ];
}

const client = (extra) => ({
  redirect_uris: redirectUris,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  ...extra,
});

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    clients: [
      client({ client_id: 'toolgate', client_secret: 'toolgate-test-secret', token_endpoint_auth_method: 'client_secret_basic' }),
      client({ client_id: 'toolgate-post', client_secret: 'toolgate-post-secret', token_endpoint_auth_method: 'client_secret_post' }),
      client({ client_id: 'toolgate-public', token_endpoint_auth_method: 'none' }),
      client({ client_id: 'toolgate-es256', client_secret: 'toolgate-es256-secret', id_token_signed_response_alg: 'ES256' }),
    ],
    pkce: { required: () => true },
    scopes: ['openid', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['preferred_username', 'name'],
      groups: ['groups'],
    },
    conformIdTokenClaims: conform,
    features: { devInteractions: { enabled: true } },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    jwks: { keys: signingKeys() },
    async findAccount(ctx, sub) {
      const account = ACCOUNTS[sub];
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() { return { sub, ...account }; },
      };
    },
  });

  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

const stop = () => {
  server.closeAllConnections?.();
  server.close(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The test harness holds our stdin open; when it goes away (even by a crash),
// so do we, rather than lingering on a loopback port.
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
