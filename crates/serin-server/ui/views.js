// The pages. Everything is built with DOM calls (never innerHTML), so server text is
// always text. Each page returns its root element and registers its own cleanup.

import { api, follow } from './api.js';
import { drawWeight, stages, weightPoints } from './chart.js';

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
export function confirmAction(title, text, withTenant, okLabel) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-ok').textContent = okLabel || 'Confirm';
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

/**
 * Where a release is: `step 2/3`, and for a waved release the step among every wave's
 * steps with the wave it belongs to, `step 3/6 (wave eu)`.
 */
function stepText(r) {
  const all = stages(r.plan);
  const s = all[r.step];
  const wave = s && s.wave !== null && r.waves && r.waves[s.wave];
  return `step ${r.step + 1}/${all.length}${wave ? ` (wave ${wave.name})` : ''}`;
}

function releaseText(v) {
  const r = v.release;
  return `${r.id}: ${r.phase} at ${stepText(r)} (${v.weight})`;
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

/** How strong a verdict's evidence is against its bar, 0..1 (log scale, as e-values grow). */
function evidenceRatio(v) {
  return v.statistic_threshold > 0 ? Math.min(1, Math.log1p(Math.max(0, v.statistic)) / Math.log1p(v.statistic_threshold)) : 0;
}

/** A verdict's evidence: a bar against the bound and the e-value over its bar. */
function evidence(v) {
  return [
    h('progress', { max: 100, value: Math.round(evidenceRatio(v) * 100), 'aria-label': `${v.guardrail} evidence against the bound` }),
    h('span', { class: 'small' }, ` e=${num(v.statistic)} / ${num(v.statistic_threshold)}`),
  ];
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
  // Only a waved release has this card; it appears with the first view and keeps its size
  // (one row per wave, rows of fixed height) while the release runs.
  const waves = h('div', { class: 'waves-box' });
  const wavesCard = h(
    'section',
    { class: 'card', 'aria-labelledby': 'waves-title', hidden: true },
    h('h2', { id: 'waves-title' }, 'Waves'),
    waves,
    h('p', { class: 'small' }, h('a', { href: `#/env/${enc(env)}/fleet/${enc(agent)}` }, 'What each SDK instance serves'), ' (fleet)'),
  );
  const chartTitle = h('h2', {}, 'Weight over time');
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
        ...[h('p', { class: 'release-line' }, h('strong', {}, r.id), ` ${r.baseline.id} → ${r.candidate.id} `, h('span', { id: 'phase' }, badge(r.phase)), ' ', h('span', { id: 'step' }, stepText(r)), ' · ', h('span', { id: 'weight' }, v.weight)),
        r.failure ? h('p', { class: 'msg error', id: 'failure', title: r.failure.explanation || '' }, r.failure.explanation || r.failure.guardrail) : null,
        v.needs_attention ? h('p', { class: 'msg error' }, v.needs_attention) : null].filter(Boolean),
      );
      actions.hidden = !ACTIVE.includes(r.phase);
      const waved = Boolean(r.waves && r.waves.length);
      wavesCard.hidden = !waved;
      if (waved) waves.replaceChildren(renderWaves(v));
      chartTitle.textContent = waved ? 'Weight of the current wave over time' : 'Weight over time';
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
    wavesCard,
    h('div', { class: 'cols' },
      h('section', { class: 'card' }, chartTitle, h('div', { class: 'chart-box' }, svg)),
      h('section', { class: 'card' }, h('h2', {}, 'Gate'), gate, actions),
    ),
    h('section', { class: 'card' }, h('h2', {}, 'Guardrails'), guardrails),
    h('section', { class: 'card' }, h('h2', {}, 'Timeline'), timeline),
  );
}

/** What a wave in `state` routes to the candidate, as the server's snapshot does: nothing
 * before it opens and after a drain or skip, everything once done, the current step's
 * weight (`weight`, the release view's) while active or halted. */
function waveWeight(state, weight) {
  if (state === 'done') return '100%';
  if (state === 'active' || state === 'halted') return weight;
  return '0%';
}

/** Per verdict: its status and guardrail, then both arms and the evidence. */
function waveVerdicts(verdicts) {
  if (!verdicts || !verdicts.length) return h('p', { class: 'muted small' }, 'No verdicts yet.');
  return h(
    'ul',
    { class: 'wave-verdicts' },
    verdicts.map((v) =>
      h(
        'li',
        { 'data-guardrail': v.guardrail },
        badge(v.status),
        ` ${v.guardrail}${v.shadow ? ' (shadow)' : ''}`,
        h('div', { class: 'small' }, h('span', { class: 'num' }, `canary ${num(v.canary.value)} (${v.canary.n}) vs ${num(v.control.value)} (${v.control.n}) `), ...evidence(v)),
      ),
    ),
  );
}

function failureText(f) {
  return f.explanation || `${f.guardrail}: canary ${num(f.canary_value)} vs control ${num(f.control_value)} (${f.threshold})`;
}

/**
 * The waves of a waved release, in the order they open: state, weight routed now, the
 * wave's own canary requests and verdicts (what gates it), and what failed it. The wave the
 * current step belongs to is marked while it runs.
 */
function renderWaves(v) {
  const r = v.release;
  const all = stages(r.plan);
  const at = ACTIVE.includes(r.phase) && all[r.step] ? all[r.step].wave : null;
  // The wave the current step belongs to, while it still runs (or is frozen there).
  const current = at !== null && r.waves[at] && ['active', 'halted'].includes(r.waves[at].state) ? at : null;
  const defs = r.plan.waves || { list: [] };
  const members = (i) => {
    const k = defs.one_box ? i - 1 : i;
    if (k < 0) return `instance ${defs.one_box.instance}`;
    const spec = defs.list[k];
    return spec ? `${defs.by} ${spec.members.join(', ')}` : '';
  };
  const evidenceOf = new Map((v.waves || []).map((e) => [e.wave, e]));
  return h(
    'div',
    { class: 'scroll' },
    h(
      'table',
      { class: 'grid-table waves-table' },
      h('caption', { class: 'muted small' }, `${r.waves.filter((w) => w.state === 'done').length} of ${r.waves.length} waves done`),
      h('thead', {}, h('tr', {}, ['Wave', 'State', 'Weight', 'Canary requests', 'Verdicts', 'Failure'].map((c) => h('th', { scope: 'col' }, c)))),
      h(
        'tbody',
        {},
        r.waves.map((w, i) => {
          const e = evidenceOf.get(w.name);
          const isCurrent = i === current;
          // Every cell's content sits in a box of one fixed height (see app.css).
          const cell = (cls, ...content) => h('div', { class: `wave-cell ${cls}` }, ...content);
          return h(
            'tr',
            { 'data-wave': w.name, 'data-state': w.state, class: isCurrent ? 'current' : null, 'aria-current': isCurrent ? 'step' : null },
            h('th', { scope: 'row' }, cell('wave-head', h('span', { class: 'wave-name' }, w.name), isCurrent ? h('span', { class: 'current-mark' }, ' current') : null, h('div', { class: 'muted small members', title: members(i) }, members(i)))),
            h('td', {}, cell('wave-state', badge(w.state), h('div', { class: 'muted small' }, w.opened_ms ? `opened ${time(w.opened_ms).slice(11)}` : ''), h('div', { class: 'muted small' }, w.finished_ms ? `ended ${time(w.finished_ms).slice(11)}` : ''))),
            h('td', { class: 'num' }, cell('wave-weight', waveWeight(w.state, v.weight))),
            h('td', { class: 'num' }, cell('wave-requests', e ? `${e.canary_requests} of ${e.requests}` : '0')),
            // Focusable, so a keyboard can scroll a long list of verdicts.
            h('td', {}, h('div', { class: 'wave-cell wave-verdicts-box', tabindex: 0, title: `Verdicts of wave ${w.name}` }, waveVerdicts(e && e.verdicts))),
            h('td', {}, cell('wave-failure', w.failure ? h('p', { class: 'msg error', title: failureText(w.failure) }, failureText(w.failure)) : '-')),
          );
        }),
      ),
    ),
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
          return h(
            'tr',
            { 'data-guardrail': v.guardrail },
            h('th', { scope: 'row' }, v.guardrail, v.shadow ? ' (shadow)' : ''),
            h('td', {}, badge(v.status)),
            h('td', { class: 'num' }, `${num(v.canary.value)} (${v.canary.n})`),
            h('td', { class: 'num' }, `${num(v.control.value)} (${v.control.n})`),
            h('td', {}, v.threshold),
            h('td', {}, ...evidence(v)),
          );
        }),
      ),
    ),
  );
}

// ---- Fleet ----

/**
 * The SDK fleet of an env. With an agent chosen (`#/env/E/fleet/AGENT`), what each instance
 * serves of it under the version it applied: its wave, the bundles, its region and pool.
 */
export function fleetPage(ctx, env, agent) {
  const live = liveLine('Loading…');
  const body = h('div', { class: 'fleet' });
  const select = h('select', {
    id: 'fleet-agent',
    name: 'agent',
    onchange: () => {
      location.hash = `#/env/${enc(env)}/fleet${select.value ? `/${enc(select.value)}` : ''}`;
    },
  }, h('option', { value: '' }, 'All instances (no agent)'));
  if (agent) select.append(h('option', { value: agent }, agent));
  select.value = agent || '';
  // The agents routed in the env, from the overview; the one in the address stays listed
  // even when the server does not know it (its refusal is shown below).
  (async () => {
    try {
      const o = await api('GET', '/v1/status');
      const e = o.envs.find((x) => x.env === env);
      const names = (e ? e.agents.map((a) => a.agent) : []).filter((n) => n !== agent).sort();
      select.append(...names.map((n) => h('option', { value: n }, n)));
      select.value = agent || '';
    } catch (_) {
      // The fleet itself still loads; its own errors are shown by the live line.
    }
  })();
  const path = `/v1/envs/${enc(env)}/sdks${agent ? `?agent=${enc(agent)}` : ''}`;
  const load = async () => {
    try {
      const r = await api('GET', path);
      body.replaceChildren(...renderFleet(r, agent));
      live.updated();
    } catch (e) {
      live.error(e);
      if (e.status === 404) body.replaceChildren(h('p', { class: 'msg error', id: 'fleet-error' }, errorText(e)));
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
    h('div', { class: 'fleet-pick' }, h('label', { for: 'fleet-agent' }, 'What each instance serves of'), select),
    h('section', { class: 'card' }, body),
  );
}

function renderFleet(r, agent) {
  const serving = new Map((r.serving || []).map((s) => [s.instance, s]));
  const lag = (i) => (i.applied_version ? `v${i.applied_version} (lag ${Math.max(0, r.version - i.applied_version)})` : 'not reported');
  const opt = (v) => (v === undefined || v === null ? '-' : String(v));
  let cols;
  let row;
  if (agent) {
    cols = ['Instance', `Serves (${agent})`, 'Wave', 'Version / lag', 'Region', 'Pool', 'Connected', 'Last seen'];
    row = (i) => {
      const s = serving.get(i.instance) || {};
      return [
        h('td', { class: s.killed ? 'serves killed' : 'serves' }, opt(s.serves)),
        h('td', { class: 'wave' }, opt(s.wave)),
        h('td', { class: 'num' }, lag(i)),
        h('td', {}, opt(i.region)),
        h('td', {}, opt(i.pool)),
        h('td', {}, i.connected ? 'yes' : 'no'),
        h('td', {}, time(i.last_seen_ms)),
      ];
    };
  } else {
    const optional = ['region', 'pool'].filter((k) => r.instances.some((i) => i[k] !== undefined && i[k] !== null));
    cols = ['Instance', 'Connected', 'Applied', 'Lag', 'Last seen', 'Replica', ...optional.map((k) => k[0].toUpperCase() + k.slice(1))];
    row = (i) => [
      h('td', {}, i.connected ? 'yes' : 'no'),
      h('td', { class: 'num' }, i.applied_version ? `v${i.applied_version}` : '-'),
      h('td', { class: 'num' }, String(Math.max(0, r.version - (i.applied_version || 0)))),
      h('td', {}, time(i.last_seen_ms)),
      h('td', {}, i.replica || 'this server'),
      optional.map((k) => h('td', {}, opt(i[k]))),
    ];
  }
  return [
    h('p', {}, `Current snapshot v${r.version}; ${r.instances.filter((i) => i.connected).length} of ${r.instances.length} instances connected.`),
    r.instances.length
      ? h(
          'div',
          { class: 'scroll' },
          h(
            'table',
            { class: 'grid-table fleet-table' },
            h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
            h('tbody', {}, r.instances.map((i) => h('tr', { 'data-instance': i.instance }, h('th', { scope: 'row' }, i.instance), row(i)))),
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

// ---- Approvals ----

const KINDS = {
  release_start: 'Release start',
  promote_full: 'Promote to 100%',
  readiness_override: 'Readiness override',
  unkill: 'Unkill',
  tool_call: 'Agent tool call',
};

/** The pending count beside the nav link; quiet on errors (the pages show them). */
export async function pendingBadge() {
  const el = document.getElementById('nav-approvals-count');
  if (!el) return;
  try {
    const list = await api('GET', '/v1/approvals?status=pending&limit=100');
    const n = list.length;
    el.hidden = n === 0;
    el.replaceChildren(n >= 100 ? '100+' : String(n), h('span', { class: 'sr-only' }, ' pending'));
  } catch (_) {
    el.hidden = true;
  }
}

function subject(r) {
  return r.bundle ? `${r.agent}@${r.bundle}` : r.agent;
}

/** Where a request stands in time: what is left before expiry, or when and by whom it ended. */
function approvalWhen(r, now) {
  if (r.status === 'pending') return `expires in ${duration(Math.max(0, r.expires_at_ms - now))}`;
  if (r.status === 'expired') return `expired ${time(r.expires_at_ms)}`;
  const used = r.used_at_ms ? `; used ${time(r.used_at_ms)}` : '';
  return `${r.status} ${time(r.decided_at_ms)} by ${r.decided_by || '-'}${used}`;
}

/** Capability changes, those needing approval first (and flagged). */
function capabilityList(changes) {
  if (!changes.length) return h('p', { class: 'muted small' }, 'No capability change.');
  const sorted = changes.slice().sort((a, b) => Number(b.needs_approval === true) - Number(a.needs_approval === true));
  return h(
    'ul',
    { class: 'capabilities' },
    sorted.map((c) =>
      h(
        'li',
        { 'data-tool': c.tool, class: c.needs_approval ? 'needs-approval' : null },
        c.needs_approval ? [badge('needs approval', 'fail'), ' '] : null,
        h('strong', {}, c.tool),
        c.kind || c.class ? h('span', { class: 'muted small' }, ` (${[c.kind, c.class].filter(Boolean).join(', ')})`) : null,
        `: ${c.detail}`,
      ),
    ),
  );
}

function readinessSummary(r) {
  if (!r || typeof r !== 'object') return h('p', { class: 'muted small' }, 'No readiness report.');
  return h(
    'div',
    { class: 'readiness-summary' },
    h('p', { class: 'small' }, badge(r.ready ? 'ready' : 'not ready', r.ready ? 'pass' : 'fail'), ' ', r.verdict || ''),
    r.blocked_by && r.blocked_by.length ? h('ul', { class: 'small' }, r.blocked_by.map((b) => h('li', {}, b))) : null,
  );
}

function approvalDetails(r) {
  const d = r.details && typeof r.details === 'object' ? r.details : {};
  if (r.kind === 'tool_call') {
    return h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'Tool'), h('dd', {}, d.tool || '-'),
      h('dt', {}, 'Args digest'), h('dd', { class: 'details' }, d.args_digest || '-'),
      h('dt', {}, 'Request id'), h('dd', { class: 'details' }, d.request_id || '-'),
    );
  }
  if (r.kind === 'unkill') {
    return h('dl', { class: 'facts' }, h('dt', {}, 'Lifts'), h('dd', {}, d.tenant ? `the kill of tenant ${d.tenant}` : 'the whole-agent kill'));
  }
  const out = [];
  if (Array.isArray(d.capabilities)) out.push(h('h3', {}, 'Capability changes'), capabilityList(d.capabilities));
  if ('readiness' in d) out.push(h('h3', {}, 'Readiness'), readinessSummary(d.readiness));
  const rest = Object.fromEntries(Object.entries(d).filter(([k]) => !['capabilities', 'readiness'].includes(k)));
  if (Object.keys(rest).length) out.push(h('p', { class: 'details' }, JSON.stringify(rest)));
  return h('div', { class: 'approval-details' }, out);
}

/**
 * The approval queue: pending requests first, each with what it would do and Approve / Deny
 * (a reason required). Polled every 3 s; a card is rebuilt only when its request changes, so
 * a button keeps focus and the answer beside it stays. A request decided on this page stays
 * in view (with its new state) even when the filter is pending.
 */
export function approvalsPage(ctx) {
  const live = liveLine('Loading…');
  const list = h('div', { class: 'approvals' });
  const envSelect = h('select', { id: 'approvals-env', name: 'env' }, h('option', { value: '' }, 'All envs'));
  const statusSelect = h(
    'select',
    { id: 'approvals-status', name: 'status' },
    h('option', { value: 'pending' }, 'Pending'),
    h('option', { value: '' }, 'All'),
  );
  const cards = new Map();
  const decidedHere = new Map();
  let latest = [];

  const decide = (r, verb) =>
    action(
      verb === 'approve' ? 'Approve' : 'Deny',
      `${verb}-${r.id}`,
      async ({ reason }) => {
        const done = await api('POST', `/v1/approvals/${enc(r.id)}/${verb}`, { reason });
        decidedHere.set(done.id, done);
        render(latest);
        pendingBadge();
        return `${done.status}: ${done.decision_reason || reason}`;
      },
      () => confirmAction(
        `${verb === 'approve' ? 'Approve' : 'Deny'} ${KINDS[r.kind] || r.kind} of ${subject(r)} in ${r.env}?`,
        `Asked by ${r.requested_by}: ${r.reason}`,
        false,
        verb === 'approve' ? 'Approve' : 'Deny',
      ),
    );

  const card = (r) => {
    const content = h('div', { class: 'approval-body' });
    const when = h('p', { class: 'approval-when small' });
    const actions = h('div', { class: 'actions', role: 'group', 'aria-label': `Decide ${r.id}` }, decide(r, 'approve'), decide(r, 'deny'));
    // Every card has its own Approve and Deny: each button is described by its card's title.
    for (const b of actions.querySelectorAll('button')) b.setAttribute('aria-describedby', `t-${r.id}`);
    const el = h('article', { class: 'card approval', 'data-id': r.id, 'aria-labelledby': `t-${r.id}` }, content, when, actions);
    return { el, content, when, actions, key: '' };
  };

  const fill = (c, r) => {
    c.el.dataset.status = r.status;
    c.content.replaceChildren(
      h('h2', { id: `t-${r.id}` }, badge(r.status), ` ${KINDS[r.kind] || r.kind}: `, h('span', { class: 'subject' }, subject(r)), ` in ${r.env}`),
      h(
        'dl',
        { class: 'facts' },
        h('dt', {}, 'Asked by'), h('dd', { class: 'requester' }, r.requested_by),
        h('dt', {}, 'Reason'), h('dd', { class: 'reason' }, r.reason),
        h('dt', {}, 'Asked at'), h('dd', {}, time(r.created_at_ms)),
        r.decision_reason ? [h('dt', {}, 'Decision'), h('dd', { class: 'decision' }, r.decision_reason)] : null,
        h('dt', {}, 'Request'), h('dd', { class: 'details' }, r.id),
      ),
      approvalDetails(r),
    );
    // Once decided, the buttons go; an answer shown beside one (or in progress) stays.
    for (const a of c.actions.querySelectorAll('.action')) {
      a.querySelector('button').hidden = r.status !== 'pending';
      a.hidden = r.status !== 'pending' && !a.querySelector('output').textContent;
    }
  };

  const render = (rows) => {
    const byId = new Map(rows.map((r) => [r.id, r]));
    for (const [id, r] of decidedHere) {
      const known = byId.get(id);
      byId.set(id, known && known.status !== 'pending' ? known : r);
    }
    const order = { pending: 0, approved: 1, denied: 1, expired: 1 };
    const all = [...byId.values()].sort((a, b) => (order[a.status] ?? 1) - (order[b.status] ?? 1) || b.created_at_ms - a.created_at_ms);
    const now = Date.now();
    const els = all.map((r) => {
      let c = cards.get(r.id);
      if (!c) {
        c = card(r);
        cards.set(r.id, c);
      }
      const key = JSON.stringify(r);
      if (c.key !== key) {
        fill(c, r);
        c.key = key;
      }
      c.when.textContent = approvalWhen(r, now);
      return c.el;
    });
    for (const id of [...cards.keys()]) if (!byId.has(id)) cards.delete(id);
    if (!els.length) {
      list.replaceChildren(h('p', { class: 'muted empty' }, statusSelect.value === 'pending' ? 'No request waits for a decision.' : 'No approval request.'));
      return;
    }
    // Moved only when the order changed, so a focused button keeps its focus.
    if (els.length !== list.children.length || els.some((e, i) => list.children[i] !== e)) list.replaceChildren(...els);
  };

  const load = async () => {
    const q = new URLSearchParams({ limit: '200' });
    if (envSelect.value) q.set('env', envSelect.value);
    if (statusSelect.value) q.set('status', statusSelect.value);
    try {
      latest = await api('GET', `/v1/approvals?${q}`);
      render(latest);
      live.updated();
    } catch (e) {
      live.error(e);
    }
  };
  const refilter = () => {
    decidedHere.clear();
    load();
  };
  envSelect.addEventListener('change', refilter);
  statusSelect.addEventListener('change', refilter);
  (async () => {
    try {
      const o = await api('GET', '/v1/status');
      envSelect.append(...o.envs.map((e) => h('option', { value: e.env }, e.env)));
    } catch (_) {
      // The queue still loads; its own errors are shown by the live line.
    }
  })();
  load();
  const timer = setInterval(load, 3000);
  ctx.signal.addEventListener('abort', () => clearInterval(timer));
  return h(
    'section',
    { 'aria-labelledby': 'title' },
    h('h1', { id: 'title' }, 'Approvals'),
    live.el,
    h(
      'div',
      { class: 'fleet-pick approvals-filter' },
      h('label', { for: 'approvals-env' }, 'Env'),
      envSelect,
      h('label', { for: 'approvals-status' }, 'Status'),
      statusSelect,
    ),
    list,
  );
}
