// The audit trail as the console shows it (docs/audit.md): the flags and
// targeting daemons each keep their own trail, so a view reads both and
// merges them newest first, as `tmctl history` does. Used by the audit page
// and by the flag page's history.
import * as api from './api.js';
import { h, clear, notice, fmtTime } from './dom.js';

const PAGE = 50;

// Newest first across sources, each read with its own cursor. A record is
// shown only once no source that still has pages could hold a newer one:
// everything at or after the oldest record buffered from every unfinished
// source. The source that set that bound is drained, so each "load more"
// fetches from it again and the view always moves on.
export function mergedTrail(sources) {
  const srcs = sources.map(([service, q]) => ({ service, q, buf: [], cursor: null, done: false }));
  return {
    async next() {
      await Promise.all(srcs.filter((s) => !s.done && s.buf.length === 0).map(async (s) => {
        const r = await api.audit(s.service, { ...s.q, limit: PAGE, cursor: s.cursor || undefined });
        s.buf.push(...((r && r.records) || []));
        s.cursor = r && r.next_cursor;
        s.done = !s.cursor || !(r.records || []).length;
      }));
      let bound = '';
      for (const s of srcs) {
        if (!s.done && s.buf.length && s.buf[s.buf.length - 1].at > bound) bound = s.buf[s.buf.length - 1].at;
      }
      const out = [];
      for (const s of srcs) {
        const keep = s.buf.filter((r) => r.at < bound);
        out.push(...s.buf.filter((r) => r.at >= bound));
        s.buf = keep;
      }
      out.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
      return out;
    },
    more() { return srcs.some((s) => !s.done || s.buf.length); },
  };
}

const show = (v) => (v === undefined ? '—' : JSON.stringify(v, null, 1));

// The members of before/after that differ, side by side. A creation has no
// before and a deletion no after: all of the other side's members show.
export function diffTable(before, after) {
  const b = before && typeof before === 'object' ? before : {};
  const a = after && typeof after === 'object' ? after : {};
  const keys = [...new Set([...Object.keys(b), ...Object.keys(a)])]
    .filter((k) => JSON.stringify(b[k]) !== JSON.stringify(a[k]));
  if (!keys.length) return h('p', { class: 'hint' }, 'No member changed.');
  return h('table', { class: 'diff', 'data-test': 'audit-diff' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Member'), h('th', { scope: 'col' }, 'Before'), h('th', { scope: 'col' }, 'After'))),
    h('tbody', {}, keys.map((k) => h('tr', { 'data-member': k },
      h('th', { scope: 'row' }, k),
      h('td', { class: 'before', 'data-test': 'diff-before' }, h('pre', {}, show(b[k]))),
      h('td', { class: 'after', 'data-test': 'diff-after' }, h('pre', {}, show(a[k])))))));
}

function recordRow(r) {
  const actor = r.actor && r.actor.name ? r.actor.name : '—';
  return h('li', { class: 'audit-record card', 'data-test': 'audit-record', 'data-kind': r.kind, 'data-name': r.name, 'data-action': r.action },
    h('p', { class: 'audit-head' },
      h('time', { datetime: r.at }, fmtTime(r.at)), ' ',
      h('strong', { 'data-test': 'audit-actor' }, actor), ' ',
      h('span', { 'data-test': 'audit-action' }, r.action), ' ',
      `${r.kind} `, h('span', { class: 'mono' }, r.name),
      r.environment ? ` in ${r.environment}` : '',
      r.client_address ? h('span', { class: 'hint' }, ` from ${r.client_address}`) : ''),
    diffTable(r.before, r.after));
}

// A list with its "load more" button, fed by a mergedTrail.
export async function trailList(trail, empty) {
  const list = h('ol', { class: 'audit-list', 'data-test': 'audit-list' });
  const status = h('div', { 'aria-live': 'polite' });
  const moreBtn = h('button', { type: 'button', 'data-test': 'audit-more' }, 'Load more');
  const wrap = h('div', {}, list, status, moreBtn);
  async function load() {
    moreBtn.disabled = true;
    status.replaceChildren();
    try {
      const recs = await trail.next();
      list.append(...recs.map(recordRow));
      if (!list.children.length) status.append(notice('info', empty));
    } catch (e) {
      status.append(notice('error', `The audit trail cannot be read: ${e.message}`));
    }
    moreBtn.disabled = false;
    moreBtn.hidden = !trail.more();
  }
  moreBtn.addEventListener('click', load);
  await load();
  return wrap;
}

// The flag page's history: its flag records and its rule records.
export async function historySection(name) {
  const box = h('section', { class: 'card', 'data-test': 'flag-history' }, h('h2', {}, 'History'));
  const btn = h('button', { type: 'button', 'data-test': 'show-history' }, 'Show the history of this flag');
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    const trail = mergedTrail([['flags', { kind: 'flag', name }], ['targeting', { kind: 'rule', name }]]);
    const list = await trailList(trail, 'No change of this flag is recorded.');
    clear(box, h('h2', {}, 'History'), list);
  });
  box.append(h('p', { class: 'hint' }, 'Changes of the flag and of its rules, newest first, with what changed.'), btn);
  return box;
}
