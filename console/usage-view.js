// Usage from the analytics service (README "Usage"): a flag's evaluations per
// day as a bar chart, and the stale flags. The chart is SVG built with DOM
// calls; sizes are SVG attributes, not style attributes, so the CSP's
// style-src 'self' has nothing to refuse.
import * as api from './api.js';
import { h, notice } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

// The analytics service away (the gateway's 502, the service's 503 when
// DynamoDB is): say so plainly rather than show an empty chart.
export function usageError(e) {
  if (e.status === 502 || e.status === 503 || e.status === 504 || e.status === 0) {
    const why = e.status ? `HTTP ${e.status}` : 'no answer';
    const detail = e.message === why ? why : `${why}: ${e.message}`;
    return notice('error', `Usage cannot be shown now: the analytics service is not answering (${detail}). Evaluations go on; try again later.`);
  }
  return notice('error', `Usage cannot be shown: ${e.message}`);
}

export function barChart(points) {
  const W = 600, H = 120, n = Math.max(points.length, 1), bw = W / n;
  const max = Math.max(1, ...points.map((p) => p.evaluations || 0));
  const bars = points.map((p, i) => {
    const hgt = Math.round(((p.evaluations || 0) / max) * (H - 4));
    return svg('rect', { x: (i * bw + 1).toFixed(1), y: H - hgt, width: Math.max(bw - 2, 1).toFixed(1), height: hgt, class: 'bar' },
      svg('title', {}, `${String(p.start).slice(0, 10)}: ${p.evaluations || 0} evaluations (true ${p.true || 0}, false ${p.false || 0})`));
  });
  const day = (p) => (p ? String(p.start).slice(0, 10) : '');
  return svg('svg', { viewBox: `0 0 ${W} ${H + 16}`, class: 'chart', role: 'img', 'data-test': 'usage-chart',
                      'aria-label': `Evaluations per day, ${day(points[0])} to ${day(points[points.length - 1])}, at most ${max} a day` },
    svg('line', { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: 'axis' }), ...bars,
    svg('text', { x: 0, y: H + 13, class: 'label' }, day(points[0])),
    svg('text', { x: W, y: H + 13, 'text-anchor': 'end', class: 'label' }, day(points[points.length - 1])),
    svg('text', { x: 2, y: 11, class: 'label' }, `max ${max}`));
}

// The flag page's usage card: the last 30 days by day in one environment.
export function usageSection(ctx, name) {
  const env = h('select', { 'data-test': 'usage-env' }, ctx.envs.map((e) => h('option', { value: e.name, selected: !!e.is_default }, e.name)));
  const out = h('div', { 'aria-live': 'polite', 'data-test': 'usage-result' });
  async function draw() {
    out.replaceChildren(h('p', { class: 'hint' }, 'Loading…'));
    try {
      const r = await api.flagUsage(name, { environment: ctx.envParam(env.value), granularity: 'day' });
      const t = r.totals || {};
      out.replaceChildren(
        h('p', { 'data-test': 'usage-totals' }, `${t.evaluations || 0} evaluations in 30 days (true ${t.true || 0}, false ${t.false || 0}); last evaluated ${r.last_evaluated || 'never'}.`),
        barChart(r.points || []));
    } catch (e) { out.replaceChildren(usageError(e)); }
  }
  env.addEventListener('change', draw);
  const box = h('section', { class: 'card', 'data-test': 'flag-usage' }, h('h2', {}, 'Usage'),
    ctx.envApi ? h('div', { class: 'row' }, h('label', { for: env.id = 'usage-env' }, 'Environment'), env) : null, out);
  draw();
  return box;
}
