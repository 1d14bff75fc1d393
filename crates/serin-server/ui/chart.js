// The release's weight over time as an inline SVG step chart, drawn from its transitions.
// Fixed viewBox, so new points never resize the page.

const NS = 'http://www.w3.org/2000/svg';
const W = 600;
const H = 180;
const PAD = { left: 44, right: 12, top: 12, bottom: 28 };

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** `"12.5%"` → 12.5. */
export function percent(s) {
  const n = parseFloat(String(s));
  return Number.isFinite(n) ? n : 0;
}

/**
 * The steps a release runs, as the server counts them (its `step` indexes this list): the
 * plan's steps, or with `waves` every wave's steps in wave order, the one box first (one
 * step at 100%), a wave with `open: true` one step at 100%, a wave without steps of its own
 * the plan's. Each is `{ wave, weight }`, `wave` an index into `release.waves` (or null).
 * The plan's holdback comes off the final step's weight.
 */
export function stages(plan) {
  const weights = (list) => (list || []).map((s) => percent((s.canary || s).weight));
  const out = [];
  const w = plan.waves;
  if (!w) {
    for (const weight of weights(plan.steps)) out.push({ wave: null, weight });
  } else {
    let i = 0;
    if (w.one_box) out.push({ wave: i++, weight: 100 });
    for (const spec of w.list || []) {
      for (const weight of spec.open ? [100] : weights(spec.steps || plan.steps)) out.push({ wave: i, weight });
      i++;
    }
  }
  if (out.length && plan.holdback) {
    const last = out[out.length - 1];
    last.weight = Math.max(0, last.weight - percent(plan.holdback));
  }
  return out;
}

/**
 * Points `[at_ms, weight%]` of a release: each transition sets the weight its phase and step
 * route (a drained or aborted release routes 0%, a completed one 100%). For a waved release
 * the weight is the current wave's.
 */
export function weightPoints(release, nowMs) {
  const steps = stages(release.plan).map((s) => s.weight);
  const routed = (phase, step) => {
    if (phase === 'rolled_back' || phase === 'aborted' || phase === 'pending') return 0;
    if (phase === 'completed') return 100;
    return steps[Math.min(step, steps.length - 1)] || 0;
  };
  const pts = [];
  for (const t of release.history || []) {
    pts.push([t.at_ms, routed(t.to, t.step)]);
  }
  if (pts.length && !['completed', 'rolled_back', 'aborted'].includes(release.phase)) {
    pts.push([Math.max(nowMs, pts[pts.length - 1][0]), pts[pts.length - 1][1]]);
  }
  return pts;
}

/** Replaces the content of `svg` with the chart of `points`. */
export function drawWeight(svg, points) {
  svg.replaceChildren();
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const x0 = PAD.left;
  const x1 = W - PAD.right;
  const y0 = H - PAD.bottom;
  const y1 = PAD.top;
  for (const w of [0, 25, 50, 75, 100]) {
    const y = y0 - ((y0 - y1) * w) / 100;
    svg.append(el('line', { x1: x0, x2: x1, y1: y, y2: y, class: 'grid' }));
    svg.append(el('text', { x: x0 - 6, y: y + 4, 'text-anchor': 'end', class: 'axis' }, `${w}%`));
  }
  if (!points.length) {
    svg.append(el('text', { x: (x0 + x1) / 2, y: (y0 + y1) / 2, 'text-anchor': 'middle', class: 'axis' }, 'no transitions yet'));
    return;
  }
  const t0 = points[0][0];
  const tEnd = points[points.length - 1][0];
  const span = Math.max(tEnd - t0, 1);
  const px = (t) => x0 + ((x1 - x0) * (t - t0)) / span;
  const py = (w) => y0 - ((y0 - y1) * w) / 100;
  let d = `M ${px(points[0][0]).toFixed(1)} ${py(points[0][1]).toFixed(1)}`;
  for (let i = 1; i < points.length; i++) {
    d += ` H ${px(points[i][0]).toFixed(1)} V ${py(points[i][1]).toFixed(1)}`;
  }
  svg.append(el('path', { d, class: 'weight' }));
  for (const [t, w] of points) {
    svg.append(el('circle', { cx: px(t).toFixed(1), cy: py(w).toFixed(1), r: 3, class: 'weight-dot' }));
  }
  const fmt = (ms) => new Date(ms).toISOString().slice(11, 19);
  svg.append(el('text', { x: x0, y: H - 8, class: 'axis' }, fmt(t0)));
  svg.append(el('text', { x: x1, y: H - 8, 'text-anchor': 'end', class: 'axis' }, fmt(tEnd)));
}
