// Test-only OAuth2 authorization server for tokenkeeper's integration tests.
//
// Runs the real `oidc-provider` package (not written here) on loopback with the
// client credentials grant (RFC 6749 §4.4) and token introspection (RFC 7662)
// enabled, and a fixed set of static clients that the Rust harness in
// tests/it/support/oidc.rs knows by id and secret.
//
// Usage: node tests/oidc/server.mjs [port]
//   port              listen port on 127.0.0.1; argv[2], else env OIDC_PORT, else 0 (any free port)
//   OIDC_TTL_SECONDS  lifetime of client credentials access tokens, default 60
//   OIDC_EXIT_ON_STDIN_EOF=1  exit when stdin closes (the harness sets this so that
//                     a killed test binary never leaves a server behind)
//   OIDC_JWT_KEYS_DIR when set, an existing directory: a fresh RSA 2048 and EC P-256
//                     key pair are generated at start, their private keys written there
//                     as PKCS#8 PEM (rs256.pem, es256.pem, mode 0600), and two
//                     private_key_jwt clients registered with the public halves
//   OIDC_MTLS_DIR     when set, a directory holding ca.pem, leaf.pem, leaf.key and
//                     self-signed.pem: the server speaks HTTPS with leaf.pem (issuer
//                     https://127.0.0.1:<port>), asks every client for a certificate
//                     (verified against ca.pem, but not required, so oidc-provider
//                     itself judges a missing or untrusted one), and registers two
//                     RFC 8705 clients: mtls-client (tls_client_auth, subject DN
//                     CN=tokenkeeper-client-1) and self-signed-client
//                     (self_signed_tls_client_auth, the certificate self-signed.pem)
//
// Stdout carries exactly one line, `LISTENING <port>`, once the server accepts
// connections (and the key files, if asked for, are written); every other
// message goes to stderr, including one `oidc request:` line per token or
// introspection request with its client id and final status (and the subject
// of a client certificate, when one was presented), so the harness can count
// the requests that reached the server.

import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { join } from 'node:path';
import process from 'node:process';

// oidc-provider prints its NOTICE lines with console.info, i.e. to stdout.
// Route all console output to stderr before the package is loaded, so that
// stdout stays reserved for the LISTENING line.
for (const method of ['log', 'info', 'debug']) {
  console[method] = (...args) => console.error(...args);
}

function parsePort(raw) {
  if (raw === undefined || raw === '') return 0;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`invalid port ${JSON.stringify(raw)}`);
  }
  return port;
}

function parseTtl(raw) {
  if (raw === undefined || raw === '') return 60;
  const ttl = Number(raw);
  if (!Number.isInteger(ttl) || ttl < 1) {
    throw new Error(`invalid OIDC_TTL_SECONDS ${JSON.stringify(raw)}: expected a positive integer`);
  }
  return ttl;
}

const port = parsePort(process.argv[2] ?? process.env.OIDC_PORT);
const ttlSeconds = parseTtl(process.env.OIDC_TTL_SECONDS);
const jwtKeysDir = process.env.OIDC_JWT_KEYS_DIR || undefined;
const mtlsDir = process.env.OIDC_MTLS_DIR || undefined;

// Keep these in step with the constants in tests/it/support/oidc.rs.
//
// RFC 6749 Appendix A.2 restricts client_secret to VSCHAR (%x20-7E) and
// oidc-provider enforces that, so a non-ASCII character such as `é` cannot be
// part of a secret. The basic client's secret instead holds every printable
// character that form-urlencoding (§2.3.1) changes: `:` `%` `+` `/` space `&` `=`.
const CLIENTS = [
  {
    client_id: 'basic-client',
    client_secret: 'b4s1c:s%cr+t/ x&y=z',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'api:read api:write',
  },
  {
    client_id: 'post-client',
    client_secret: 'p0st-client-secret',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'api:read',
  },
  {
    client_id: 'introspector',
    client_secret: 'introspector-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
  },
];

// The private_key_jwt clients (OpenID Connect Core §9) hold no secret: each is
// registered with the public half of a key pair made here at start, and the
// private half is left in OIDC_JWT_KEYS_DIR for the tests to configure. Fresh
// keys per server mean no private key is ever committed to the repository.
//
// oidc-provider accepts an assertion whose `aud` is the issuer or the token
// endpoint URL (lib/shared/jwt_client_auth.js), and remembers every `jti` until
// the assertion's `exp` (ReplayDetection), refusing a second use with
// invalid_client "client assertion tokens must only be used once".
const JWT_CLIENTS = [
  { client_id: 'jwt-rs256-client', file: 'rs256.pem', alg: 'RS256', kid: 'rs-1', type: 'rsa', options: { modulusLength: 2048 } },
  { client_id: 'jwt-es256-client', file: 'es256.pem', alg: 'ES256', kid: 'es-1', type: 'ec', options: { namedCurve: 'P-256' } },
];

if (jwtKeysDir !== undefined) {
  for (const { client_id, file, alg, kid, type, options } of JWT_CLIENTS) {
    const { publicKey, privateKey } = generateKeyPairSync(type, options);
    const path = join(jwtKeysDir, file);
    // `mode` only applies when the file is created; chmod covers a leftover file.
    writeFileSync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    chmodSync(path, 0o600);
    CLIENTS.push({
      client_id,
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: alg,
      jwks: { keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' }] },
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'api:read api:write',
    });
  }
}

// The RFC 8705 clients. mtls-client is known by its certificate's subject,
// which must chain to ca.pem; self-signed-client by its certificate itself
// (oidc-provider matches the SHA-256 thumbprint of the presented certificate
// against the x5c of the registered key).
const CERTIFICATE_METHODS = new Set(['tls_client_auth', 'self_signed_tls_client_auth']);
if (mtlsDir !== undefined) {
  const selfSigned = new X509Certificate(readFileSync(join(mtlsDir, 'self-signed.pem')));
  CLIENTS.push(
    {
      client_id: 'mtls-client',
      token_endpoint_auth_method: 'tls_client_auth',
      tls_client_auth_subject_dn: 'CN=tokenkeeper-client-1',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'api:read api:write',
    },
    {
      client_id: 'self-signed-client',
      token_endpoint_auth_method: 'self_signed_tls_client_auth',
      jwks: {
        keys: [{
          ...selfSigned.publicKey.export({ format: 'jwk' }),
          x5c: [selfSigned.raw.toString('base64')],
          use: 'sig',
        }],
      },
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'api:read',
    },
  );
}

// The client certificate presented on this request's connection, if any.
function presentedCertificate(ctx) {
  const peer = ctx.socket?.getPeerCertificate?.();
  if (peer === undefined || peer === null || peer.raw === undefined) return undefined;
  return new X509Certificate(peer.raw);
}

const { default: Provider } = await import('oidc-provider');

const server = mtlsDir === undefined
  ? http.createServer()
  : https.createServer({
    cert: readFileSync(join(mtlsDir, 'leaf.pem')),
    key: readFileSync(join(mtlsDir, 'leaf.key')),
    ca: readFileSync(join(mtlsDir, 'ca.pem')),
    // Asked for, verified, but not required: a client without one (the
    // introspector) still connects, and oidc-provider refuses an mTLS client
    // whose certificate is missing or untrusted with invalid_client.
    requestCert: true,
    rejectUnauthorized: false,
  });
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const actualPort = server.address().port;
const issuer = `${mtlsDir === undefined ? 'http' : 'https'}://127.0.0.1:${actualPort}`;

const provider = new Provider(issuer, {
  clients: CLIENTS,
  // Without resource indicators oidc-provider silently drops every requested
  // scope that is not listed here, so the API scopes must be declared.
  scopes: ['openid', 'offline_access', 'api:read', 'api:write'],
  features: {
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Only the resource-server stand-in may ask whether a token is live.
      allowedPolicy: async (ctx, client) => client.clientId === 'introspector',
    },
    devInteractions: { enabled: false },
    mTLS: {
      enabled: mtlsDir !== undefined,
      tlsClientAuth: mtlsDir !== undefined,
      selfSignedTlsClientAuth: mtlsDir !== undefined,
      getCertificate: presentedCertificate,
      // Node verified the chain against ca.pem during the handshake.
      certificateAuthorized: (ctx) => ctx.socket.authorized === true,
      certificateSubjectMatches: (ctx, property, expected) => {
        if (property !== 'tls_client_auth_subject_dn') return false;
        return presentedCertificate(ctx)?.subject === expected;
      },
    },
  },
  clientAuthMethods: [
    'client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none',
    ...(mtlsDir === undefined ? [] : CERTIFICATE_METHODS),
  ],
  ttl: { ClientCredentials: ttlSeconds },
  clientBasedCORS: () => false,
  cookies: { keys: ['tokenkeeper-test-only-cookie-key'] },
});

// oidc-provider treats client_secret_basic and client_secret_post as
// interchangeable for any client holding a secret: a client registered for one
// is accepted with the other. The tests must prove that tokenkeeper picks the
// configured method, so a successful token or introspection request whose
// credentials did not come the registered way is turned into a 401
// invalid_client here and the token it minted is destroyed. This only ever
// rejects; it never accepts anything oidc-provider refused.
const REGISTERED_METHOD = new Map(CLIENTS.map((c) => [c.client_id, c.token_endpoint_auth_method]));

function usedAuthMethod(ctx, registered) {
  const used = [];
  // A certificate authenticates only a client registered for it; the others
  // may present one (or not) without it counting.
  if (CERTIFICATE_METHODS.has(registered) && presentedCertificate(ctx) !== undefined) {
    used.push(registered);
  }
  if (ctx.headers.authorization !== undefined) used.push('client_secret_basic');
  if (ctx.oidc.params?.client_secret !== undefined) used.push('client_secret_post');
  // A JWT in the body (RFC 7523 §2.2). The only clients registered here for an
  // assertion verify it with their public key, so it counts as private_key_jwt.
  if (ctx.oidc.params?.client_assertion !== undefined) used.push('private_key_jwt');
  if (used.length === 0) return 'none';
  if (used.length === 1) return used[0];
  return `all of ${used.join(', ')}`;
}

provider.use(async (ctx, next) => {
  await next();
  const route = ctx.oidc?.route;
  if (route !== 'token' && route !== 'introspection') return;
  // Logged after the strict-auth check below has had its say, with the final
  // status. Never the credentials, the assertion or the token.
  const clientId = ctx.oidc.client?.clientId;
  try {
    if (ctx.status === 200) await enforceRegisteredMethod(ctx, clientId);
  } finally {
    const name = clientId ?? ctx.oidc.params?.client_id ?? '-';
    const certificate = presentedCertificate(ctx);
    const subject = certificate === undefined ? '' : ` certificate ${certificate.subject}`;
    console.error(`oidc request: ${route} client ${name} status ${ctx.status}${subject}`);
  }
});

async function enforceRegisteredMethod(ctx, clientId) {
  const registered = REGISTERED_METHOD.get(clientId);
  const used = usedAuthMethod(ctx, registered);
  if (registered === undefined || used === registered) return;

  await ctx.oidc.entities.ClientCredentials?.destroy();
  const description = `client ${clientId} is registered for ${registered} but authenticated with ${used}`;
  console.error(`oidc strict-auth: ${description}`);
  ctx.status = 401;
  if (ctx.headers.authorization !== undefined) {
    ctx.set('WWW-Authenticate', `Basic realm="${issuer}", error="invalid_client"`);
  }
  ctx.body = { error: 'invalid_client', error_description: description };
}

// error_detail is oidc-provider's reason behind a generic invalid_client
// (`invalid secret provided`, `client assertion tokens must only be used once`).
for (const event of ['grant.error', 'introspection.error', 'server_error']) {
  provider.on(event, (ctx, err) => {
    const detail = err?.error_detail === undefined ? '' : ` (${err.error_detail})`;
    console.error(`oidc ${event}: ${err?.name}: ${err?.message} ${err?.error_description ?? ''}${detail}`);
  });
}

server.on('request', provider.callback());

process.stdout.write(`LISTENING ${actualPort}\n`);
console.error(`oidc-provider ready: issuer ${issuer}, client credentials TTL ${ttlSeconds}s`);

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

if (process.env.OIDC_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
