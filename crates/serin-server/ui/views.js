// The pages. Everything is built with DOM calls (never innerHTML), so server text is
// always text. Each page returns its root element and registers its own cleanup.

import { api, follow } from './api.js';
import { drawWeight, weightPoints } from './chart.js';

/** `h('p', {class: 'x'}, 'text', child)`: an element with attributes and children. */
export function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, '');
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const enc = encodeURIComponent;

/** Phases in which a release still owns its agent (promote, pause, resume, abort apply). */
const ACTIVE = ['pending', 'canary', 'paused', 'promoting', 'halted'];

export function agentPath(env, agent) {
  return `/v1/envs/${enc(env)}/agents/${enc(agent)}`;
}

function badge(text, kind) {
  return h('span', { class: `badge badge-${kind || text}` }, text);
}

function duration(ms) {
  const s = Math.round((ms || 0) / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${s % 60 ? ` ${s % 60}s` : ''}`;
  return `${Math.floor(m / 60)}h${m % 60 ? ` ${m % 60}m` : ''}`;
}

function time(ms) {
  return ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '-';
}

function num(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '-';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e6) return v.toExponential(2);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 1) return v.toFixed(2).replace(/\.?0+$/, '');
  return v.toPrecision(3);
}

function errorText(e) {
  return e.status ? `${e.status} ${e.code}: ${e.message}` : e.message;
}

/** A progress bar: `value` of `max`, with its label. */
function bar(label, value, max, text) {
  const pct = max > 0 ? Math.min(100, (100 * value) / max) : 100;
  const p = h('progress', { max: 100, value: pct.toFixed(0), 'aria-label': label });
  return h('div', { class: 'bar' }, h('span', { class: 'bar-label' }, label), p, h('span', { class: 'bar-text' }, text));
}

function gateBars(gate) {
  if (!gate) return h('p', { class: 'muted' }, 'No gate: the release is not routing a step.');
  return h(
    'div',
    { class: 'gate' },
    bar('Requests', gate.requests, gate.min_requests ?? gate.needed_requests, `${gate.requests} / ${gate.min_requests ?? gate.needed_requests}`),
    bar('Duration', gate.elapsed_ms, gate.min_duration_ms ?? gate.needed_ms, `${duration(gate.elapsed_ms)} / ${duration(gate.min_duration_ms ?? gate.needed_ms)}`),
    h('p', { class: 'gate-state' }, gate.holds ? badge('gate holds', 'pass') : badge('gate waiting', 'pending'), ' ', (gate.missing || []).join('; ')),
  );
}

/** The confirmation dialog: resolves to the fields entered, or null when cancelled. */
export function confirmAction(title, text, withTenant) {
  const dialog = document.getElementById('confirm');
  const form = document.getElementById('confirm-form');
  const reason = document.getElementById('confirm-reason');
  const tenantRow = document.getElementById('confirm-tenant-row');
  const tenant = document.getElementById('confirm-tenant');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  reason.value = '';
  tenant.value = '';
  tenantRow.hidden = !withTenant;
  return new Promise((resolve) => {
    const done = (v) => {
      form.removeEventListener('submit', submit);
      cancel.removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      resolve(v);
    };
    const submit = (ev) => {
      ev.preventDefault();
      if (!reason.value.trim()) {
        reason.focus();
        return;
      }
      done({ reason: reason.value.trim(), tenant: tenant.value.trim() || undefined });
    };
    const onCancel = (ev) => {
      ev.preventDefault();
      done(null);
    };
    const cancel = document.getElementById('confirm-cancel');
    form.addEventListener('submit', submit);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
    reason.focus();
  });
}

/**
 * A button that calls the API and shows the outcome next to itself: the server's answer,
 * or its error message. `ask` (optional) collects a reason first.
 */
function action(label, id, run, ask) {
  const msg = h('output', { class: 'msg', id: `msg-${id}`, 'aria-live': 'polite', for: `btn-${id}` });
  const button = h('button', {
    type: 'button',
    id: `btn-${id}`,
    onclick: async () => {
      let input = {};
      if (ask) {
        input = await ask();
        if (!input) return;
      }
      button.disabled = true;
      msg.className = 'msg';
      msg.textContent = 'Working…';
      try {
        const r = await run(input);
        msg.className = 'msg ok';
        msg.textContent = r;
      } catch (e) {
        msg.className = 'msg error';
        msg.textContent = errorText(e);
      } finally {
        button.disabled = false;
      }
    },
  }, label);
  return h('div', { class: 'action' }, button, msg);
}

function changeText(r) {
  return `${r.action} → snapshot v${r.version}; stable ${r.stable || '-'}, previous ${r.previous || '-'}${r.killed ? '; killed' : ''}`;
}

function releaseText(v) {
  const r = v.release;
  return `${r.id}: ${r.phase} at step ${r.step + 1}/${r.plan.steps.length} (${v.weight})`;
}

function releaseActions(env, agent) {
  const base = agentPath(env, agent);
  return h(
    'div',
    { class: 'actions', role: 'group', 'aria-label': 'Release actions' },
    action('Promote', 'promote', async () => releaseText(await api('POST', `${base}/release/promote`, {}))),
    action('Pause', 'pause', async () => releaseText(await api('POST', `${base}/release/pause`, {}))),
    action('Resume', 'resume', async () => releaseText(await api('POST', `${base}/release/resume`))),
    action(
      'Abort',
      'abort',
      async ({ reason }) => releaseText(await api('POST', `${base}/release/abort`, { reason })),
      () => confirmAction(`Abort the release of ${agent} in ${env}?`, 'The candidate is drained at once.'),
    ),
  );
}

function verdictCell(verdicts) {
  if (!verdicts || !verdicts.length) return '-';
  return h('ul', { class: 'verdicts' }, verdicts.map((v) => h('li', {}, badge(v.verdict || v.status), ' ', v.guardrail, v.shadow ? ' (shadow)' : '')));
}

function killText(kill) {
  const parts = [];
  if (kill.killed) parts.push(`killed: ${kill.reason || ''}`);
  if (kill.tenants && kill.tenants.length) parts.push(`tenants: ${kill.tenants.join(', ')}`);
  return parts.length ? parts.join('; ') : 'no';
}


/**
 * The connection line of a live page: its state (connecting, live, an error) is announced
 * to screen readers when it changes; the time of the last update is shown but not
 * announced, since it changes every second while a release runs.
 */
function liveLine(initial) {
  const state = h('span', { role: 'status' }, initial);
  const when = h('span', { class: 'when' });
  const el = h('p', { class: 'live-state' }, state, when);
  const set = (text) => {
    if (state.textContent !== text) state.textContent = text;
  };
  return {
    el,
    open: () => set('Live'),
    updated: () => {
      set('Live');
      when.textContent = ` · updated ${new Date().toLocaleTimeString()}`;
    },
    error: (e) => {
      set(errorText(e));
      when.textContent = '';
    },
  };
}

// ---- Overview ----

export function overviewPage(ctx) {
  const live = liveLine('Connecting…');
  const body = h('div', { class: 'overview' });
  const root = h('section', { 'aria-labelledby': 'title' }, h('h1', { id: 'title' }, 'Overview'), live.el, body);
  follow('/v1/status/stream', {
    onOpen: live.open,
    onError: live.error,
    onEvent: (name, o) => {
      if (name !== 'overview') return;
      live.updated();
      body.replaceChildren(...renderOverview(o));
    },
  }, ctx.signal);
  return root;
}

function renderOverview(o) {
  const out = [];
  for (const env of o.envs) {
    const rows = env.agents.map((a) => {
      const r = a.release;
      const link = `#/env/${enc(env.env)}/agent/${enc(a.agent)}`;
      return h(
        'tr',
        { 'data-agent': a.agent },
        h('th', { scope: 'row' }, h('a', { href: link }, a.agent)),
        h('td', {}, a.stable || '-'),
        h('td', {}, a.previous || '-'),
        h(
          'td',
          {},
          r
            ? h('a', { href: `${link}/release` }, `${r.candidate} `, badge(r.phase), ` step ${r.step_index + 1}/${r.steps} · ${r.weight}`)
            : '-',
          r && r.gate ? h('div', { class: 'muted small' }, `${r.gate.requests}/${r.gate.min_requests} req · ${duration(r.gate.elapsed_ms)}/${duration(r.gate.min_duration_ms)}`) : null,
        ),
        h('td', {}, r ? verdictCell(r.verdicts) : '-'),
        h('td', { class: a.kill.killed || a.kill.tenants.length ? 'killed' : '' }, killText(a.kill)),
      );
    });
    out.push(
      h(
        'section',
        { class: 'env', 'data-env': env.env },
        h(
          'h2',
          {},
          env.env,
          ' ',
          badge(env.strict ? 'strict' : 'lenient', 'plain'),
          h('span', { class: 'muted small' }, ` snapshot v${env.version}`),
        ),
        env.needs_attention ? h('p', { class: 'msg error' }, env.needs_attention) : null,
        h(
          'p',
          { class: 'sdks' },
          `SDKs: ${env.sdks.connected} connected, max lag ${env.sdks.max_lag} version${env.sdks.max_lag === 1 ? '' : 's'}${env.sdks.lagging ? ` (${env.sdks.lagging} behind)` : ''} · `,
          h('a', { href: `#/env/${enc(env.env)}/fleet` }, 'Fleet'),
        ),
        rows.length
          ? h(
              'div',
              { class: 'scroll' },
              h(
                'table',
                { class: 'grid-table' },
                h('thead', {}, h('tr', {}, ['Agent', 'Stable', 'Previous', 'Release', 'Verdicts', 'Kill'].map((c) => h('th', { scope: 'col' }, c)))),
                h('tbody', {}, rows),
              ),
            )
          : h('p', { class: 'muted' }, 'No agent has state in this env yet.'),
      ),
    );
  }
  out.push(
    h(
      'section',
      { class: 'replicas' },
      h('h2', {}, 'Replicas'),
      h(
        'div',
        { class: 'scroll' },
        h(
          'table',
          { class: 'grid-table' },
          h('thead', {}, h('tr', {}, ['Replica', 'Host:pid', 'Role', 'Alive', 'Caught up', 'SDK streams'].map((c) => h('th', { scope: 'col' }, c)))),
          h(
            'tbody',
            {},
            o.replicas.map((r) =>
              h(
                'tr',
                {},
                h('td', {}, r.id + (r.id === o.served_by ? ' (this one)' : '')),
                h('td', {}, `${r.host}:${r.pid}`),
                h('td', {}, `${r.is_leader ? 'leader' : 'follower'}/${r.epoch}`),
                h('td', {}, r.alive ? 'yes' : 'no'),
                h('td', {}, r.caught_up ? 'yes' : `no (lag ${r.lag_versions})`),
                h('td', {}, String(r.sdk_streams)),
              ),
            ),
          ),
        ),
      ),
    ),
  );
  return out;
}

// ---- Agent page ----

export function agentPage(ctx, env, agent) {
  const base = agentPath(env, agent);
  const state = h('div', { class: 'agent-state' }, h('p', { class: 'muted' }, 'Loading…'));
  const releaseBox = h('div', { class: 'release-box' });
  const history = h('div', { class: 'history' });
  const live = liveLine('Connecting…');
  let lastRelease = '';

  const routing = h(
    'div',
    { class: 'actions', role: 'group', 'aria-label': 'Routing actions' },
    action(
      'Roll back',
      'rollback',
      async ({ reason }) => changeText(await api('POST', `${base}/rollback`, { reason })),
      () => confirmAction(`Roll ${agent} back in ${env}?`, 'A running release is drained; otherwise the previous stable serves again.'),
    ),
    action(
      'Kill',
      'kill',
      async ({ reason, tenant }) => changeText(await api('POST', `${base}/kill`, { reason, tenant })),
      () => confirmAction(`Kill ${agent} in ${env}?`, 'Every request (of the tenant, if given) decides killed.', true),
      ),
    action(
      'Unkill',
      'unkill',
      async ({ reason, tenant }) => changeText(await api('POST', `${base}/unkill`, { reason, tenant })),
      () => confirmAction(`Lift the kill switch of ${agent} in ${env}?`, 'Leave the tenant empty to lift the whole-agent switch.', true),
    ),
  );

  const readiness = readinessForm(env, agent);
  // Promote, pause, resume and abort act on an active release; without one they are hidden
  // (the server would refuse them anyway).
  const relActions = releaseActions(env, agent);
  relActions.hidden = true;

  const refreshHistory = async () => {
    try {
      const list = await api('GET', `${base}/releases`);
      history.replaceChildren(renderHistory(list));
    } catch (e) {
      history.replaceChildren(h('p', { class: 'msg error' }, errorText(e)));
    }
  };

  follow('/v1/status/stream', {
    onOpen: live.open,
    onError: live.error,
    onEvent: (name, o) => {
      if (name !== 'overview') return;
      live.updated();
      const e = o.envs.find((x) => x.env === env);
      const a = e && e.agents.find((x) => x.agent === agent);
      state.replaceChildren(renderAgentState(env, a));
      releaseBox.replaceChildren(renderAgentRelease(env, agent, a && a.release));
      relActions.hidden = !(a && a.release);
      const key = JSON.stringify(a && a.release && [a.release.id, a.release.phase]);
      if (key !== lastRelease) {
        lastRelease = key;
        refreshHistory();
      }
    },
  }, ctx.signal);

  return h(
    'section',
    { 'aria-labelledby': 'title' },
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ` / ${env} / ${agent}`),
    h('h1', { id: 'title' }, `${agent} in ${env}`),
    live.el,
    h('div', { class: 'cols' },
      h('section', { class: 'card' }, h('h2', {}, 'Deploy stack'), state, h('h3', {}, 'Routing'), routing),
      h('section', { class: 'card' }, h('h2', {}, 'Release'), releaseBox, relActions),
    ),
    h('section', { class: 'card' }, h('h2', {}, 'Release history'), history),
    h('section', { class: 'card' }, h('h2', {}, 'Readiness'), readiness),
  );
}

function renderAgentState(env, a) {
  if (!a) return h('p', { class: 'muted' }, `No routing state in ${env} yet.`);
  return h(
    'dl',
    { class: 'facts' },
    h('dt', {}, 'Stable'), h('dd', { id: 'stable' }, a.stable || '-'),
    h('dt', {}, 'Previous'), h('dd', { id: 'previous' }, a.previous || '-'),
    h('dt', {}, 'Stack'), h('dd', {}, a.stack.length ? a.stack.slice().reverse().join(' ← ') : '-'),
    h('dt', {}, 'Kill'), h('dd', { id: 'kill' }, killText(a.kill)),
  );
}

function renderAgentRelease(env, agent, r) {
  if (!r) return h('p', { class: 'muted', id: 'no-release' }, 'No active release.');
  return h(
    'div',
    {},
    h('p', {}, h('a', { href: `#/env/${enc(env)}/agent/${enc(agent)}/release` }, `${r.id}`), ` ${r.baseline} → ${r.candidate} `, badge(r.phase), ` step ${r.step_index + 1}/${r.steps} · ${r.weight}`),
    gateBars(r.gate),
    verdictCell(r.verdicts),
  );
}

function renderHistory(list) {
  if (!list.length) return h('p', { class: 'muted' }, 'No releases yet.');
  return h(
    'div',
    { class: 'scroll' },
    h(
      'table',
      { class: 'grid-table' },
      h('thead', {}, h('tr', {}, ['Release', 'From', 'To', 'Phase', 'Started', 'By'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, list.map((r) => h('tr', {}, h('td', {}, r.id), h('td', {}, r.baseline.id), h('td', {}, r.candidate.id), h('td', {}, badge(r.phase)), h('td', {}, time(r.created_ms)), h('td', {}, r.started_by)))),
    ),
  );
}

function readinessForm(env, agent) {
  const out = h('div', { class: 'readiness-out', 'aria-live': 'polite' });
  const input = h('input', { id: 'readiness-bundle', name: 'bundle', type: 'number', min: 1, step: 1, required: true, inputmode: 'numeric' });
  const form = h(
    'form',
    {
      class: 'inline-form',
      onsubmit: async (ev) => {
        ev.preventDefault();
        out.replaceChildren(h('p', {}, 'Checking…'));
        try {
          const r = await api('POST', `${agentPath(env, agent)}/readiness/check`, { bundle: Number(input.value) });
          out.replaceChildren(renderReadiness(r));
        } catch (e) {
          out.replaceChildren(h('p', { class: 'msg error' }, errorText(e)));
        }
      },
    },
    h('label', { for: 'readiness-bundle' }, `Candidate bundle number (${agent}@N)`),
    input,
    h('button', { type: 'submit' }, 'Check readiness'),
  );
  return h('div', {}, form, out);
}

function renderReadiness(r) {
  return h(
    'div',
    {},
    h('p', { class: 'verdict' }, badge(r.ready ? 'ready' : 'not ready', r.ready ? 'pass' : 'fail'), ` ${r.bundle}: ${r.verdict}`),
    r.blocked_by.length ? h('ul', {}, r.blocked_by.map((b) => h('li', {}, b))) : null,
    h(
      'div',
      { class: 'scroll' },
      h(
        'table',
        { class: 'grid-table' },
        h('thead', {}, h('tr', {}, ['Item', 'Level', 'Status', 'Owner', 'Next action'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, r.items.map((i) => h('tr', {}, h('td', {}, i.title || i.key), h('td', {}, i.level), h('td', {}, badge(i.status)), h('td', {}, i.owner || '-'), h('td', {}, i.next_action || '-')))),
      ),
    ),
  );
}

// ---- Live release page ----

export function releasePage(ctx, env, agent) {
  const live = liveLine('Connecting…');
  const head = h('div', { class: 'release-head' });
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'Canary weight over time');
  svg.setAttribute('class', 'chart');
  const gate = h('div', { class: 'gate-box' });
  const guardrails = h('div', { class: 'guardrails' });
  const timeline = h('ol', { class: 'timeline' });
  const actions = releaseActions(env, agent);
  actions.classList.add('reserve');
  actions.hidden = true;
  follow(`${agentPath(env, agent)}/release/stream`, {
    onOpen: live.open,
    onError: live.error,
    onEvent: (name, v) => {
      if (name !== 'release') return;
      live.updated();
      const r = v.release;
      head.replaceChildren(
        ...[h('p', { class: 'release-line' }, h('strong', {}, r.id), ` ${r.baseline.id} → ${r.candidate.id} `, h('span', { id: 'phase' }, badge(r.phase)), ' ', h('span', { id: 'step' }, `step ${r.step + 1}/${r.plan.steps.length}`), ' · ', h('span', { id: 'weight' }, v.weight)),
        r.failure ? h('p', { class: 'msg error', id: 'failure', title: r.failure.explanation || '' }, r.failure.explanation || r.failure.guardrail) : null,
        v.needs_attention ? h('p', { class: 'msg error' }, v.needs_attention) : null].filter(Boolean),
      );
      actions.hidden = !ACTIVE.includes(r.phase);
      drawWeight(svg, weightPoints(r, Date.now()));
      gate.replaceChildren(gateBars(v.gate));
      guardrails.replaceChildren(renderGuardrails(v.verdicts, v.canary_requests));
      timeline.replaceChildren(...(r.history || []).slice().reverse().map((t) => h('li', {}, h('time', {}, time(t.at_ms)), ` ${t.from} → ${t.to} (step ${t.step + 1}) `, h('strong', {}, t.event), ` by ${t.actor}`, t.reason ? ` — ${t.reason}` : '')));
    },
  }, ctx.signal);
  return h(
    'section',
    { 'aria-labelledby': 'title' },
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ' / ', h('a', { href: `#/env/${enc(env)}/agent/${enc(agent)}` }, `${agent} in ${env}`), ' / release'),
    h('h1', { id: 'title' }, `Release of ${agent} in ${env}`),
    live.el,
    head,
    h('div', { class: 'cols' },
      h('section', { class: 'card' }, h('h2', {}, 'Weight over time'), h('div', { class: 'chart-box' }, svg)),
      h('section', { class: 'card' }, h('h2', {}, 'Gate'), gate, actions),
    ),
    h('section', { class: 'card' }, h('h2', {}, 'Guardrails'), guardrails),
    h('section', { class: 'card' }, h('h2', {}, 'Timeline'), timeline),
  );
}

function renderGuardrails(verdicts, requests) {
  if (!verdicts || !verdicts.length) return h('p', { class: 'muted' }, `No verdicts yet (${requests} canary requests).`);
  return h(
    'div',
    { class: 'scroll' },
    h(
      'table',
      { class: 'grid-table guardrail-table' },
      h('thead', {}, h('tr', {}, ['Guardrail', 'Verdict', 'Canary (n)', 'Control (n)', 'Threshold', 'Evidence'].map((c) => h('th', { scope: 'col' }, c)))),
      h(
        'tbody',
        {},
        verdicts.map((v) => {
          const ratio = v.statistic_threshold > 0 ? Math.min(1, Math.log1p(Math.max(0, v.statistic)) / Math.log1p(v.statistic_threshold)) : 0;
          return h(
            'tr',
            { 'data-guardrail': v.guardrail },
            h('th', { scope: 'row' }, v.guardrail, v.shadow ? ' (shadow)' : ''),
            h('td', {}, badge(v.status)),
            h('td', { class: 'num' }, `${num(v.canary.value)} (${v.canary.n})`),
            h('td', { class: 'num' }, `${num(v.control.value)} (${v.control.n})`),
            h('td', {}, v.threshold),
            h('td', {}, h('progress', { max: 100, value: Math.round(ratio * 100), 'aria-label': `${v.guardrail} evidence against the bound` }), h('span', { class: 'small' }, ` e=${num(v.statistic)} / ${num(v.statistic_threshold)}`)),
          );
        }),
      ),
    ),
  );
}

// ---- Fleet ----

export function fleetPage(ctx, env) {
  const live = liveLine('Loading…');
  const body = h('div', { class: 'fleet' });
  const load = async () => {
    try {
      const r = await api('GET', `/v1/envs/${enc(env)}/sdks`);
      body.replaceChildren(...renderFleet(r));
      live.updated();
    } catch (e) {
      live.error(e);
    }
  };
  load();
  const timer = setInterval(load, 3000);
  ctx.signal.addEventListener('abort', () => clearInterval(timer));
  return h(
    'section',
    { 'aria-labelledby': 'title' },
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ` / ${env} / fleet`),
    h('h1', { id: 'title' }, `SDK fleet in ${env}`),
    live.el,
    h('section', { class: 'card' }, body),
  );
}

function renderFleet(r) {
  const optional = ['region', 'pool', 'wave', 'bundle'].filter((k) => r.instances.some((i) => i[k] !== undefined && i[k] !== null));
  const cols = ['Instance', 'Connected', 'Applied', 'Lag', 'Last seen', 'Replica', ...optional.map((k) => k[0].toUpperCase() + k.slice(1))];
  return [
    h('p', {}, `Current snapshot v${r.version}; ${r.instances.filter((i) => i.connected).length} of ${r.instances.length} instances connected.`),
    r.instances.length
      ? h(
          'div',
          { class: 'scroll' },
          h(
            'table',
            { class: 'grid-table' },
            h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
            h(
              'tbody',
              {},
              r.instances.map((i) =>
                h(
                  'tr',
                  {},
                  h('th', { scope: 'row' }, i.instance),
                  h('td', {}, i.connected ? 'yes' : 'no'),
                  h('td', { class: 'num' }, i.applied_version ? `v${i.applied_version}` : '-'),
                  h('td', { class: 'num' }, String(Math.max(0, r.version - (i.applied_version || 0)))),
                  h('td', {}, time(i.last_seen_ms)),
                  h('td', {}, i.replica || 'this server'),
                  optional.map((k) => h('td', {}, i[k] === undefined || i[k] === null ? '-' : String(i[k]))),
                ),
              ),
            ),
          ),
        )
      : h('p', { class: 'muted' }, 'No SDK instance has followed this env in the last 10 minutes.'),
  ];
}

// ---- Audit ----

export function auditPage(ctx) {
  const verify = h('p', { class: 'verify', role: 'status', 'aria-live': 'polite' }, 'Verifying the chain…');
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  (async () => {
    try {
      const v = await api('GET', '/v1/audit/verify');
      verify.replaceChildren(
        v.ok ? badge('intact', 'pass') : badge('broken', 'fail'),
        v.ok ? ` Audit chain intact: ${v.entries} entries verified.` : ` Chain broken at entry ${v.first_broken}: ${v.reason}`,
      );
    } catch (e) {
      verify.textContent = errorText(e);
    }
    try {
      const list = await api('GET', '/v1/audit?limit=200');
      body.replaceChildren(
        h(
          'div',
          { class: 'scroll' },
          h(
            'table',
            { class: 'grid-table audit-table' },
            h('thead', {}, h('tr', {}, ['#', 'At', 'Actor', 'Action', 'Subject', 'Details'].map((c) => h('th', { scope: 'col' }, c)))),
            h('tbody', {}, list.map((e) => h('tr', {}, h('td', { class: 'num' }, String(e.id)), h('td', {}, e.at.replace('T', ' ').slice(0, 19)), h('td', {}, e.actor), h('td', {}, e.action), h('td', {}, e.subject), h('td', { class: 'details' }, JSON.stringify(e.details))))),
          ),
        ),
      );
    } catch (e) {
      body.replaceChildren(h('p', { class: 'msg error' }, errorText(e)));
    }
  })();
  return h('section', { 'aria-labelledby': 'title' }, h('h1', { id: 'title' }, 'Audit log'), verify, h('section', { class: 'card' }, body));
}
