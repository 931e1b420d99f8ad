// The audit log: who changed what, when, from where, and what it was before
// (docs/audit.md). Flags and targeting trails merged newest first; filters
// go to the daemons as query members; "load more" follows their cursors.
import { h, clear, field } from '../dom.js';
import { mergedTrail, trailList } from '../audit-view.js';

// which daemon records which kind
const KINDS = [['', 'any', ['flags', 'targeting']], ['flag', 'flag', ['flags']], ['environment', 'environment', ['flags']],
               ['rule', 'rule', ['targeting']], ['segment', 'segment', ['targeting']]];

// datetime-local is the browser's local time; the daemons take RFC 3339.
function rfc3339(v) {
  if (!v) return undefined;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? v : d.toISOString();
}

export async function render(main, ctx) {
  const kind = h('select', { 'data-test': 'audit-kind' }, KINDS.map(([v, t]) => h('option', { value: v }, t)));
  const name = h('input', { 'data-test': 'audit-name', autocomplete: 'off' });
  const actor = h('input', { 'data-test': 'audit-actor-filter', autocomplete: 'off' });
  const env = h('select', { 'data-test': 'audit-env' }, h('option', { value: '' }, 'any'),
    ctx.envs.map((e) => h('option', { value: e.name }, e.name)));
  const since = h('input', { type: 'datetime-local', 'data-test': 'audit-since' });
  const until = h('input', { type: 'datetime-local', 'data-test': 'audit-until' });
  const results = h('div', { 'data-test': 'audit-results' });
  const form = h('form', { class: 'card', 'data-test': 'audit-form' },
    h('div', { class: 'filters' }, field('Kind', kind), field('Name', name), field('Actor (key name or id)', actor),
      ctx.envApi ? field('Environment', env) : null, field('Since', since), field('Until', until)),
    h('button', { type: 'submit', class: 'primary' }, 'Show'));

  async function draw() {
    const q = { name: name.value.trim(), actor: actor.value.trim(), environment: env.value,
                since: rfc3339(since.value), until: rfc3339(until.value), kind: kind.value };
    const services = KINDS.find(([v]) => v === kind.value)[2];
    const trail = mergedTrail(services.map((s) => [s, q]));
    clear(results, await trailList(trail, 'No change matches.'));
  }
  form.addEventListener('submit', (ev) => { ev.preventDefault(); draw(); });
  main.append(h('h1', {}, 'Audit log'),
    h('p', { class: 'hint' }, 'Changes of flags, environments, rules and segments, newest first. Key changes are in auth\'s own trail (GET /auth/audit, with the master key).'),
    form, results);
  await draw();
}
