// The dashboard's entry: sign-in, sign-out and the hash router. Each page gets an
// AbortSignal that ends its streams and timers when the user navigates away.

import { api, signIn, signOut, token, whenSignedOut } from './api.js';
import { agentPage, approvalsPage, auditPage, fleetPage, overviewPage, pendingBadge, releasePage } from './views.js';

const $ = (id) => document.getElementById(id);
let current = null;
let badgeTimer = null;

function showSignIn(message) {
  if (current) current.abort();
  current = null;
  clearInterval(badgeTimer);
  badgeTimer = null;
  $('view').replaceChildren();
  $('signin').hidden = false;
  $('nav').hidden = true;
  $('signout').hidden = true;
  $('signin-msg').textContent = message || '';
  $('token').value = '';
  $('token').focus();
}

function route() {
  if (!token()) {
    showSignIn($('signin-msg').textContent);
    return;
  }
  $('signin').hidden = true;
  $('nav').hidden = false;
  $('signout').hidden = false;
  if (current) current.abort();
  current = new AbortController();
  const ctx = { signal: current.signal };
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  let page;
  if (parts[0] === 'env' && parts[2] === 'agent' && parts[4] === 'release') {
    page = releasePage(ctx, parts[1], parts[3]);
  } else if (parts[0] === 'env' && parts[2] === 'agent' && parts[3]) {
    page = agentPage(ctx, parts[1], parts[3]);
  } else if (parts[0] === 'env' && parts[2] === 'fleet') {
    page = fleetPage(ctx, parts[1], parts[3] || '');
  } else if (parts[0] === 'audit') {
    page = auditPage(ctx);
  } else if (parts[0] === 'approvals') {
    page = approvalsPage(ctx);
  } else {
    page = overviewPage(ctx);
  }
  $('view').replaceChildren(page);
  for (const a of document.querySelectorAll('#nav a')) {
    a.toggleAttribute('aria-current', a.getAttribute('href') === (location.hash || '#/'));
  }
  $('main').focus({ preventScroll: true });
  // The nav's pending count, on every page: one small list call every 5 s.
  pendingBadge();
  if (!badgeTimer) badgeTimer = setInterval(pendingBadge, 5000);
}

whenSignedOut((message) => showSignIn(message));

$('signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const t = $('token').value.trim();
  if (!t) return;
  signIn(t);
  $('token').value = '';
  try {
    // A token that cannot read comes back at once with the server's reason.
    await api('GET', '/v1/status');
  } catch (e) {
    if (e.status === 401) {
      showSignIn(`Sign-in refused: ${e.message}`);
      return;
    }
    if (e.status === 403) {
      signOut(`This token cannot read the control plane: ${e.message}`);
      return;
    }
  }
  $('signin-msg').textContent = '';
  route();
});

$('signout').addEventListener('click', () => signOut('Signed out.'));
window.addEventListener('hashchange', route);
route();
