// Segments: named constraint sets that strategies refer to. Create, edit,
// delete, and where each one is used (read from the rules of every
// environment; the API refuses to delete a segment in use, 409).
import * as api from '../api.js';
import { h, clear, field, notice, confirmDialog } from '../dom.js';
import { constraintsForm } from '../rules.js';

// segment name -> ["flag (environment)", ...]
async function usage(ctx) {
  const used = new Map();
  const lists = await Promise.all(ctx.envs.map((e) => api.listRules(ctx.envParam(e.name))));
  lists.forEach((rules, i) => {
    for (const r of rules) {
      for (const s of (r.rules && r.rules.strategies) || []) {
        for (const seg of s.segments || []) {
          const where = ctx.envApi ? `${r.flag_name} (${ctx.envs[i].name})` : r.flag_name;
          const list = used.get(seg) || [];
          if (!list.includes(where)) list.push(where);
          used.set(seg, list);
        }
      }
    }
  });
  return used;
}

function editForm(ctx, seg, done) {
  const creating = !seg;
  const name = ctx.guard(h('input', { value: seg ? seg.name : '', required: true, disabled: !creating, 'data-test': 'segment-name', autocomplete: 'off' }));
  const desc = ctx.guard(h('input', { value: seg ? seg.description || '' : '', 'data-test': 'segment-description' }));
  const cons = constraintsForm({ constraints: seg ? seg.constraints : [{ contextName: 'userId', operator: 'IN', values: [] }],
                                 guard: (el) => ctx.guard(el) });
  const status = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'card', 'data-test': 'segment-form', novalidate: true },
    h('h2', {}, creating ? 'New segment' : `Edit ${seg.name}`),
    h('div', { class: 'row' }, field('Name', name), field('Description', desc)),
    h('h3', {}, 'Constraints (all must hold)'), cons.el,
    h('div', { class: 'actions' }, ctx.guard(h('button', { type: 'submit', class: 'primary' }, creating ? 'Create segment' : 'Save segment')),
      creating ? null : h('button', { type: 'button', onclick: () => done() }, 'Cancel')),
    status);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    cons.clearErrors();
    try {
      if (creating) await api.createSegment({ name: name.value.trim(), description: desc.value, constraints: cons.constraints() });
      else await api.updateSegment(seg.name, { description: desc.value, constraints: cons.constraints() });
      done(creating ? `Created ${name.value.trim()}.` : `Saved ${seg.name}.`);
    } catch (e) {
      const placed = e.status === 400 && cons.showError(e.path, e.message);
      status.append(notice('error', `Not saved: ${e.message}${placed ? ' (marked at the field)' : ''}`));
    }
  });
  return form;
}

export async function render(main, ctx) {
  const body = h('div');
  main.append(h('h1', {}, 'Segments'),
    h('p', { class: 'hint' }, 'A segment is a reusable set of constraints; a strategy that names it holds only where all of them hold.'), body);

  async function draw(message, editing) {
    const [segs, used] = await Promise.all([api.listSegments(), usage(ctx)]);
    const status = h('div', { 'aria-live': 'polite' });
    if (message) status.append(notice('ok', message));
    const rows = segs.map((s) => {
      const where = used.get(s.name) || [];
      return h('tr', { 'data-segment': s.name },
        h('th', { scope: 'row' }, s.name), h('td', { class: 'desc' }, s.description || ''),
        h('td', {}, String((s.constraints || []).length)),
        h('td', { 'data-test': `used-${s.name}` }, where.length ? where.map((w, i) => [i ? ', ' : '',
          h('a', { href: `#/flags/${encodeURIComponent(w.replace(/ \(.*\)$/, ''))}` }, w)]) : 'not used'),
        h('td', { class: 'actions' },
          h('button', { type: 'button', class: 'small', onclick: () => draw(null, s) }, ctx.readonly ? 'View' : 'Edit', h('span', { class: 'sr-only' }, ` ${s.name}`)),
          ctx.guard(h('button', { type: 'button', class: 'small danger', 'data-test': `delete-segment-${s.name}`, onclick: async () => {
            if (!(await confirmDialog(`Delete segment ${s.name}?`, where.length ? `It is used by ${where.join(', ')}: the API will refuse.` : 'No rule uses it.', 'Delete segment'))) return;
            try { await api.deleteSegment(s.name); await draw(`Deleted ${s.name}.`); } catch (e) { status.append(notice('error', e.message)); }
          } }, 'Delete', h('span', { class: 'sr-only' }, ` ${s.name}`)))));
    });
    clear(body, status,
      h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Segment', 'Description', 'Constraints', 'Used by', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 5 }, 'No segments yet.'))))),
      editForm(ctx, editing || null, (msg) => draw(msg)));
    if (editing) body.querySelector('form [data-test="segment-description"]').focus();
  }
  await draw();
}
