// The rule editor: a form over a rule document of docs/rules.md (the
// original PERCENTAGE and USER_LIST, or strategies with constraints,
// segments, rollout, variants and dependencies) and the constraint list the
// segments page reuses. The document object is the one source of truth: the
// form edits it in place, and the raw-JSON view shows and replaces it. Every
// control carries data-path, the path the targeting API's errors start with
// ("strategies[0].constraints[1].value: ..."), so an error lands next to
// the control it names.
import { h, clear, field, newId } from './dom.js';

export const OPERATOR_TYPES = [
  { type: 'Text', list: true, ci: true, ops: ['IN', 'NOT_IN', 'STR_STARTS_WITH', 'STR_ENDS_WITH', 'STR_CONTAINS'] },
  { type: 'Number', ops: ['NUM_EQ', 'NUM_LT', 'NUM_LTE', 'NUM_GT', 'NUM_GTE'], hint: 'a number' },
  { type: 'Date', ops: ['DATE_BEFORE', 'DATE_AFTER'], hint: 'RFC 3339: 2025-05-01 or 2025-05-01T12:00:00Z' },
  { type: 'Version', ops: ['SEMVER_EQ', 'SEMVER_LT', 'SEMVER_LTE', 'SEMVER_GT', 'SEMVER_GTE'], hint: 'SemVer: 2.3.0' },
  { type: 'Regex', ci: true, ops: ['REGEX'], hint: 'a regular expression (PCRE2, JavaScript-like; no backreferences)' },
  { type: 'IP address', list: true, ops: ['IP_IN_CIDR', 'IN_CIDR'], hint: 'CIDRs or addresses' },
];
export const typeOf = (op) => OPERATOR_TYPES.find((t) => t.ops.includes(op)) || OPERATOR_TYPES[0];
const CONTEXT_NAMES = ['userId', 'sessionId', 'remoteAddress', 'environment', 'appName', 'currentTime'];
const STICKINESS = ['default', 'random', 'userId', 'sessionId'];
const PAYLOAD_TYPES = ['string', 'json', 'number', 'boolean', 'csv'];

const lines = (text) => text.split('\n').map((s) => s.trim()).filter((s) => s !== '');
const numberOr = (text) => (/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(text.trim()) ? Number(text) : text);

// An editor session: `changed()` after each edit of a value (the JSON view
// follows), `redraw()` after a structural one (add, remove, type change).
class Ed {
  constructor(opts) { Object.assign(this, opts); }
  input(path, value, set, attrs = {}) {
    const el = h('input', { value: value ?? '', 'data-path': path, autocomplete: 'off', ...attrs });
    el.addEventListener('input', () => { set(el.value); this.changed(); });
    return this.guard(el);
  }
  check(path, value, set, attrs = {}) {
    const el = h('input', { type: 'checkbox', checked: !!value, 'data-path': path, ...attrs });
    el.addEventListener('change', () => { set(el.checked); this.changed(); });
    return this.guard(el);
  }
  button(text, onclick, attrs = {}) {
    return this.guard(h('button', { type: 'button', class: 'small', ...attrs,
                                    onclick: () => { onclick(); this.redraw(); } }, text));
  }
  datalist(id, options) {
    return h('datalist', { id }, options.map((o) => h('option', { value: o })));
  }
}

// ---- constraints ----

function constraintRow(ed, list, i, path) {
  const c = list[i];
  const p = `${path}[${i}]`;
  const t = typeOf(c.operator);
  const typeSel = ed.guard(h('select', { 'data-test': 'constraint-type' },
    OPERATOR_TYPES.map((x) => h('option', { value: x.type, selected: x === t }, x.type))));
  typeSel.addEventListener('change', () => {
    const nt = OPERATOR_TYPES.find((x) => x.type === typeSel.value);
    setOperator(c, nt.ops[0]);
    ed.redraw();
  });
  const opSel = ed.guard(h('select', { 'data-path': `${p}.operator`, 'data-test': 'constraint-operator' },
    t.ops.map((o) => h('option', { value: o, selected: o === c.operator }, o))));
  opSel.addEventListener('change', () => { setOperator(c, opSel.value); ed.redraw(); });
  const listId = newId('ctx');
  const parts = [
    field('Context', ed.input(`${p}.contextName`, c.contextName, (v) => { c.contextName = v; },
      { list: listId, 'data-test': 'constraint-context' })), ed.datalist(listId, CONTEXT_NAMES),
    field('Type', typeSel), field('Operator', opSel),
  ];
  if (t.list) {
    const ta = ed.guard(h('textarea', { rows: 2, 'data-path': `${p}.values`, 'data-test': 'constraint-values' }));
    ta.value = (c.values || (c.value !== undefined ? [c.value] : [])).join('\n');
    ta.addEventListener('input', () => { c.values = lines(ta.value); delete c.value; ed.changed(); });
    parts.push(field('Values, one per line', ta));
  } else {
    const v = c.value !== undefined ? c.value : (c.values || [])[0];
    parts.push(field('Value', ed.input(`${p}.value`, v, (x) => { c.value = t.type === 'Number' ? numberOr(x) : x; delete c.values; },
      { 'data-test': 'constraint-value', inputmode: t.type === 'Number' ? 'decimal' : false }), t.hint));
  }
  const inv = ed.check(`${p}.inverted`, c.inverted, (x) => { if (x) c.inverted = true; else delete c.inverted; }, { 'data-test': 'constraint-inverted' });
  parts.push(h('div', { class: 'field check' }, inv, h('label', { for: inv.id = newId() }, 'Inverted (NOT)')));
  if (t.ci) {
    const ci = ed.check(`${p}.caseInsensitive`, c.caseInsensitive, (x) => { if (x) c.caseInsensitive = true; else delete c.caseInsensitive; },
      { 'data-test': 'constraint-ci' });
    parts.push(h('div', { class: 'field check' }, ci, h('label', { for: ci.id = newId() }, 'Case-insensitive')));
  }
  if (c.invalid !== undefined) parts.push(h('p', { class: 'hint', 'data-path': `${p}.invalid` }, `Marked invalid (never holds): ${c.invalid}`));
  parts.push(ed.button('Remove constraint', () => list.splice(i, 1), { class: 'small link danger' }));
  return h('fieldset', { class: 'constraint', 'data-path': p, 'data-test': 'constraint' },
    h('legend', {}, `Constraint ${i + 1}`), h('div', { class: 'row' }, parts));
}

// operators with `values` and those with `value` keep the operand across a change
function setOperator(c, op) {
  const wasList = typeOf(c.operator).list;
  c.operator = op;
  const isList = typeOf(op).list;
  if (isList && !wasList) { c.values = c.value !== undefined && c.value !== '' ? [String(c.value)] : []; delete c.value; }
  if (!isList && wasList) { c.value = (c.values || [])[0] ?? ''; delete c.values; }
  if (!typeOf(op).ci) delete c.caseInsensitive;
}

export function constraintsEditor(ed, list, path) {
  return h('div', { class: 'constraints', 'data-path': path },
    list.map((_, i) => constraintRow(ed, list, i, path)),
    ed.button('Add constraint', () => list.push({ contextName: 'userId', operator: 'IN', values: [] }),
      { 'data-test': 'add-constraint' }));
}

// ---- variants ----

function payloadFields(ed, v, p) {
  const typeSel = ed.guard(h('select', { 'data-path': `${p}.payload.type`, 'data-test': 'payload-type' },
    h('option', { value: '' }, 'no payload'),
    PAYLOAD_TYPES.map((t) => h('option', { value: t, selected: v.payload && v.payload.type === t }, t))));
  typeSel.addEventListener('change', () => {
    if (!typeSel.value) delete v.payload;
    else v.payload = { type: typeSel.value, value: v.payload ? v.payload.value : '' };
    ed.redraw();
  });
  const out = [field('Payload type', typeSel)];
  if (v.payload) {
    const raw = typeof v.payload.value === 'string' ? v.payload.value : JSON.stringify(v.payload.value);
    out.push(field('Payload', ed.input(`${p}.payload.value`, raw, (x) => { v.payload.value = x; }, { 'data-test': 'payload-value' }),
      v.payload.type === 'json' ? 'JSON text, e.g. {"color":"#0f0"}' : null));
  }
  return out;
}

function overridesEditor(ed, v, p) {
  const list = v.overrides || [];
  return h('div', { class: 'overrides' },
    list.map((o, j) => {
      const ta = ed.guard(h('textarea', { rows: 1, 'data-path': `${p}.overrides[${j}].values` }));
      ta.value = (o.values || []).join('\n');
      ta.addEventListener('input', () => { o.values = lines(ta.value); ed.changed(); });
      return h('div', { class: 'row', 'data-path': `${p}.overrides[${j}]` },
        field(`Override ${j + 1}: context`, ed.input(`${p}.overrides[${j}].contextName`, o.contextName, (x) => { o.contextName = x; })),
        field('Values, one per line', ta),
        ed.button('Remove override', () => { list.splice(j, 1); if (!list.length) delete v.overrides; }, { class: 'small link danger' }));
    }),
    ed.button('Add override', () => { v.overrides = list; list.push({ contextName: 'userId', values: [] }); }));
}

export function variantsEditor(ed, owner, path) {
  const list = owner.variants || [];
  return h('div', { class: 'variants', 'data-path': path },
    list.map((v, i) => {
      const p = `${path}[${i}]`;
      return h('fieldset', { class: 'variant', 'data-path': p, 'data-test': 'variant' }, h('legend', {}, `Variant ${i + 1}`),
        h('div', { class: 'row' },
          field('Name', ed.input(`${p}.name`, v.name, (x) => { v.name = x; }, { 'data-test': 'variant-name' })),
          field('Weight', ed.input(`${p}.weight`, v.weight, (x) => { v.weight = numberOr(x); },
            { type: 'number', min: 0, max: 1000000, 'data-test': 'variant-weight' }), 'share of the total; 1000 in all is usual'),
          i === 0 ? field('Stickiness', ed.input(`${p}.stickiness`, v.stickiness, (x) => { if (x) v.stickiness = x; else delete v.stickiness; },
            { list: 'tm-stickiness' })) : null,
          payloadFields(ed, v, p)),
        overridesEditor(ed, v, p),
        ed.button('Remove variant', () => { list.splice(i, 1); if (!list.length) delete owner.variants; }, { class: 'small link danger' }));
    }),
    ed.button('Add variant', () => { owner.variants = list; list.push({ name: `variant-${list.length + 1}`, weight: 1000 }); },
      { 'data-test': 'add-variant' }));
}

// ---- strategies ----

function segmentPicker(ed, s, p) {
  const chosen = new Set(s.segments || []);
  const names = [...new Set([...ed.segments.map((x) => x.name), ...chosen])];
  if (!names.length) return h('p', { class: 'hint', 'data-path': `${p}.segments` }, 'No segments yet (see the Segments page).');
  return h('fieldset', { class: 'segments', 'data-path': `${p}.segments` }, h('legend', {}, 'Segments (all must hold)'),
    names.map((n) => {
      const cb = ed.check(`${p}.segments`, chosen.has(n), (on) => {
        if (on) chosen.add(n); else chosen.delete(n);
        if (chosen.size) s.segments = [...chosen]; else delete s.segments;
      }, { 'data-test': `segment-${n}` });
      return h('span', { class: 'check' }, cb, h('label', { for: cb.id = newId() }, n));
    }));
}

function rolloutFields(ed, s, p) {
  const r = s.rollout;
  if (!r) return ed.button('Add rollout percentage', () => { s.rollout = { percentage: 100, stickiness: 'default' }; }, { 'data-test': 'add-rollout' });
  return h('fieldset', { class: 'rollout', 'data-path': `${p}.rollout` }, h('legend', {}, 'Rollout'),
    h('div', { class: 'row' },
      field('Percentage', ed.input(`${p}.rollout.percentage`, r.percentage, (x) => { r.percentage = numberOr(x); },
        { type: 'number', min: 0, max: 100, 'data-test': 'rollout-percentage' })),
      field('Stickiness', ed.input(`${p}.rollout.stickiness`, r.stickiness, (x) => { if (x) r.stickiness = x; else delete r.stickiness; },
        { list: 'tm-stickiness' }), 'default, random or a context name'),
      field('Group id', ed.input(`${p}.rollout.groupId`, r.groupId, (x) => { if (x) r.groupId = x; else delete r.groupId; }),
        'defaults to the flag name'),
      ed.button('Remove rollout', () => { delete s.rollout; }, { class: 'small link danger' })));
}

function strategyCard(ed, list, i) {
  const s = list[i];
  const p = `strategies[${i}]`;
  s.constraints = s.constraints || [];
  const dis = ed.check(`${p}.disabled`, s.disabled, (x) => { if (x) s.disabled = true; else delete s.disabled; });
  return h('fieldset', { class: 'strategy card', 'data-path': p, 'data-test': 'strategy' },
    h('legend', {}, `Strategy ${i + 1}`),
    h('div', { class: 'row' },
      field('Name', ed.input(`${p}.name`, s.name, (x) => { if (x) s.name = x; else delete s.name; }), 'informational'),
      h('div', { class: 'field check' }, dis, h('label', { for: dis.id = newId() }, 'Disabled (skipped)'))),
    h('h4', {}, 'Constraints (all must hold)'), constraintsEditor(ed, s.constraints, `${p}.constraints`),
    segmentPicker(ed, s, p),
    rolloutFields(ed, s, p),
    h('h4', {}, 'Strategy variants (take precedence over the flag\'s)'), variantsEditor(ed, s, `${p}.variants`),
    h('div', { class: 'actions' },
      i > 0 ? ed.button('Move up', () => { [list[i - 1], list[i]] = [list[i], list[i - 1]]; }) : null,
      ed.button('Remove strategy', () => list.splice(i, 1), { class: 'small danger' })));
}

function dependenciesEditor(ed, doc) {
  const list = doc.dependencies || [];
  return h('div', { class: 'dependencies', 'data-path': 'dependencies' },
    list.map((d, i) => {
      const p = `dependencies[${i}]`;
      const en = ed.check(`${p}.enabled`, d.enabled !== false, (x) => { if (x) delete d.enabled; else d.enabled = false; });
      const vs = ed.input(`${p}.variants`, (d.variants || []).join(', '), (x) => {
        const v = x.split(',').map((y) => y.trim()).filter(Boolean);
        if (v.length) d.variants = v; else delete d.variants;
      });
      return h('div', { class: 'row', 'data-path': p },
        field('Parent flag', ed.input(`${p}.feature`, d.feature, (x) => { d.feature = x; }, { list: 'tm-flags' })),
        h('div', { class: 'field check' }, en, h('label', { for: en.id = newId() }, 'Parent must be on (unchecked: off)')),
        field('With one of the variants', vs, 'comma separated; empty: any'),
        ed.button('Remove dependency', () => { list.splice(i, 1); if (!list.length) delete doc.dependencies; }, { class: 'small link danger' }));
    }),
    ed.button('Add dependency', () => { doc.dependencies = list; list.push({ feature: '' }); }));
}

function strategiesForm(ed, doc) {
  doc.strategies = doc.strategies || [];
  return h('div', { class: 'strategies' },
    h('h3', {}, 'Dependencies'), dependenciesEditor(ed, doc),
    h('h3', {}, 'Strategies'),
    h('p', { class: 'hint' }, 'The first strategy that matches turns the flag on; with no strategy it is on for everyone.'),
    doc.strategies.map((_, i) => strategyCard(ed, doc.strategies, i)),
    ed.button('Add strategy', () => doc.strategies.push({ constraints: [] }), { 'data-test': 'add-strategy' }),
    h('h3', {}, 'Flag variants'), variantsEditor(ed, doc, 'variants'));
}

// ---- the whole editor ----

export const KINDS = [
  ['none', 'On for everyone (no rule)'],
  ['PERCENTAGE', 'Percentage of users (original)'],
  ['USER_LIST', 'List of users (original)'],
  ['strategies', 'Strategies: constraints, segments, rollout, variants'],
];
export const kindOf = (doc) => (doc === null ? 'none' : doc.type === 'PERCENTAGE' || doc.type === 'USER_LIST' ? doc.type : 'strategies');
const fresh = { none: () => null, PERCENTAGE: () => ({ type: 'PERCENTAGE', value: 50 }),
                USER_LIST: () => ({ type: 'USER_LIST', values: [] }), strategies: () => ({ strategies: [{ constraints: [] }] }) };

function originalForm(ed, doc) {
  if (doc.type === 'PERCENTAGE') {
    return field('Percentage of users (0–100)', ed.input('value', doc.value, (x) => { doc.value = numberOr(x); },
      { type: 'number', min: 0, max: 100, 'data-test': 'percentage' }), 'on when the user\'s bucket sha1(user + flag) % 100 is below it');
  }
  const ta = ed.guard(h('textarea', { rows: 4, 'data-path': 'values', 'data-test': 'user-list' }));
  ta.value = (doc.values || []).join('\n');
  ta.addEventListener('input', () => { doc.values = lines(ta.value); ed.changed(); });
  return field('User ids, one per line', ta);
}

// ruleEditor({ doc, segments, flags, guard }) → { el, doc(), showError(path, msg), clearErrors() }
export function ruleEditor(opts) {
  let doc = opts.doc === undefined ? null : structuredClone(opts.doc);
  const formBox = h('div', { class: 'rule-form' });
  const json = opts.guard(h('textarea', { rows: 14, class: 'mono', spellcheck: 'false', 'data-test': 'rule-json', 'data-path': '' }));
  const jsonErr = h('p', { class: 'field-error', role: 'alert', hidden: true });
  const kindName = newId('kind');
  const kindBox = h('fieldset', { class: 'kinds' }, h('legend', {}, 'Who gets the flag when it is on'));
  const ed = new Ed({ guard: opts.guard, segments: opts.segments || [],
                      changed: () => { json.value = JSON.stringify(doc, null, 2); jsonErr.hidden = true; clearErrors(); },
                      redraw: () => { drawForm(); ed.changed(); } });

  function drawForm() {
    clear(kindBox.querySelector('.kind-list') || kindBox.appendChild(h('div', { class: 'kind-list' })),
      KINDS.map(([k, label]) => {
        const r = opts.guard(h('input', { type: 'radio', name: kindName, value: k, checked: kindOf(doc) === k, 'data-test': `kind-${k}` }));
        r.addEventListener('change', () => { doc = fresh[k](); ed.redraw(); });
        return h('span', { class: 'check' }, r, h('label', { for: r.id = newId() }, label));
      }));
    const k = kindOf(doc);
    clear(formBox, k === 'none' ? h('p', { class: 'hint' }, 'No rule: when the flag is on, it is on for everyone (reason STATIC).')
      : k === 'strategies' ? strategiesForm(ed, doc) : originalForm(ed, doc));
  }
  json.addEventListener('input', () => {
    try {
      const v = JSON.parse(json.value);
      if (v !== null && (typeof v !== 'object' || Array.isArray(v))) throw new Error('a rule is a JSON object (or null for none)');
      doc = v;
      jsonErr.hidden = true;
      drawForm();
    } catch (e) {
      jsonErr.textContent = `Not saved until this is valid JSON: ${e.message}`;
      jsonErr.hidden = false;
    }
  });
  const clearErrors = () => clearApiErrors(el);
  const el = h('div', { class: 'rule-editor' },
    h('datalist', { id: 'tm-stickiness' }, STICKINESS.map((s) => h('option', { value: s }))),
    h('datalist', { id: 'tm-flags' }, (opts.flags || []).map((f) => h('option', { value: f }))),
    kindBox, formBox,
    h('details', { class: 'raw', open: true }, h('summary', {}, 'Raw JSON (kept in step with the form)'),
      field('Rule document', json, 'Edit either side: the form follows valid JSON.'), jsonErr));
  drawForm();
  json.value = JSON.stringify(doc, null, 2);
  return {
    el,
    doc: () => doc,
    jsonValid: () => jsonErr.hidden,
    clearErrors,
    showError: (path, msg) => showError(el, path, msg),
  };
}

// Puts an API error next to the control its path names (the longest
// data-path that is the error's path or a prefix of it); false when none.
export function showError(root, path, msg) {
  if (path === null || path === undefined) return false;
  let best = null;
  for (const el of root.querySelectorAll('[data-path]')) {
    const dp = el.getAttribute('data-path');
    if (dp === '' && path !== '') continue;
    const fits = dp === path || (path.startsWith(dp) && /^[.[]/.test(path.slice(dp.length)));
    if (fits && (!best || dp.length > best.getAttribute('data-path').length)) best = el;
  }
  if (!best) return false;
  const id = newId('err');
  const p = h('p', { class: 'field-error api', id, role: 'alert', 'data-test': 'field-error', 'data-error-path': path }, msg);
  best.setAttribute('aria-invalid', 'true');
  best.setAttribute('aria-describedby', id);
  const host = best.closest('.field') || best;
  host.after(p);
  if (typeof best.focus === 'function') best.focus();
  return true;
}

// The constraints of a segment, for the segments page.
export function constraintsForm(opts) {
  const constraints = structuredClone(opts.constraints || []);
  const box = h('div', { class: 'segment-constraints' });
  const ed = new Ed({ guard: opts.guard, segments: [], changed: () => clearApiErrors(box),
                      redraw: () => clear(box, constraintsEditor(ed, constraints, 'constraints')) });
  ed.redraw();
  return { el: box, constraints: () => constraints, showError: (path, msg) => showError(box, path, msg),
           clearErrors: () => clearApiErrors(box) };
}

function clearApiErrors(root) {
  for (const el of root.querySelectorAll('.field-error.api')) el.remove();
  for (const el of root.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute('aria-invalid');
}
