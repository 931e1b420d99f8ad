// Sign in with an admin or read-only API key. The key is checked with
// GET /auth/validate, kept in sessionStorage (gone when the tab closes or on
// sign-out) and sent only in the Authorization header.
import * as api from '../api.js';
import { h, field, notice } from '../dom.js';

export function render(main, ctx) {
  const key = h('input', { type: 'password', name: 'key', autocomplete: 'off', required: true,
                           spellcheck: 'false', 'data-test': 'signin-key' });
  const status = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'card narrow', 'data-test': 'signin-form' },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'Use an API key with the admin scope to make changes, or a read-only key to look around.'),
    field('API key', key, 'tm_key_… as created on the API keys page, with tmctl or with POST /auth/admin/keys.'),
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
    status);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    const k = key.value.trim();
    try {
      const v = await api.validate(k);
      if (v.scope !== 'admin' && v.scope !== 'readonly') {
        status.append(notice('error', `This is a ${v.scope} key, made for evaluating flags. The console needs an admin or read-only key.`));
        return;
      }
      api.setKey(k);
      try {
        // auth may know a scoped key before the gateway does (a rolling
        // upgrade): say so rather than fail on every page
        await ctx.refreshEnvs();
        await api.listFlags();
      } catch (e) {
        api.signOut();
        status.append(notice('error', `Auth knows this ${v.scope} key, but the gateway refuses it on the admin API: ${e.message}`));
        return;
      }
      ctx.signedIn(v.scope);
    } catch (e) {
      status.append(notice('error', e.status === 401 ? 'This key is not valid (unknown or revoked).' : e.message));
    }
  });
  main.append(form);
  key.focus();
}
