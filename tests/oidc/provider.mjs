// A real OpenID provider for the SSO tests: node-oidc-provider (pinned in package.json),
// started by tests/oidc_provider.py with the machine's Node.js.
//   node provider.mjs PORT   (configuration as JSON on standard input)
// The input names the client (id, secret, redirect and back-channel logout URIs) and the
// accounts ({login: {email, name, groups}}). Its development sign-in pages accept any
// password for a known login; the tests fill them in.
import dns from 'node:dns';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

// the test servers listen on 127.0.0.1; "localhost" must not resolve to ::1 first
dns.setDefaultResultOrder('ipv4first');

const port = Number(process.argv[2]);
const input = JSON.parse(readFileSync(0, 'utf8'));
const accounts = input.accounts;

const configuration = {
  clients: [{
    client_id: input.client_id,
    client_secret: input.client_secret,
    redirect_uris: [input.redirect_uri],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
    backchannel_logout_uri: input.backchannel_logout_uri,
    backchannel_logout_session_required: true,
    post_logout_redirect_uris: input.post_logout_redirect_uris || [],
  }],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'],
  },
  conformIdTokenClaims: false,
  // The provider refuses outgoing requests to loopback addresses (SSRF protection); the
  // Enclave it posts back-channel logouts to runs on 127.0.0.1 in the tests.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  cookies: { keys: ['enclave-test-provider-cookie-key'] },
  ttl: { Session: 3600, Interaction: 600, Grant: 3600 },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id, email: account.email, email_verified: account.email_verified !== false,
          name: account.name, groups: account.groups || [],
        };
      },
    };
  },
};

const provider = new Provider(`http://localhost:${port}`, configuration);
provider.on('backchannel.error', (ctx, err, client, accountId, sid) => {
  console.error(`backchannel logout failed for ${accountId} (${sid}): ${err.message} ${err.cause ? err.cause.message || err.cause.code : ""}`);
});
provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on http://localhost:${port}`);
});
