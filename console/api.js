// The console's only way to the server: the public admin and OFREP routes of
// the gateway it was loaded from (same origin, so the CSP's connect-src
// 'self' holds). The API key lives in sessionStorage only: never in a URL, a
// cookie or a log; signOut() forgets it. The master key (keys page) is never
// stored at all: the caller passes it per call.

const KEY_ITEM = 'togglemaster.key';

export class ApiError extends Error {
  // status: HTTP status (0: the network failed); path: the part of the
  // document an error names, when it starts with one
  // ("strategies[0].constraints[1].value: ...", see docs/rules.md).
  constructor(status, message) {
    super(message);
    this.status = status;
    const m = /^((?:rules\.)?[A-Za-z_][\w]*(?:\[\d+\])*(?:\.[A-Za-z_][\w]*(?:\[\d+\])*)*): /.exec(message);
    this.path = m ? m[1].replace(/^rules\./, '') : null;
  }
}

export function getKey() { return sessionStorage.getItem(KEY_ITEM); }
export function setKey(key) { sessionStorage.setItem(KEY_ITEM, key); }
export function signOut() { sessionStorage.removeItem(KEY_ITEM); }

const enc = encodeURIComponent;

function withEnv(path, env) {
  return env ? `${path}${path.includes('?') ? '&' : '?'}environment=${enc(env)}` : path;
}

async function call(method, path, body, opts = {}) {
  const headers = { Accept: 'application/json' };
  const key = opts.key ?? getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                              cache: 'no-store', credentials: 'omit' });
  } catch (e) {
    throw new ApiError(0, `the gateway cannot be reached (${e.message})`);
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON: reported below */ }
  if (!res.ok && !(opts.accept || []).includes(res.status)) {
    const msg = json && typeof json.error === 'string' ? json.error
      : json && typeof json.errorDetails === 'string' ? json.errorDetails
      : `HTTP ${res.status}`;
    throw new ApiError(res.status, msg);
  }
  if (opts.accept && opts.accept.includes(res.status)) return { status: res.status, json };
  return json;
}

// The key's scope: GET /auth/validate names it once scoped keys exist
// (docs/environments.md); an answer without one is an original, admin key.
export async function validate(key) {
  const r = await call('GET', '/auth/validate', undefined, { key });
  return { scope: (r && r.scope) || 'admin', environment: (r && r.environment) || null };
}

// Environments (issue 12). A gateway without the route answers 404 (or a
// flag named "environments", an object): one default environment then.
export async function environments() {
  const r = await call('GET', '/flags/environments', undefined, { accept: [404, 405] });
  if (r && r.status) return null;
  return Array.isArray(r) ? r : null;
}
export const createEnvironment = (name) => call('POST', '/flags/environments', { name });
export const deleteEnvironment = (name, confirm) =>
  call('DELETE', `/flags/environments/${enc(name)}${confirm ? `?confirm=${enc(name)}` : ''}`);

export const listFlags = (env) => call('GET', withEnv('/flags/flags', env));
export const getFlag = (name, env) => call('GET', withEnv(`/flags/flags/${enc(name)}`, env));
export const createFlag = (flag, env) => call('POST', withEnv('/flags/flags', env), flag);
export const updateFlag = (name, fields, env) => call('PUT', withEnv(`/flags/flags/${enc(name)}`, env), fields);
export const deleteFlag = (name) => call('DELETE', `/flags/flags/${enc(name)}`);
export const promoteFlag = (name, from, to) => call('POST', `/flags/flags/${enc(name)}/promote`, { from, to });

export const listRules = (env) => call('GET', withEnv('/targeting/rules', env));
// null when the flag has no rule
export async function getRule(name, env) {
  const r = await call('GET', withEnv(`/targeting/rules/${enc(name)}`, env), undefined, { accept: [404] });
  return r && r.status === 404 ? null : r;
}
export const createRule = (name, rules, isEnabled, env) =>
  call('POST', withEnv('/targeting/rules', env), { flag_name: name, rules, is_enabled: isEnabled });
export const updateRule = (name, rules, isEnabled, env) =>
  call('PUT', withEnv(`/targeting/rules/${enc(name)}`, env), { rules, is_enabled: isEnabled });
export const deleteRule = (name, env) => call('DELETE', withEnv(`/targeting/rules/${enc(name)}`, env));

export const listSegments = () => call('GET', '/targeting/segments');
export const createSegment = (seg) => call('POST', '/targeting/segments', seg);
export const updateSegment = (name, fields) => call('PUT', `/targeting/segments/${enc(name)}`, fields);
export const deleteSegment = (name) => call('DELETE', `/targeting/segments/${enc(name)}`);

// Keys: every call needs the master key, which auth checks.
export const listKeys = (master) => call('GET', '/auth/admin/keys', undefined, { key: master });
export const createKey = (master, fields) => call('POST', '/auth/admin/keys', fields, { key: master });
export const revokeKey = (master, id) => call('DELETE', `/auth/admin/keys/${enc(id)}`, undefined, { key: master });

// OFREP single-flag evaluation at the gateway: the answer nginx gives.
export const evaluate = (name, context) =>
  call('POST', `/ofrep/v1/evaluate/flags/${enc(name)}`, { context }, { accept: [200, 400, 404] });

// Audit trails (docs/audit.md): each daemon keeps its own, so the console
// reads the flags and targeting trails and merges them (pages/audit.js).
// query: {kind, name, actor, environment, since, until, limit, cursor};
// empty members are left out. Answer: {records, next_cursor}.
function query(q) {
  const parts = Object.entries(q || {}).filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `${enc(k)}=${enc(v)}`);
  return parts.length ? `?${parts.join('&')}` : '';
}
export const audit = (service, q) => call('GET', `/${service}/audit${query(q)}`);

// Usage (README "Usage"): the analytics service behind /analytics/. A 502 or
// 503 (the service or DynamoDB away) comes back as an ApiError the pages
// explain.
export const flagUsage = (name, q) => call('GET', `/analytics/flags/${enc(name)}/usage${query(q)}`);
export const staleFlags = (q) => call('GET', `/analytics/usage/stale${query(q)}`);
