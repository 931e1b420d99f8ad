// Environments (issue 12, docs/environments.md): list, create, delete. A
// gateway without the environments API has one default environment and
// this page says so.
import * as api from '../api.js';
import { h, clear, field, notice, confirmDialog, fmtTime } from '../dom.js';

export async function render(main, ctx) {
  const body = h('div');
  main.append(h('h1', {}, 'Environments'), body);
  if (!ctx.envApi) {
    body.append(notice('info', 'This server has no environments API yet: every flag has one state, the default environment\'s.'));
    return;
  }
  async function draw(message) {
    await ctx.refreshEnvs();
    const status = h('div', { 'aria-live': 'polite' });
    if (message) status.append(notice('ok', message));
    const name = ctx.guard(h('input', { required: true, maxlength: 100, 'data-test': 'env-name', autocomplete: 'off' }));
    const form = h('form', { class: 'card' }, h('h2', {}, 'New environment'), field('Name', name, 'New environments start with every flag off and no rules.'),
      ctx.guard(h('button', { type: 'submit', class: 'primary' }, 'Create environment')));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try { await api.createEnvironment(name.value.trim()); await draw(`Created ${name.value.trim()}.`); }
      catch (e) { status.replaceChildren(notice('error', e.message)); }
    });
    const del = async (env) => {
      if (!(await confirmDialog(`Delete environment ${env}?`, `Every flag state and rule of ${env} goes, and its server and client keys stop matching any flag.`, 'Delete environment'))) return;
      try {
        try { await api.deleteEnvironment(env); }
        catch (e) { if (e.status === 409) await api.deleteEnvironment(env, true); else throw e; }
        await draw(`Deleted ${env}.`);
      } catch (e) { status.replaceChildren(notice('error', e.message)); }
    };
    clear(body, status, h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Environment', 'Default', 'Created', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ctx.envs.map((e) => h('tr', {}, h('th', { scope: 'row' }, e.name), h('td', {}, e.is_default ? 'yes' : ''),
        h('td', {}, fmtTime(e.created_at)),
        h('td', {}, e.is_default ? '' : ctx.guard(h('button', { type: 'button', class: 'small danger', onclick: () => del(e.name) },
          'Delete', h('span', { class: 'sr-only' }, ` ${e.name}`))))))))), form);
  }
  await draw();
}
