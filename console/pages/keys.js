// API keys: list (scope, environment, last use), create (shown once),
// revoke. Auth guards these routes with the master key, which is asked for
// here and held only in its input: never stored, gone when the page is left.
import * as api from '../api.js';
import { h, clear, field, notice, confirmDialog, fmtTime } from '../dom.js';

const SCOPES = [['admin', 'admin: every admin route'], ['readonly', 'readonly: reads only'],
                ['server', 'server: evaluation in one environment'], ['client', 'client: browser evaluation of client-visible flags']];

function createForm(ctx, master, onCreated) {
  const name = ctx.guard(h('input', { required: true, maxlength: 100, 'data-test': 'key-name', autocomplete: 'off' }));
  const scope = ctx.guard(h('select', { 'data-test': 'key-scope' }, SCOPES.map(([v, t]) => h('option', { value: v }, t))));
  const env = ctx.guard(h('select', { 'data-test': 'key-env' }, ctx.envs.map((e) => h('option', { value: e.name }, e.name))));
  const envField = field('Environment', env);
  const syncEnv = () => { envField.hidden = !['server', 'client'].includes(scope.value); };
  scope.addEventListener('change', syncEnv);
  syncEnv();
  const out = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'card', 'data-test': 'key-form' }, h('h2', {}, 'New key'),
    h('div', { class: 'row' }, field('Name', name), ctx.envApi ? field('Scope', scope) : null, ctx.envApi ? envField : null),
    ctx.guard(h('button', { type: 'submit', class: 'primary' }, 'Create key')), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    const fields = { name: name.value.trim() };
    if (ctx.envApi) {
      fields.scope = scope.value;
      if (['server', 'client'].includes(scope.value)) fields.environment = env.value;
    }
    try {
      const k = await api.createKey(master.value, fields);
      const shown = h('input', { readonly: true, value: k.key, class: 'mono', 'data-test': 'new-key', size: 72 });
      out.append(notice('ok', `Created key "${k.name}". Copy it now: it is shown only this once.`),
        field('The new key', shown),
        h('button', { type: 'button', onclick: () => { shown.select(); navigator.clipboard?.writeText(k.key).catch(() => {}); } }, 'Copy'));
      shown.select();
      await onCreated();
    } catch (e) { out.append(notice('error', e.message)); }
  });
  return form;
}

export async function render(main, ctx) {
  const master = h('input', { type: 'password', autocomplete: 'off', required: true, 'data-test': 'master-key' });
  const list = h('div');
  const status = h('div', { 'aria-live': 'polite' });
  const unlock = h('form', { class: 'card narrow', 'data-test': 'master-form' },
    field('Master key', master, 'Auth\'s MASTER_KEY guards key management. It is kept in this field only, never stored.'),
    h('button', { type: 'submit', class: 'primary' }, 'Show keys'), status);

  async function draw() {
    const keys = await api.listKeys(master.value);
    const rows = keys.map((k) => h('tr', { 'data-key-id': k.id, class: k.is_active === false ? 'revoked' : '' },
      h('td', {}, String(k.id)), h('th', { scope: 'row' }, k.name), h('td', {}, k.scope || 'admin'),
      h('td', {}, k.environment || '—'), h('td', {}, fmtTime(k.created_at)), h('td', {}, fmtTime(k.last_used_at)),
      h('td', {}, k.is_active === false ? 'revoked' : 'active'),
      h('td', {}, k.is_active === false ? '' : ctx.guard(h('button', { type: 'button', class: 'small danger', 'data-test': `revoke-${k.id}`, onclick: async () => {
        if (!(await confirmDialog(`Revoke key "${k.name}"?`, 'Every request with this key is refused within a second, everywhere. This cannot be undone.', 'Revoke key'))) return;
        try { await api.revokeKey(master.value, k.id); status.replaceChildren(notice('ok', `Revoked "${k.name}".`)); await draw(); }
        catch (e) { status.replaceChildren(notice('error', e.message)); }
      } }, 'Revoke', h('span', { class: 'sr-only' }, ` ${k.name}`))))));
    clear(list, h('div', { class: 'table-wrap' }, h('table', { 'data-test': 'keys-table' },
      h('thead', {}, h('tr', {}, ['Id', 'Name', 'Scope', 'Environment', 'Created', 'Last used', 'State', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows))));
  }
  unlock.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      await draw();
      if (!main.querySelector('[data-test="key-form"]')) main.append(createForm(ctx, master, draw));
    } catch (e) {
      status.append(notice('error', e.status === 403 ? 'Wrong master key.' : e.message));
    }
  });
  main.append(h('h1', {}, 'API keys'), unlock, list);
}
