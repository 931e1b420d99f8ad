// Stale flags: no evaluation in N days, or every answer the same value,
// with the evidence (GET /analytics/usage/stale, README "Usage").
import * as api from '../api.js';
import { h, clear, field, notice, fmtTime } from '../dom.js';
import { usageError } from '../usage-view.js';

export async function render(main, ctx) {
  const env = h('select', { 'data-test': 'stale-env' }, ctx.envs.map((e) => h('option', { value: e.name, selected: !!e.is_default }, e.name)));
  const days = h('input', { type: 'number', min: 1, max: 90, value: 30, required: true, 'data-test': 'stale-days' });
  const out = h('div', { 'aria-live': 'polite', 'data-test': 'stale-result' });
  const form = h('form', { class: 'card', 'data-test': 'stale-form' },
    h('div', { class: 'filters' }, ctx.envApi ? field('Environment', env) : null, field('Days without evaluations (1–90)', days)),
    h('button', { type: 'submit', class: 'primary' }, 'Show'));
  let rows, after;
  async function page(first) {
    if (first) { rows = h('tbody'); after = undefined; }
    const r = await api.staleFlags({ environment: ctx.envParam(env.value), days: days.value, after });
    for (const f of r.stale || []) {
      rows.append(h('tr', { 'data-flag': f.flag },
        h('th', { scope: 'row' }, h('a', { href: `#/flags/${encodeURIComponent(f.flag)}` }, f.flag)),
        h('td', {}, f.reason), h('td', {}, f.last_evaluated ? fmtTime(f.last_evaluated) : 'never'),
        h('td', {}, String(f.evaluations ?? 0)), h('td', {}, `${f.true ?? 0} / ${f.false ?? 0}`)));
    }
    after = r.next || undefined;
    const more = after ? h('button', { type: 'button', 'data-test': 'stale-more', onclick: () => page(false).catch((e) => out.append(usageError(e))) }, 'Check more flags') : null;
    clear(out, rows.children.length
      ? h('div', { class: 'table-wrap' }, h('table', { 'data-test': 'stale-table' },
        h('thead', {}, h('tr', {}, ['Flag', 'Why', 'Last evaluated', 'Evaluations', 'true / false'].map((t) => h('th', { scope: 'col' }, t)))), rows))
      : notice('ok', `No stale flag among those checked (no evaluation in ${r.days ?? days.value} days, or all one answer).`), more);
  }
  form.addEventListener('submit', (ev) => { ev.preventDefault(); page(true).catch((e) => clear(out, usageError(e))); });
  main.append(h('h1', {}, 'Stale flags'), h('p', { class: 'hint' }, 'Flags nobody evaluated lately, or that always answer the same: candidates for removal.'), form, out);
  await page(true).catch((e) => clear(out, usageError(e)));
}
