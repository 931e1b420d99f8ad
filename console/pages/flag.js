// One flag: its description, its state and rule per environment, the rule
// editor (rules.js), "try it" through OFREP at the gateway, usage
// (usage-view.js), its change history (audit-view.js), promotion between
// environments and deletion.
import * as api from '../api.js';
import { h, clear, field, notice, confirmDialog } from '../dom.js';
import { ruleEditor } from '../rules.js';
import { toggle } from './flags.js';
import { historySection } from '../audit-view.js';
import { usageSection } from '../usage-view.js';

function describe(rule) {
  if (!rule) return 'no rule: on for everyone when on';
  const r = rule.rules;
  const off = rule.is_enabled === false ? ' (rule switched off: on for everyone)' : '';
  if (r.type === 'PERCENTAGE') return `${r.value} % of users${off}`;
  if (r.type === 'USER_LIST') return `${(r.values || []).length} listed users${off}`;
  return `${(r.strategies || []).length} strategies, ${(r.variants || []).length} variants${off}`;
}

async function loadStates(ctx, name) {
  return Promise.all(ctx.envs.map(async (e) => {
    const env = ctx.envParam(e.name);
    const [flag, rule] = await Promise.all([api.getFlag(name, env), api.getRule(name, env)]);
    return { env: e.name, flag, rule };
  }));
}

function definitionForm(ctx, flag, status) {
  const desc = ctx.guard(h('input', { value: flag.description || '', 'data-test': 'flag-description' }));
  const form = h('form', { class: 'card' }, h('h2', {}, 'Definition'), field('Description', desc),
    ctx.guard(h('button', { type: 'submit' }, 'Save description')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      await api.updateFlag(flag.name, { description: desc.value });
      status.append(notice('ok', 'Description saved.'));
    } catch (e) { status.append(notice('error', e.message)); }
  });
  return form;
}

function statesTable(ctx, name, states, redraw, status) {
  return h('section', { class: 'card' }, h('h2', {}, ctx.envApi ? 'State per environment' : 'State'),
    h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Environment'), h('th', { scope: 'col' }, 'On/off'), h('th', { scope: 'col' }, 'Rule'))),
      h('tbody', {}, states.map((s) => {
        const on = !!s.flag.is_enabled;
        const sw = ctx.guard(h('button', { type: 'button', role: 'switch', class: 'switch', 'aria-checked': String(on),
                                           'aria-label': `${name} in ${s.env}`, 'data-test': `state-switch-${s.env}` },
          h('span', { class: 'knob', 'aria-hidden': 'true' }), h('span', { class: 'switch-text' }, on ? 'On' : 'Off')));
        sw.addEventListener('click', async () => {
          status.replaceChildren();
          try { if (await toggle(ctx, name, s.env, !on)) await redraw(); } catch (e) { status.append(notice('error', e.message)); }
        });
        return h('tr', {}, h('th', { scope: 'row' }, s.env), h('td', {}, sw), h('td', { 'data-test': `rule-summary-${s.env}` }, describe(s.rule)));
      })))));
}

function ruleSection(ctx, name, state, extras, redraw, pageStatus) {
  const editor = ruleEditor({ doc: state.rule ? state.rule.rules : null, segments: extras.segments,
                              flags: extras.flags.filter((f) => f !== name), guard: (el) => ctx.guard(el) });
  const active = ctx.guard(h('input', { type: 'checkbox', checked: !state.rule || state.rule.is_enabled !== false, 'data-test': 'rule-active' }));
  const status = h('div', { 'aria-live': 'polite', 'data-test': 'rule-status' });
  const save = ctx.guard(h('button', { type: 'submit', class: 'primary', 'data-test': 'save-rule' }, 'Save rule'));
  const form = h('form', { class: 'card', 'data-test': 'rule-form', novalidate: true },
    h('h2', {}, ctx.envApi ? `Rule in ${state.env}` : 'Rule'),
    editor.el,
    h('div', { class: 'field check' }, active, h('label', { for: active.id = 'rule-active' }, 'Rule active (unchecked: on for everyone when on)')),
    h('div', { class: 'actions' }, save,
      h('button', { type: 'button', onclick: () => redraw() }, 'Discard changes')),
    status);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    pageStatus.replaceChildren();
    editor.clearErrors();
    if (!editor.jsonValid()) { status.append(notice('error', 'Not saved: the raw JSON is not valid.')); return; }
    const doc = editor.doc();
    const env = ctx.envParam(state.env);
    try {
      if (doc === null) { if (state.rule) await api.deleteRule(name, env); }
      else if (state.rule) await api.updateRule(name, doc, active.checked, env);
      else await api.createRule(name, doc, active.checked, env);
      await redraw('Rule saved.');
    } catch (e) {
      const path = e.path ?? (/"(value|values)"/.exec(e.message) || [])[1] ?? null;
      const placed = e.status === 400 && editor.showError(path, e.message);
      status.append(notice('error', `Not saved: ${e.message}${placed ? ' (marked at the field)' : ''}`));
    }
  });
  return form;
}

function tryIt(ctx, name) {
  const tk = h('input', { value: 'alice', 'data-test': 'try-user', autocomplete: 'off' });
  const attrs = h('textarea', { rows: 3, class: 'mono', 'data-test': 'try-attrs', placeholder: 'country=BR\nappVersion=2.4.0' });
  const out = h('div', { 'aria-live': 'polite', 'data-test': 'try-result' });
  const form = h('form', { class: 'card', 'data-test': 'try-form' }, h('h2', {}, 'Try it'),
    h('p', { class: 'hint' }, ctx.envApi ? 'Evaluated through OFREP at the gateway in your key\'s environment: the answer nginx gives.'
      : 'Evaluated through OFREP at the gateway: the answer nginx gives.'),
    h('div', { class: 'row' }, field('User id (targetingKey)', tk), field('Other attributes, name=value per line', attrs)),
    h('button', { type: 'submit' }, 'Evaluate'), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const context = { targetingKey: tk.value };
    for (const line of attrs.value.split('\n')) {
      const i = line.indexOf('=');
      if (i > 0) context[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    out.replaceChildren();
    try {
      const r = await api.evaluate(name, context);
      const j = r.json || {};
      if (r.status !== 200) { out.append(notice('error', `${j.errorCode || r.status}: ${j.errorDetails || ''}`)); return; }
      const value = typeof j.value === 'string' ? j.value : JSON.stringify(j.value);
      out.append(h('dl', { class: 'result' },
        h('dt', {}, 'Value'), h('dd', { 'data-test': 'try-value' }, value),
        h('dt', {}, 'Variant'), h('dd', { 'data-test': 'try-variant' }, j.variant ?? '—'),
        h('dt', {}, 'Reason'), h('dd', { 'data-test': 'try-reason' }, j.reason ?? '—'),
        h('dt', {}, 'Enabled for this context'), h('dd', { 'data-test': 'try-enabled' }, String(j.metadata ? j.metadata.enabled : '—'))));
    } catch (e) { out.append(notice('error', e.message)); }
  });
  return form;
}

function promoteForm(ctx, name, redraw, status) {
  if (!ctx.envApi || ctx.envs.length < 2) return null;
  const opts = () => ctx.envs.map((e) => h('option', { value: e.name }, e.name));
  const from = ctx.guard(h('select', {}, opts()));
  const to = ctx.guard(h('select', {}, opts()));
  to.selectedIndex = 1;
  const form = h('form', { class: 'card' }, h('h2', {}, 'Promote'),
    h('p', { class: 'hint' }, 'Copies on/off and the rule from one environment to another.'),
    h('div', { class: 'row' }, field('From', from), field('To', to)), ctx.guard(h('button', { type: 'submit' }, 'Promote')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    const yes = await confirmDialog(`Promote ${name}?`, `The state and rule of ${name} in ${to.value} become those of ${from.value}.`, 'Promote');
    if (!yes) return;
    try { await api.promoteFlag(name, from.value, to.value); await redraw(`Promoted from ${from.value} to ${to.value}.`); }
    catch (e) { status.append(notice('error', e.message)); }
  });
  return form;
}

export async function render(main, ctx, name) {
  let editEnv = (ctx.envs.find((e) => e.is_default) || ctx.envs[0]).name;
  const [segments, flags] = await Promise.all([api.listSegments(), api.listFlags()]);
  const extras = { segments, flags: flags.map((f) => f.name) };
  const body = h('div');
  main.append(h('p', {}, h('a', { href: '#/flags' }, '← All flags')), h('h1', {}, name), body);

  async function redraw(message) {
    const states = await loadStates(ctx, name);
    const status = h('div', { 'aria-live': 'polite', 'data-test': 'flag-status' });
    if (message) status.append(notice('ok', message));
    const envSel = h('select', { 'data-test': 'edit-env' }, ctx.envs.map((e) => h('option', { value: e.name, selected: e.name === editEnv }, e.name)));
    envSel.addEventListener('change', () => { editEnv = envSel.value; redraw(); });
    const state = states.find((s) => s.env === editEnv) || states[0];
    clear(body, status, definitionForm(ctx, states[0].flag, status), statesTable(ctx, name, states, redraw, status),
      ctx.envApi ? h('div', { class: 'card' }, field('Edit the rule of environment', envSel)) : null,
      ruleSection(ctx, name, state, extras, redraw, status), tryIt(ctx, name), usageSection(ctx, name),
      await historySection(name), promoteForm(ctx, name, redraw, status),
      h('section', { class: 'card' }, h('h2', {}, 'Delete'),
        ctx.guard(h('button', { type: 'button', class: 'danger', 'data-test': 'delete-flag', onclick: async () => {
          if (!(await confirmDialog(`Delete ${name}?`, `The flag and its rules go; evaluations of "${name}" answer false at once.`, 'Delete flag'))) return;
          try {
            for (const e of ctx.envs) {
              try { await api.deleteRule(name, ctx.envParam(e.name)); } catch (err) { if (err.status !== 404) throw err; }
            }
            await api.deleteFlag(name);
            ctx.go('#/flags');
          } catch (e) { status.append(notice('error', e.message)); }
        } }, 'Delete this flag'))));
  }
  try {
    await redraw();
  } catch (e) {
    if (e.status === 404) { clear(body, notice('error', `There is no flag named "${name}".`)); return; }
    throw e;
  }
}
