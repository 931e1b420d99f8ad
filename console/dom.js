// Building the page with DOM calls only: text goes in as textContent, never
// parsed as HTML, so a flag description like "<img onerror=...>" stays text.

// h('button', {class: 'x', onclick: f, disabled: true}, 'text', child...)
// Attributes: on* are listeners, `class`, `for`, `data-*`, `aria-*` and the
// rest are set as attributes; false/null/undefined are left out.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
export const newId = (prefix = 'f') => `${prefix}-${++uid}`;

// A labelled control: <div class="field"><label for=id>text</label>control</div>
export function field(labelText, control, hint) {
  if (!control.id) control.id = newId();
  const parts = [h('label', { for: control.id }, labelText), control];
  if (hint) {
    const hid = newId('hint');
    parts.push(h('p', { class: 'hint', id: hid }, hint));
    control.setAttribute('aria-describedby', hid);
  }
  return h('div', { class: 'field' }, parts);
}

// A status line that screen readers announce.
export function notice(kind, text) {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

// Confirmation in a modal <dialog> (keyboard: Tab between the buttons, Esc
// cancels). Resolves true when confirmed.
export function confirmDialog(title, text, confirmLabel = 'Confirm') {
  return new Promise((resolve) => {
    const ok = h('button', { type: 'button', class: 'danger', 'data-test': 'confirm-ok' }, confirmLabel);
    const cancel = h('button', { type: 'button', 'data-test': 'confirm-cancel' }, 'Cancel');
    const tid = newId('dlg');
    const dlg = h('dialog', { 'aria-labelledby': tid, class: 'confirm' },
      h('h2', { id: tid }, title), h('p', {}, text), h('div', { class: 'actions' }, cancel, ok));
    const done = (v) => { dlg.close(); dlg.remove(); resolve(v); };
    ok.addEventListener('click', () => done(true));
    cancel.addEventListener('click', () => done(false));
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); done(false); });
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

export function fmtTime(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
}
