// The console's shell: session, navigation and the hash router. Each page is
// one module under pages/ exporting render(main, ctx), which may return a
// function that stops what the page started (its polling timer).
import * as api from './api.js';
import { h, clear, notice } from './dom.js';
import * as signin from './pages/signin.js';
import * as flags from './pages/flags.js';
import * as flag from './pages/flag.js';
import * as segments from './pages/segments.js';
import * as keys from './pages/keys.js';
import * as environments from './pages/environments.js';
import * as audit from './pages/audit.js';
import * as usage from './pages/usage.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const roReason = document.getElementById('ro-reason');
let stopPage = null;

// What every page needs to know about the session.
const ctx = {
  scope: null,
  readonly: false,
  envApi: false,              // the gateway answers /flags/environments
  envs: [{ name: 'default', is_default: true }],
  go(hash) { if (location.hash === hash) route(); else location.hash = hash; },
  // A control that writes: disabled, with the reason, for a read-only key.
  guard(el) {
    if (ctx.readonly) {
      el.disabled = true;
      el.setAttribute('aria-describedby', 'ro-reason');
      el.title = 'Read-only key: changes are disabled';
    }
    return el;
  },
  // The environment name to send: none for the single default environment
  // of a gateway without environments, so the original routes are used.
  envParam(name) { return ctx.envApi ? name : undefined; },
  async refreshEnvs() {
    const list = await api.environments();
    ctx.envApi = Array.isArray(list) && list.length > 0;
    ctx.envs = ctx.envApi ? list : [{ name: 'default', is_default: true }];
  },
  signOut() {
    api.signOut();
    ctx.scope = null;
    ctx.readonly = false;
    location.hash = '#/signin';
    route();
  },
};

const PAGES = [
  ['#/flags', 'Flags'],
  ['#/segments', 'Segments'],
  ['#/environments', 'Environments'],
  ['#/keys', 'API keys'],
  ['#/audit', 'Audit log'],
  ['#/usage', 'Stale flags'],
];

function renderChrome() {
  const signedIn = !!ctx.scope;
  const current = location.hash.split('/').slice(0, 2).join('/');
  clear(nav, signedIn ? PAGES.filter(([hash]) => hash !== '#/environments' || ctx.envApi)
    .map(([hash, label]) => h('a', { href: hash, 'aria-current': current === hash ? 'page' : false }, label)) : []);
  clear(who, signedIn ? [h('span', { class: 'scope', 'data-test': 'scope' }, `${ctx.scope} key`),
    h('button', { type: 'button', 'data-test': 'signout', onclick: () => ctx.signOut() }, 'Sign out')] : []);
  roReason.hidden = !ctx.readonly;
}

async function restoreSession() {
  if (ctx.scope || !api.getKey()) return !!ctx.scope;
  try {
    const v = await api.validate();
    ctx.scope = v.scope;
    ctx.readonly = v.scope !== 'admin';
    await ctx.refreshEnvs();
    return true;
  } catch (e) {
    if (e.status === 401) api.signOut();
    else throw e;
    return false;
  }
}

async function route() {
  if (stopPage) { stopPage(); stopPage = null; }
  let ok;
  try {
    ok = await restoreSession();
  } catch (e) {
    clear(main, notice('error', `Cannot reach the gateway: ${e.message}`));
    return;
  }
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  if (!ok && parts[0] !== 'signin') { location.hash = '#/signin'; return; }
  renderChrome();
  clear(main);
  const pages = { signin, flags, segments, keys, environments, audit, usage };
  let page = pages[parts[0]];
  let arg;
  if (parts[0] === 'flags' && parts.length > 1 && parts[1] !== '') {
    page = flag;
    arg = decodeURIComponent(parts.slice(1).join('/'));
  }
  if (!page || (parts[0] === 'signin' && ok)) { location.hash = '#/flags'; return; }
  try {
    stopPage = (await page.render(main, ctx, arg)) || null;
  } catch (e) {
    if (e.status === 401) { ctx.signOut(); return; }
    main.append(notice('error', e.message));
  }
  const heading = main.querySelector('h1');
  if (heading) { heading.tabIndex = -1; heading.focus({ preventScroll: true }); }
}

// Called by the sign-in page once the key is known good.
ctx.signedIn = (scope) => {
  ctx.scope = scope;
  ctx.readonly = scope !== 'admin';
  ctx.go('#/flags');
};

window.addEventListener('hashchange', route);
route();
