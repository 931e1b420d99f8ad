// The flags list: search, filter by state and environment, an on/off switch
// per environment, create and delete. It polls the API every few seconds and
// redraws only when something changed, so another user's change shows up by
// itself (the daemons send no ETag yet; an SSE stream would replace this).
import * as api from '../api.js';
import { h, clear, field, notice, confirmDialog } from '../dom.js';

const POLL_MS = 3000;

// name -> { name, description, states: { env: is_enabled } }, from one
// GET /flags/flags per environment.
async function load(ctx) {
  const lists = await Promise.all(ctx.envs.map((e) => api.listFlags(ctx.envParam(e.name))));
  const byName = new Map();
  lists.forEach((list, i) => {
    for (const f of list) {
      const row = byName.get(f.name) || { name: f.name, description: f.description, states: {} };
      row.states[ctx.envs[i].name] = !!f.is_enabled;
      byName.set(f.name, row);
    }
  });
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export async function toggle(ctx, name, env, on) {
  if (!on && env === 'production') {
    const yes = await confirmDialog(`Turn off ${name} in production?`,
      `Every evaluation of "${name}" in production answers false (reason DISABLED) within a second, for every user, until it is turned on again.`,
      'Turn off in production');
    if (!yes) return false;
  }
  await api.updateFlag(name, { is_enabled: on }, ctx.envParam(env));
  return true;
}

function switchButton(ctx, row, env, onChange) {
  const on = !!row.states[env];
  const label = ctx.envApi ? `${row.name} in ${env}` : row.name;
  const b = h('button', { type: 'button', role: 'switch', class: 'switch', 'aria-checked': String(on),
                          'aria-label': label, 'data-test': `switch-${row.name}-${env}`,
                          'data-focus': `switch:${row.name}:${env}` },
    h('span', { class: 'knob', 'aria-hidden': 'true' }), h('span', { class: 'switch-text' }, on ? 'On' : 'Off'));
  b.addEventListener('click', () => onChange(row.name, env, !on));
  return ctx.guard(b);
}

export async function render(main, ctx) {
  const status = h('div', { 'aria-live': 'polite', class: 'status' });
  const search = h('input', { type: 'search', 'data-test': 'search', placeholder: 'name or description' });
  const stateSel = h('select', { 'data-test': 'state-filter' },
    h('option', { value: '' }, 'any state'), h('option', { value: 'on' }, 'on'), h('option', { value: 'off' }, 'off'));
  const envSel = h('select', { 'data-test': 'env-filter' }, h('option', { value: '' }, 'all environments'),
    ctx.envs.map((e) => h('option', { value: e.name }, e.name)));
  const tbody = h('tbody', { 'data-test': 'flag-rows' });
  const count = h('p', { class: 'hint', 'aria-live': 'polite' });
  const head = h('tr');
  let rows = [];
  let signature = '';

  const shownEnvs = () => (envSel.value ? [envSel.value] : ctx.envs.map((e) => e.name));

  async function onSwitch(name, env, on) {
    status.replaceChildren();
    try {
      if (await toggle(ctx, name, env, on)) await refresh(true);
    } catch (e) {
      status.append(notice('error', `${name}: ${e.message}`));
    }
  }

  async function onDelete(name) {
    const yes = await confirmDialog(`Delete ${name}?`,
      `The flag, its state in every environment and its rules go. Evaluations of "${name}" answer false (unknown flag) at once.`,
      'Delete flag');
    if (!yes) return;
    status.replaceChildren();
    try {
      for (const e of ctx.envs) {
        try { await api.deleteRule(name, ctx.envParam(e.name)); } catch (err) { if (err.status !== 404) throw err; }
      }
      await api.deleteFlag(name);
      status.append(notice('ok', `Deleted ${name}.`));
      await refresh(true);
    } catch (e) {
      status.append(notice('error', `${name}: ${e.message}`));
    }
  }

  function draw() {
    const envs = shownEnvs();
    clear(head, h('th', { scope: 'col' }, 'Flag'), h('th', { scope: 'col', class: 'wide' }, 'Description'),
      envs.map((e) => h('th', { scope: 'col' }, ctx.envApi ? e : 'State')), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')));
    const q = search.value.trim().toLowerCase();
    const shown = rows.filter((r) => (!q || r.name.toLowerCase().includes(q) || (r.description || '').toLowerCase().includes(q))
      && (!stateSel.value || envs.some((e) => !!r.states[e] === (stateSel.value === 'on'))));
    const focused = document.activeElement && document.activeElement.dataset && document.activeElement.dataset.focus;
    clear(tbody, shown.map((r) => h('tr', { 'data-flag': r.name },
      h('th', { scope: 'row' }, h('a', { href: `#/flags/${encodeURIComponent(r.name)}` }, r.name)),
      h('td', { class: 'wide desc' }, r.description || ''),
      envs.map((e) => h('td', {}, switchButton(ctx, r, e, onSwitch))),
      h('td', {}, ctx.guard(h('button', { type: 'button', class: 'link danger', 'data-test': `delete-${r.name}`,
                                          'data-focus': `delete:${r.name}`, onclick: () => onDelete(r.name) },
                              'Delete', h('span', { class: 'sr-only' }, ` ${r.name}`)))))));
    count.textContent = `${shown.length} of ${rows.length} flags`;
    if (focused) {
      const again = [...tbody.querySelectorAll('[data-focus]')].find((el) => el.dataset.focus === focused);
      if (again) again.focus();
    }
  }

  async function refresh(force) {
    const next = await load(ctx);
    const sig = JSON.stringify(next);
    if (force || sig !== signature) {
      signature = sig;
      rows = next;
      draw();
    }
  }

  // create
  const cName = h('input', { name: 'name', required: true, maxlength: 100, 'data-test': 'new-name', autocomplete: 'off' });
  const cDesc = h('input', { name: 'description', 'data-test': 'new-description', autocomplete: 'off' });
  const cOn = h('input', { type: 'checkbox', name: 'on', 'data-test': 'new-enabled' });
  const cStatus = h('div', { 'aria-live': 'polite' });
  const cForm = h('form', { class: 'card create', 'data-test': 'create-flag' },
    h('h2', {}, 'New flag'),
    h('div', { class: 'row' }, field('Name', cName), field('Description', cDesc),
      h('div', { class: 'field check' }, cOn, h('label', { for: cOn.id = 'new-on' },
        ctx.envApi ? `On in ${ctx.envs.find((e) => e.is_default)?.name || 'default'}` : 'On'))),
    ctx.guard(h('button', { type: 'submit', class: 'primary' }, 'Create flag')), cStatus);
  [cName, cDesc, cOn].forEach((el) => ctx.guard(el));
  cForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    cStatus.replaceChildren();
    try {
      const f = await api.createFlag({ name: cName.value.trim(), description: cDesc.value, is_enabled: cOn.checked });
      cStatus.append(notice('ok', `Created ${f.name}.`));
      cForm.reset();
      await refresh(true);
    } catch (e) {
      cStatus.append(notice('error', e.message));
    }
  });

  search.addEventListener('input', draw);
  [stateSel, envSel].forEach((el) => el.addEventListener('change', draw));
  main.append(
    h('h1', {}, 'Flags'),
    cForm,
    h('div', { class: 'filters', role: 'search' }, field('Search', search), field('State', stateSel),
      ctx.envApi ? field('Environment', envSel) : null),
    count, status,
    h('div', { class: 'table-wrap' }, h('table', { class: 'flags' }, h('thead', {}, head), tbody)));
  await refresh(true);

  const timer = setInterval(() => {
    refresh(false).catch((e) => { if (!status.firstChild) status.append(notice('error', `Refresh failed: ${e.message}`)); });
  }, POLL_MS);
  return () => clearInterval(timer);
}
