// Portico fleet dashboard: five views over the Admin API's JSON bridge (POST /api/v1/<Method>).
// Plain JS, no framework and no build step: portico-cp embeds this file as it is.
// Layout: helpers, API and session, the refresh loop, one object per view (mount wires its
// template once, load fetches, render writes), charts, then routing and boot.
'use strict';

const POLL_MS = 2000;
const PAGE = 100;
// portico_api::usage::LATENCY_BOUNDS_MS, for an answer that leaves latencyBoundsMs out.
const BOUNDS_MS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

// ---- helpers -------------------------------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);
const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ESC[c]);

// Markup is built with html`...`: every value put in is escaped unless it is itself html`...`
// (or a list of them). Node ids, reasons, labels and messages come from agents and users; this
// way none of them can become markup by a forgotten call.
class Html { constructor(s) { this.s = s; } toString() { return this.s; } }
const part = (v) => (v instanceof Html ? v.s : Array.isArray(v) ? v.map(part).join('') : esc(v));
const html = (strs, ...vals) => new Html(strs.reduce((out, s, i) => out + part(vals[i - 1]) + s));

// proto3 JSON leaves default values out and sends 64-bit integers as strings.
const num = (v) => Number(v ?? 0) || 0;
const pct = (r) => (num(r) * 100).toFixed(2) + '%';
const rate = (v) => { const n = num(v); return n >= 100 ? n.toFixed(0) : n.toFixed(1); };
const or = (s, dflt = '-') => s || dflt;
const bad = (r) => (num(r) >= 0.01 ? ' t-bad' : ''); // an error rate worth a red

// "12s", "5m", "3h", "2d" since an RFC 3339 time or a Unix time in ms.
function ago(t) {
  const ms = typeof t === 'number' ? t : Date.parse(t || '');
  if (!ms) return '-';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? s + 's' : s < 3600 ? Math.floor(s / 60) + 'm' : s < 86400 ? Math.floor(s / 3600) + 'h' : Math.floor(s / 86400) + 'd';
}
const pad = (n) => String(n).padStart(2, '0');
const clock = (ms) => { const d = new Date(ms); return `${pad(d.getHours())}:${pad(d.getMinutes())}`; };
// "2026-11-30 14:05" in local time: short, sortable, the same in every locale.
function when(t) {
  const d = new Date(typeof t === 'number' ? t : Date.parse(t || ''));
  return isNaN(d) ? '-' : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(d)}`;
}

// Writes an element's HTML (html`...`, a list of them, or text) only when it changed: a poll
// every 2 s must not reset the user's text selection or an open <select> that did not change.
function setHTML(el, h) {
  const s = part(h);
  if (el && el.__html !== s) {
    el.innerHTML = s;
    el.__html = s;
  }
}
const setText = (el, t) => { if (el && el.textContent !== String(t)) el.textContent = t; };

// A stacked bar as SVG: attributes, not style="", so a strict Content-Security-Policy allows
// it. parts: [[count, class], ...].
function bar(parts) {
  const total = parts.reduce((a, [n]) => a + n, 0) || 1;
  let x = 0;
  const rects = parts.map(([n, cls]) => {
    const w = (n * 100) / total;
    x += w;
    return w > 0 ? html`<rect class="${cls}" x="${(x - w).toFixed(3)}" width="${w.toFixed(3)}" height="1"/>` : '';
  });
  return html`<svg class="bar" viewBox="0 0 100 1" preserveAspectRatio="none">${rects}</svg>`;
}
const empty = (cols, text) => html`<tr><td colspan="${cols}" class="empty">${text}</td></tr>`;

// ---- API and session -----------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body.message || body.code || `HTTP ${status}`);
    this.status = status;
  }
}

// Every call carries X-Portico-Request (the server refuses calls without it, which a form or
// an image on another site cannot add) and the session cookie; never a token.
async function send(url, method, body) {
  let res;
  try {
    res = await fetch(url, {
      method,
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-Portico-Request': '1' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, { message: 'control plane unreachable: ' + e.message });
  }
  const text = await res.text();
  let data;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { message: `HTTP ${res.status}: ${text.slice(0, 200)}` };
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// One Admin call. A 401 anywhere means there is no valid session: ask for a token.
async function api(method, body = {}) {
  try {
    return await send('/api/v1/' + method, 'POST', body);
  } catch (e) {
    if (e.status === 401) showLogin();
    throw e;
  }
}

const app = {
  view: '', // the mounted view's name
  who: null, // WhoAmI's answer
  revision: 0, // the config revision the last successful refresh saw
  refreshes: 0,
  updated: 0, // Date.now() of the last successful refresh
  timer: 0,
  seq: 0, // bumped by every refresh: the answer of an older one is dropped
  locked: false, // the login form is up: no polling
};

function setWho(who) {
  app.who = who;
  setText($('#whoami'), who ? `${who.name || '?'} (${who.role || '?'})` : '');
  $('#logout').hidden = !who?.auth;
}
const canRollback = () => ['operator', 'admin'].includes(String(app.who?.role).toLowerCase());

function loadWho() {
  api('WhoAmI').then((who) => {
    setWho(who);
    if (app.view === 'history') refresh(); // its rollback buttons depend on the role
  }, (e) => { if (e.status !== 401) showError(e); });
}

function showLogin() {
  app.locked = true;
  clearTimeout(app.timer);
  if ($('#login').hidden) {
    $('#login').hidden = false;
    $('#login-token').focus();
  }
}

async function login(ev) {
  ev.preventDefault();
  const input = $('#login-token');
  setText($('#login-error'), '');
  $('#login-submit').disabled = true;
  try {
    setWho(await send('/api/session', 'POST', { token: input.value }));
    input.value = ''; // the HttpOnly cookie is the session now; keep no copy of the token
    $('#login').hidden = true;
    app.locked = false;
    remount(); // the role may differ: render from scratch
  } catch (e) {
    setText($('#login-error'), e.message);
  } finally {
    $('#login-submit').disabled = false;
  }
}

async function logout() {
  try {
    await send('/api/session', 'DELETE');
  } catch (e) {
    showError(e);
  }
  setWho(null);
  $('#view').replaceChildren(); // leave no data behind the login form
  showLogin();
}

const showError = (e) => setText($('#error'), e ? e.message : '');

// ---- refresh loop --------------------------------------------------------------------------

// Loads and renders the active view, then polls it again POLL_MS after the answer, so a slow
// control plane is never asked twice at once. Hidden tabs do not poll.
async function refresh() {
  clearTimeout(app.timer);
  if (app.locked) return;
  const seq = ++app.seq;
  const view = VIEWS[app.view];
  try {
    const asked = performance.now();
    const data = await view.load();
    if (seq !== app.seq) return; // the view changed, or a newer refresh started
    app.revision = num(data.revision);
    const answered = performance.now();
    view.render(data);
    app.refreshes += 1;
    app.updated = Date.now();
    const v = $('#view');
    // How long the calls and the rendering took, for bench/dashboard.
    v.dataset.loadMs = (answered - asked).toFixed(1);
    v.dataset.renderMs = (performance.now() - answered).toFixed(1);
    v.dataset.revision = String(app.revision);
    v.dataset.refreshes = String(app.refreshes);
    setText($('#revision'), app.revision ? 'r' + app.revision : '–');
    showError(null);
    tick();
  } catch (e) {
    // Keep the last good data on screen; say what failed.
    if (seq === app.seq && e.status !== 401) showError(e);
    if (!(e instanceof ApiError)) console.error(e);
  } finally {
    if (seq === app.seq && !app.locked && !document.hidden) app.timer = setTimeout(refresh, POLL_MS);
  }
}

const tick = () => setText($('#updated'), app.updated ? `updated ${ago(app.updated)} ago` : 'not loaded yet');

// Views whose own call does not carry the config revision ask Status for it.
const withRevision = (call) =>
  Promise.all([call, api('Status')]).then(([data, status]) => ({ data, status, revision: status.configRevision }));

// ---- fleet ---------------------------------------------------------------------------------

const STATE_LABEL = { 'in-sync': 'in sync', pending: 'pending', nacked: 'NACKed', ahead: 'ahead', disconnected: 'disconnected' };
const STATE_CLASS = { 'in-sync': 'ok', pending: 'warn', nacked: 'bad', ahead: 'bad', disconnected: 'off' };
const groupParts = (g) => [[num(g.inSync), 'ok'], [num(g.pending), 'warn'], [num(g.nacked), 'bad'], [num(g.disconnected), 'off']];

const fleet = {
  f: { region: '', zone: '', state: '', search: '', offset: 0 },
  // Every region and zone seen so far: the filter selects keep their options while filtered.
  zones: new Map(),

  mount(root) {
    const f = this.f;
    const refilter = () => { f.offset = 0; refresh(); };
    const on = (sel, type, fn) => $(sel, root).addEventListener(type, fn);
    $('#fleet-state', root).value = f.state;
    $('#fleet-search', root).value = f.search;
    on('#fleet-region', 'change', (e) => { f.region = e.target.value; f.zone = ''; refilter(); });
    on('#fleet-zone', 'change', (e) => { f.zone = e.target.value; refilter(); });
    on('#fleet-state', 'change', (e) => { f.state = e.target.value; refilter(); });
    let debounce = 0;
    on('#fleet-search', 'input', (e) => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { f.search = e.target.value.trim(); refilter(); }, 250);
    });
    on('#fleet-prev', 'click', () => { f.offset = Math.max(0, f.offset - PAGE); refresh(); });
    on('#fleet-next', 'click', () => { f.offset += PAGE; refresh(); });
    // A click on a region/zone row filters by it; a second click clears the filter.
    on('#fleet-groups tbody', 'click', (e) => {
      const tr = e.target.closest('tr[data-region]');
      if (!tr) return;
      const same = f.region === tr.dataset.region && f.zone === tr.dataset.zone;
      f.region = same ? '' : tr.dataset.region;
      f.zone = same ? '' : tr.dataset.zone;
      refilter();
    });
  },

  load() {
    const { region, zone, state, search, offset } = this.f;
    return api('Fleet', { region, zone, state, search, pageSize: PAGE, offset })
      .then((r) => ({ ...r, revision: r.configRevision }));
  },

  render(r) {
    const f = this.f;
    const groups = r.groups || [];
    const total = r.total || {};
    const agents = r.agents || [];
    const matching = num(r.matching);

    for (const g of groups) {
      const z = this.zones.get(g.region || '') || new Set();
      this.zones.set(g.region || '', z.add(g.zone || ''));
    }
    const opts = (values, cur, any) => html`<option value="">${any}</option>${[...new Set(values)].sort().map((v) =>
      html`<option value="${v}"${v === cur ? html` selected` : ''}>${or(v)}</option>`)}`;
    const zones = f.region ? [...(this.zones.get(f.region) || [])] : [...this.zones.values()].flatMap((s) => [...s]);
    setHTML($('#fleet-region'), opts([...this.zones.keys()], f.region, 'any region'));
    setHTML($('#fleet-zone'), opts(zones, f.zone, 'any zone'));
    $('#fleet-region').value = f.region;
    $('#fleet-zone').value = f.zone;

    const counts = { agents: total.agents, 'in-sync': total.inSync, pending: total.pending, nacked: total.nacked, disconnected: total.disconnected };
    for (const [k, v] of Object.entries(counts)) setText($(`#fleet-total [data-count="${k}"]`), num(v));
    setHTML($('#fleet-total .fleet-bar'), bar(groupParts(total)));
    setText($('#fleet-total .fleet-traffic'), `${rate(total.requestsPerSecond)} req/s · ${pct(total.errorRate)} errors`);

    setHTML($('#fleet-groups tbody'), groups.length ? groups.map((g) => html`
      <tr data-region="${g.region}" data-zone="${g.zone}"${(g.region || '') === f.region && (g.zone || '') === f.zone ? html` class="selected"` : ''}>
      <td>${or(g.region)}</td><td>${or(g.zone)}</td><td class="num">${num(g.agents)}</td><td class="num">${num(g.inSync)}</td>
      <td class="num${num(g.pending) ? ' t-warn' : ''}">${num(g.pending)}</td><td class="num${num(g.nacked) ? ' t-bad' : ''}">${num(g.nacked)}</td>
      <td class="num">${num(g.disconnected)}</td><td class="barcol">${bar(groupParts(g))}</td>
      <td class="num">${rate(g.requestsPerSecond)}</td><td class="num${bad(g.errorRate)}">${pct(g.errorRate)}</td></tr>`)
      : empty(10, 'no agents'));

    setHTML($('#fleet-agents tbody'), agents.length ? agents.map((a) => html`
      <tr data-node-id="${a.nodeId}" data-state="${a.state}">
      <td class="node" title="${Object.entries(a.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ')}">${a.nodeId}</td>
      <td>${or(a.region)}</td><td>${or(a.zone)}</td>
      <td class="state s-${STATE_CLASS[a.state] || 'off'}">${STATE_LABEL[a.state] || a.state}</td>
      <td class="num version${num(a.version) !== num(a.due) ? ' t-warn' : ''}">${num(a.version)}</td><td class="num due">${num(a.due)}</td>
      <td class="reason" title="${a.reason}">${a.reason}</td><td class="num rps">${rate(a.requestsPerSecond)}</td>
      <td class="num errors${bad(a.errorRate)}">${pct(a.errorRate)}</td><td>${or(a.replica)}</td><td>${or(a.kind, 'portico')}</td>
      <td class="num" title="${a.lastSeen}">${a.lastSeen ? ago(a.lastSeen) + ' ago' : '-'}</td></tr>`)
      : empty(12, 'no agent matches'));

    setText($('#fleet-range'), `${agents.length ? f.offset + 1 : 0}-${f.offset + agents.length} of ${matching}`);
    $('#fleet-prev').disabled = f.offset === 0;
    $('#fleet-next').disabled = f.offset + PAGE >= matching;
    // Agents went away under the current page: go to the last page there is.
    if (!agents.length && f.offset > 0 && matching > 0) {
      f.offset = Math.floor((matching - 1) / PAGE) * PAGE;
      setTimeout(refresh, 0);
    }
  },
};

// ---- rollout -------------------------------------------------------------------------------

// How each canary gate's value and threshold read (see RolloutGate in admin.proto).
const GATE_FMT = {
  ack: (v) => (v * 100).toFixed(0) + '%',
  nack: (v) => String(Math.round(v)),
  error_rate: (v) => (v * 100).toFixed(2) + '%',
  p99_increase: (v) => '×' + v.toFixed(2),
};
const GATE_CLASS = { pass: 'ok', pending: 'warn', fail: 'bad', insufficient: 'off' };
const STAGE_CLASS = { CANARY: 'warn', BAKING: 'warn', PROMOTING: 'warn', DONE: 'ok', ABORTED: 'bad' };
const NACKS_SHOWN = 1000; // enough to see the pattern; `portico rollout status` lists them all

const rollout = {
  mount() {},

  load() {
    return Promise.all([api('RolloutStatus'), api('GetRollout'), api('Status')])
      .then(([st, ro, status]) => ({ st, ro, status, revision: ro.configRevision || status.configRevision }));
  },

  render({ st, ro, status }) {
    const c = { applied: num(st.applied), pending: num(st.pending), nacked: num(st.nacked), disconnected: num(st.disconnected) };
    const connected = c.applied + c.pending + c.nacked;
    // Rounded down: 100 means every connected agent applied it, not "almost all".
    const percent = connected ? Math.floor((c.applied * 100) / connected) : 0;
    setText($('#rollout-revision'), num(st.revision));
    for (const [k, v] of Object.entries(c)) setText($(`#rollout-counts [data-count="${k}"]`), v);
    $('#rollout-progress').dataset.percent = String(percent);
    setHTML($('#rollout-progress'), bar([[c.applied, 'ok'], [c.pending, 'warn'], [c.nacked, 'bad']]));
    setText($('#rollout-percent'), `${percent}% of ${connected} connected agents applied it`);

    const nacks = st.nacks || [];
    setHTML($('#rollout-nacks'), nacks.length ? html`${nacks.slice(0, NACKS_SHOWN).map((n) =>
      html`<li data-node-id="${n.nodeId}"><b>${n.nodeId}</b> <span class="reason">${n.error}</span></li>`)}${
      nacks.length > NACKS_SHOWN ? html`<li class="empty">and ${nacks.length - NACKS_SHOWN} more</li>` : ''}`
      : html`<li class="empty">no agent rejected this revision</li>`);

    setHTML($('#rollout-canary-box'), ro.rollout ? canary(ro) : '');

    setText($('#replicas-note'), `answered by ${or(status.answeredBy)} · leader ${or(status.leader, 'none')}`);
    setHTML($('#replicas tbody'), (status.replicas || []).map((p) => html`
      <tr data-replica="${p.id}"><td>${p.id}${p.id === status.leader ? html` <span class="badge ok">leader</span>` : ''}</td>
      <td>${p.address}</td><td class="num">${num(p.agents)}</td><td class="num">${num(p.configRevision)}</td>
      <td>${p.storeReachable ? html`<span class="s-ok">ok</span> ${num(p.storeLatencyMs)} ms` : html`<span class="s-bad">unreachable</span>`}</td>
      <td>${p.version}</td><td class="num" title="${p.heartbeat}">${ago(p.heartbeat)} ago</td></tr>`));
  },
};

// The canary rollout panel: the active rollout, or the last one.
function canary(ro) {
  const r = ro.rollout;
  const stage = r.stage || 'ROLLOUT_STAGE_UNSPECIFIED';
  const sel = r.selector || {};
  const left = num(ro.secondsLeft);
  const kv = [
    ['selector', sel.text || (num(sel.percent) ? sel.percent + '%' : '-')],
    ['canary agents', `${num(ro.canaryApplied)} of ${num(ro.canaryAgents)} applied`],
    ['other agents', `${num(ro.otherAgents)} keep r${num(r.previous)}`],
    ['in stage', `${ago(r.stageSince)}${left ? ` · ${left >= 60 ? Math.floor(left / 60) + 'm ' : ''}${left % 60}s left` : ''}`],
    ['bake', or(r.bake) + (r.manual ? ' (manual promotion)' : '')],
    ['routes', (r.routes || []).join(', ') || 'every route'],
    ['started', `${when(r.started)} by ${or(r.author)}`],
  ];
  if (num(r.endedRevision)) kv.push(['ended by', 'r' + num(r.endedRevision)]);
  const gates = (r.gates || []).map((g) => {
    const fmt = GATE_FMT[g.name] || ((v) => String(+v.toFixed(4)));
    return html`<tr data-gate="${g.name}"><td>${g.name}</td><td class="num">${fmt(num(g.value))}</td>
      <td class="num">${fmt(num(g.threshold))}</td><td class="s-${GATE_CLASS[g.state] || 'off'}">${or(g.state)}</td>
      <td class="muted">${g.detail}</td></tr>`;
  });
  return html`<section id="rollout-canary" class="panel" data-stage="${stage}">
    <h2>Canary rollout r${num(r.revision)} <span class="badge ${STAGE_CLASS[stage] || 'off'}">${stage}</span></h2>
    <div class="canary-grid"><dl class="kv">${kv.map(([k, v]) => html`<dt>${k}</dt><dd>${v}</dd>`)}</dl><div>
    ${r.reason ? html`<p class="t-bad"><b>reason:</b> ${r.reason}</p>` : ''}
    <table id="rollout-gates" class="grid"><thead><tr><th>gate</th><th class="num">value</th><th class="num">threshold</th>
    <th>state</th><th>detail</th></tr></thead><tbody>${gates.length ? gates : empty(5, 'no gate judged yet')}</tbody></table>
    ${(r.warnings || []).length ? html`<ul class="warnings">${r.warnings.map((w) => html`<li>${w}</li>`)}</ul>` : ''}
    </div></div></section>`;
}

// ---- history -------------------------------------------------------------------------------

const history = {
  before: 0, // HistoryRequest.beforeRevision of the page shown (0: the newest)
  newer: [], // the pages before it, for "newer"
  next: 0, // nextBeforeRevision of the page shown
  selected: 0, // the revision whose diff is shown
  target: 0, // the revision the rollback form is for

  mount(root) {
    $('#history-entries tbody', root).addEventListener('click', (e) => {
      const btn = e.target.closest('button.rollback');
      const tr = e.target.closest('tr[data-revision]');
      if (btn) this.confirm(num(btn.dataset.revision));
      else if (tr) this.show(num(tr.dataset.revision));
    });
    $('#history-older', root).addEventListener('click', () => {
      if (!this.next) return;
      this.newer.push(this.before);
      this.before = this.next;
      refresh();
    });
    $('#history-newer', root).addEventListener('click', () => {
      if (!this.newer.length) return;
      this.before = this.newer.pop();
      refresh();
    });
    $('#rollback-confirm', root).addEventListener('submit', (e) => { e.preventDefault(); this.rollback(); });
    $('#rollback-cancel', root).addEventListener('click', () => { $('#rollback-confirm').hidden = true; });
    if (this.selected) this.show(this.selected);
  },

  load() {
    return withRevision(api('History', this.before ? { limit: 50, beforeRevision: this.before } : { limit: 50 }));
  },

  render({ data: h, revision }) {
    this.next = num(h.nextBeforeRevision);
    $('#history-older').disabled = !this.next;
    $('#history-newer').disabled = !this.newer.length;
    const current = num(revision);
    const can = canRollback();
    const entries = h.entries || [];
    setHTML($('#history-entries tbody'), entries.length ? entries.map((e) => {
      const rev = num(e.revision);
      const marks = [
        rev === current && html`<span class="badge ok">current</span>`,
        num(e.rollbackOf) && html`<span class="badge">rollback of r${num(e.rollbackOf)}</span>`,
        e.canary && html`<span class="badge warn cut" title="canary: ${e.canary}">canary ${e.canary}</span>`,
        e.aborted && html`<span class="badge bad">aborted</span>`,
        num(e.promotionOf) && html`<span class="badge ok">promotion of r${num(e.promotionOf)}</span>`,
        e.pruned && html`<span class="badge off">pruned</span>`,
      ].filter(Boolean).map((m) => html`${m} `);
      return html`<tr data-revision="${rev}"${rev === this.selected ? html` class="selected"` : ''}>
        <td class="num">${rev}</td><td title="${e.time}">${when(e.time)}</td><td>${e.author}</td>
        <td class="msg" title="${e.message}">${e.message}</td>
        <td class="num"><span class="t-ok">+${num(e.created)}</span> <span class="t-warn">~${num(e.updated)}</span> <span class="t-bad">−${num(e.deleted)}</span></td>
        <td class="marks">${marks}</td>
        <td>${can && !e.pruned && rev !== current ? html`<button type="button" class="rollback" data-revision="${rev}" title="restore the config of r${rev}">roll back</button>` : ''}</td></tr>`;
    }) : empty(7, 'no history'));
  },

  // Shows one change's diff, loaded once: a past change does not change.
  async show(rev) {
    this.selected = rev;
    for (const tr of document.querySelectorAll('#history-entries tr[data-revision]')) {
      tr.classList.toggle('selected', num(tr.dataset.revision) === rev);
    }
    const box = $('#history-diff');
    box.hidden = false;
    $('#history-hint').hidden = true;
    box.dataset.revision = String(rev);
    setText($('.diff-title', box), `Revision ${rev}`);
    setHTML($('pre', box), html`<span class="muted">loading…</span>`);
    try {
      const c = await api('GetChange', { revision: rev });
      if (this.selected !== rev || !box.isConnected) return;
      const e = c.entry || {};
      setText($('.diff-title', box), `Revision ${rev}: ${e.message || '(no message)'} — ${e.author || '?'}`);
      setHTML($('pre', box), diffHTML(c.diff || ''));
    } catch (err) {
      if (this.selected !== rev || !box.isConnected) return;
      setHTML($('pre', box), html`<span class="t-bad">${err.message}</span>`);
      showError(err);
    }
  },

  confirm(rev) {
    this.target = rev;
    setText($('#rollback-target'), 'r' + rev);
    setText($('#rollback-result'), '');
    $('#rollback-confirm').hidden = false;
    $('#rollback-message').value = `roll back to r${rev}`;
    $('#rollback-message').focus();
  },

  async rollback() {
    const out = $('#rollback-result');
    $('#rollback-go').disabled = true;
    try {
      // expectedRevision: the server refuses (409) when the config changed since this page saw it.
      const r = await api('Rollback', { revision: this.target, message: $('#rollback-message').value, expectedRevision: app.revision });
      out.className = 'panel t-ok';
      setText(out, `Rolled back to the config of r${this.target}: new revision r${num(r.revision)} (${(r.changes || []).length} resources changed).`);
      $('#rollback-confirm').hidden = true;
      refresh();
    } catch (e) {
      out.className = 'panel t-bad';
      setText(out, `Rollback refused: ${e.message}`);
    } finally {
      $('#rollback-go').disabled = false;
    }
  },
};

// A unified diff with added lines green and removed ones red. Each line keeps its newline
// inside its span (a block, for the background), so copying the text gives the diff back.
function diffHTML(diff) {
  if (!diff) return html`<span class="muted">(no textual change)</span>`;
  const MAX = 20000; // a huge change would freeze the page; `portico history` shows it whole
  const lines = diff.replace(/\n$/, '').split('\n');
  const cls = (l) => (/^(\+\+\+|---) /.test(l) ? 'd-file' : l[0] === '+' ? 'd-add' : l[0] === '-' ? 'd-del' : l.startsWith('@@') ? 'd-hunk' : '');
  return html`${lines.slice(0, MAX).map((l) => (cls(l) ? html`<span class="${cls(l)}">${l}\n</span>` : l + '\n'))}${
    lines.length > MAX ? html`<span class="muted">… ${lines.length - MAX} more lines</span>` : ''}`;
}

// ---- traffic -------------------------------------------------------------------------------

// The time range choices: UsageRequest since and step.
const RANGES = { '15m': [900, 60], '1h': [3600, 60], '6h': [21600, 300], '24h': [86400, 900] };

// Usage rows summed by a key (rows whose key is null are skipped): requests, 5xx requests and
// latency buckets. The error rate is the 5xx rows' requests over every row's.
function sumRows(rows, keyOf, into = new Map()) {
  for (const row of rows) {
    const k = keyOf(row);
    if (k === null) continue;
    if (!into.has(k)) into.set(k, { key: k, requests: 0, errors: 0, latency: [] });
    const s = into.get(k);
    const n = num(row.stats?.requests);
    s.requests += n;
    if (row.statusClass === '5xx') s.errors += n;
    (row.stats?.latency || []).forEach((c, i) => { s.latency[i] = (s.latency[i] || 0) + num(c); });
  }
  return into;
}

// The latency bucket holding quantile q, as portico_api::usage::quantile_ms picks it: -1
// without requests, bounds.length for the last, unbounded bucket.
function bucket(latency, q, bounds) {
  const total = latency.reduce((a, n) => a + (n || 0), 0);
  if (!total) return -1;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let i = 0; i < latency.length; i++) {
    seen += latency[i] || 0;
    if (seen >= rank) return Math.min(i, bounds.length);
  }
  return bounds.length;
}
const bucketText = (i, b) => (i < 0 ? '-' : i < b.length ? `≤ ${b[i]} ms` : `> ${b[b.length - 1]} ms`);
// For the charts: the bucket's upper bound (the last bound for the unbounded bucket).
const bucketMs = (i, b) => (i < 0 ? null : b[Math.min(i, b.length - 1)]);

const routeKey = (r) => `${r.listener || ''}/${r.route || ''}`;
const routeText = (k) => { const i = k.indexOf('/'); return `${k.slice(0, i) || '(other)'}/${k.slice(i + 1) || '-'}`; };
const consumerKey = (r) => r.consumer || '-';

const traffic = {
  range: '1h',
  focus: null, // {kind: 'route'|'consumer', key}: the charts show its traffic, or all of it

  mount(root) {
    const sel = $('#traffic-since', root);
    sel.value = this.range;
    sel.addEventListener('change', () => { this.range = sel.value; refresh(); });
    const setFocus = (f) => { this.focus = f; if (this.last) this.render(this.last); };
    const pick = (kind) => (e) => {
      const tr = e.target.closest(`tr[data-${kind}]`);
      if (!tr) return;
      const key = tr.getAttribute(`data-${kind}`);
      setFocus(this.focus?.kind === kind && this.focus.key === key ? null : { kind, key });
    };
    $('#traffic-routes tbody', root).addEventListener('click', pick('route'));
    $('#traffic-consumers tbody', root).addEventListener('click', pick('consumer'));
    $('#traffic-focus', root).addEventListener('click', (e) => { if (e.target.closest('button')) setFocus(null); });
    $('#traffic-charts', root).addEventListener('mousemove', readout);
  },

  load() {
    const [since, step] = RANGES[this.range];
    return withRevision(api('Usage', { since: since + 's', step: step + 's' })).then((d) => ({ ...d, since, step }));
  },

  render(d) {
    this.last = d;
    const { data: u, since, step } = d;
    const f = this.focus;
    const bounds = (u.latencyBoundsMs || []).map(num);
    if (!bounds.length) bounds.push(...BOUNDS_MS);

    const table = (kind, keyOf, text) => {
      const rows = [...sumRows(u.rows || [], keyOf).values()].sort((a, b) => b.requests - a.requests).slice(0, 500);
      return rows.length ? rows.map((s) => html`<tr data-${kind}="${s.key}"${f?.kind === kind && f.key === s.key ? html` class="selected"` : ''}>
        <td>${text(s.key)}</td><td class="num requests">${s.requests}</td>
        <td class="num errors${bad(s.requests && s.errors / s.requests)}">${pct(s.requests ? s.errors / s.requests : 0)}</td>
        <td class="num p50">${bucketText(bucket(s.latency, 0.5, bounds), bounds)}</td>
        <td class="num p99">${bucketText(bucket(s.latency, 0.99, bounds), bounds)}</td></tr>`) : empty(5, 'no traffic');
    };
    setHTML($('#traffic-routes tbody'), table('route', routeKey, routeText));
    setHTML($('#traffic-consumers tbody'), table('consumer', consumerKey, (k) => k));

    const to = num(u.toMs) || Date.now();
    const from = num(u.fromMs) || to - since * 1000;
    setText($('#traffic-window'), `${when(from)} – ${clock(to)}`);
    setHTML($('#traffic-focus'), f ? html`showing ${f.kind} <b>${f.kind === 'route' ? routeText(f.key) : f.key}</b> <button type="button">show all</button>` : 'showing all traffic');

    // One value per step from `from` to `to`; the answer leaves out steps without traffic.
    const stepMs = step * 1000;
    const points = u.series || [];
    let t0 = points.length ? Math.min(from, num(points[0].startMs)) : from;
    t0 -= t0 % stepMs;
    const n = Math.min(2000, Math.max(1, Math.ceil((to - t0) / stepMs)));
    const keyOf = !f ? () => 0 : (r) => ((f.kind === 'route' ? routeKey(r) : consumerKey(r)) === f.key ? 0 : null);
    const steps = Array.from({ length: n }, () => new Map());
    for (const p of points) {
      const i = Math.floor((num(p.startMs) - t0) / stepMs);
      if (i >= 0 && i < n) sumRows(p.rows || [], keyOf, steps[i]);
    }
    const sums = steps.map((m) => m.get(0) || { requests: 0, errors: 0, latency: [] });

    const count = (v) => String(Math.round(v));
    const share = (v) => (v * 100).toFixed(2) + '%';
    const q = (p) => sums.map((s) => bucketMs(bucket(s.latency, p, bounds), bounds));
    const per = step === 60 ? 'minute' : step / 60 + ' minutes';
    // [series, title, values, axis format, hover format, least top of the y axis]
    const charts = [
      ['requests', `Requests per ${per}`, sums.map((s) => s.requests), count, count, 10],
      ['errors', 'Error rate (5xx)', sums.map((s) => (s.requests ? s.errors / s.requests : null)), share, share, 0.01],
      ['p50', 'p50 latency (bucket bound)', q(0.5), (v) => v + ' ms', (v) => `≤ ${v} ms`, 10],
      ['p99', 'p99 latency (bucket bound)', q(0.99), (v) => v + ' ms', (v) => `≤ ${v} ms`, 10],
    ];
    setHTML($('#traffic-charts'), charts.map(([key, title, values, fmt, , min]) =>
      html`<figure><figcaption>${title} <span class="readout"></span></figcaption>${chart(key, values, t0, stepMs, fmt, min)}</figure>`));
    CHARTS.clear();
    for (const [key, , values, , fmt] of charts) CHARTS.set(key, { values, fmt, t0, stepMs });
  },
};

// ---- charts --------------------------------------------------------------------------------

const CW = 560, CH = 130, PL = 52, PR = 8, PT = 8, PB = 18; // the viewBox and its padding
const CHARTS = new Map(); // series -> what the hover readout needs
const xAt = (i, n) => PL + (n <= 1 ? 0 : (i * (CW - PL - PR)) / (n - 1));

// The smallest 1, 2 or 5 times a power of ten at or above v: a round top for the y axis.
function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v);
}

// A line chart as SVG markup: one value per step, null drawn as a gap. Hand-written and small
// on purpose: the page loads nothing from the network.
function chart(series, values, t0, stepMs, fmt, min) {
  const n = values.length;
  const max = niceMax(Math.max(min, ...values.filter((v) => v != null)));
  const y = (v) => (PT + (CH - PT - PB) * (1 - v / max)).toFixed(1);
  let d = '';
  const dots = [];
  values.forEach((v, i) => {
    if (v == null) return;
    const joined = i > 0 && values[i - 1] != null;
    d += `${joined ? 'L' : 'M'}${xAt(i, n).toFixed(1)} ${y(v)}`;
    // A point between two gaps draws no line: show it as a dot.
    if (!joined && values[i + 1] == null) dots.push(html`<circle cx="${xAt(i, n).toFixed(1)}" cy="${y(v)}" r="2"/>`);
  });
  const grid = [0, 0.5, 1].map((k) => html`<line class="grid" x1="${PL}" x2="${CW - PR}" y1="${y(max * k)}" y2="${y(max * k)}"/>
    <text x="${PL - 4}" y="${y(max * k)}" dy="3" text-anchor="end">${fmt(max * k)}</text>`);
  const ticks = [...new Set([0, Math.floor((n - 1) / 2), n - 1])].map((i) =>
    html`<text x="${xAt(i, n).toFixed(1)}" y="${CH - 4}" text-anchor="${i === 0 ? 'start' : i === n - 1 ? 'end' : 'middle'}">${clock(t0 + i * stepMs)}</text>`);
  return html`<svg class="chart" data-series="${series}" viewBox="0 0 ${CW} ${CH}" role="img">${grid}${ticks}
    <path class="line" d="${d}"/>${dots}<line class="cursor" x1="-10" x2="-10" y1="${PT}" y2="${CH - PB}"/></svg>`;
}

// Hovering a chart shows the step under the pointer in its caption.
function readout(e) {
  const svg = e.target.closest('svg.chart');
  const c = svg && CHARTS.get(svg.dataset.series);
  if (!c) return;
  const box = svg.getBoundingClientRect();
  const n = c.values.length;
  const vx = ((e.clientX - box.left) / box.width) * CW;
  const i = Math.max(0, Math.min(n - 1, Math.round(((vx - PL) / (CW - PL - PR)) * (n - 1))));
  const cur = svg.querySelector('.cursor');
  cur.setAttribute('x1', xAt(i, n));
  cur.setAttribute('x2', xAt(i, n));
  const v = c.values[i];
  setText(svg.parentNode.querySelector('.readout'), `${clock(c.t0 + i * c.stepMs)}: ${v == null ? 'no traffic' : c.fmt(v)}`);
}

// ---- health --------------------------------------------------------------------------------

const EP_CLASS = { HEALTHY: 'ok', UNHEALTHY: 'bad', EJECTED: 'warn', DRAINING: 'off' };
const SQUARES = 80; // agents drawn one square each per endpoint; more are counted only

// "node: state reason (until 12:03)": one agent's view of an endpoint.
const sighting = (s) => html`<span class="node">${s.nodeId}</span>: <span class="t-${EP_CLASS[s.state] || 'off'}">${(s.state || '?').toLowerCase()}</span>${
  num(s.ejectedUntilUnixMs) ? ` until ${clock(num(s.ejectedUntilUnixMs))}` : ''}${s.reason ? html` <span class="muted">${s.reason}</span>` : ''}`;

const health = {
  mount() {},

  load() {
    return withRevision(api('Health'));
  },

  render({ data: h }) {
    const clusters = h.clusters || [];
    const inc = h.incompleteAgents || [];
    setText($('#health-note'), inc.length
      ? `${inc.length === 1 ? 'One agent' : inc.length + ' agents'} left endpoints out of their reports (${inc.slice(0, 5).join(', ')}${inc.length > 5 ? ', …' : ''}): endpoints they see healthy may be missing.`
      : `${clusters.length} clusters.`);

    const dis = clusters.flatMap((c) => (c.disagreements || []).map((d) => ({ cluster: c.cluster, ...d })));
    setHTML($('#health-disagreements'), dis.length ? dis.map((d) => {
      const ok = d.healthy || [], notOk = d.unhealthy || [];
      return html`<li data-endpoint="${d.address}" data-cluster="${d.cluster}"><b>${d.cluster}</b> <span class="mono">${d.address}</span>:
        <span class="t-ok">healthy on ${ok.length}</span> <span class="muted">(${ok.slice(0, 5).join(', ')}${ok.length > 5 ? ', …' : ''})</span>,
        <span class="t-bad">not on ${notOk.length}</span>:<br>${notOk.slice(0, 20).map((s, i) => html`${i ? '; ' : ''}${sighting(s)}`)}</li>`;
    }) : html`<li class="empty">none: every agent sees every endpoint the same way</li>`);

    // The answer is by cluster, then by the agents' region; the page shows each region with
    // its clusters, since an outage is usually seen from one region.
    const byRegion = new Map();
    for (const c of clusters) {
      for (const r of c.regions || []) {
        if (!byRegion.has(r.region || '')) byRegion.set(r.region || '', []);
        byRegion.get(r.region || '').push({ cluster: c.cluster, endpoints: r.endpoints || [] });
      }
    }
    const row = (cluster, ep, first) => {
      const seen = ep.agents || [];
      const count = {};
      let req = 0, errs = 0;
      for (const s of seen) {
        count[s.state || 'UNKNOWN'] = (count[s.state || 'UNKNOWN'] || 0) + 1;
        req += num(s.requests);
        errs += num(s.errors);
      }
      const failed = seen.filter((s) => s.state !== 'HEALTHY');
      return html`<tr data-endpoint="${ep.address}" data-cluster="${cluster}"${first ? html` class="first"` : ''}>
        <td>${first ? html`<b>${cluster}</b>` : ''}</td><td class="mono">${ep.address}</td><td>${or([ep.region, ep.zone].filter(Boolean).join('/'))}</td>
        <td>${Object.entries(count).map(([st, k]) => html`<span class="badge ${EP_CLASS[st] || 'off'}">${k} ${st.toLowerCase()}</span> `)}
          ${seen.some((s) => s.panic) ? html`<span class="badge bad" title="no endpoint of the cluster is healthy on some agent: it uses them all">panic</span>` : ''}
          <div class="squares">${seen.slice(0, SQUARES).map((s) => html`<i class="sq ${EP_CLASS[s.state] || 'off'}" title="${s.nodeId}: ${s.state}${s.reason ? ' — ' + s.reason : ''}"></i>`)}</div></td>
        <td class="num">${req}</td><td class="num${bad(req && errs / req)}">${pct(req ? errs / req : 0)}</td>
        <td class="reason">${failed.slice(0, 3).map((s, i) => html`${i ? html`<br>` : ''}${sighting(s)}`)}${
          failed.length > 3 ? html`<br><span class="muted">and ${failed.length - 3} more</span>` : ''}</td></tr>`;
    };
    setHTML($('#health-regions'), byRegion.size ? [...byRegion.keys()].sort().map((region) => {
      const rows = byRegion.get(region).flatMap(({ cluster, endpoints }) => endpoints.map((ep, i) => row(cluster, ep, i === 0)));
      return html`<section data-region="${region}"><h2>Region ${or(region)}</h2><table class="grid health"><thead><tr>
        <th>cluster</th><th>endpoint</th><th>where</th><th>state per agent</th><th class="num">requests</th><th class="num">errors</th>
        <th>failed check / reason</th></tr></thead><tbody>${rows.length ? rows : empty(7, 'no endpoint')}</tbody></table></section>`;
    }) : html`<p class="empty">No agent reported endpoint health.</p>`);
  },
};

// ---- routing and boot ----------------------------------------------------------------------

const VIEWS = { fleet, rollout, history, traffic, health };

// Mounts the view the hash names (#/fleet by default).
function route() {
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1];
  const view = VIEWS[name] ? name : 'fleet';
  if (view !== app.view) {
    app.view = view;
    remount();
  }
}

// Puts a fresh copy of the view's template in #view and refreshes it at once.
function remount() {
  const v = $('#view');
  v.dataset.view = app.view;
  v.replaceChildren($(`#tpl-${app.view}`).content.cloneNode(true));
  VIEWS[app.view].mount(v);
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.hash === '#/' + app.view);
  if (!app.who && !app.locked) loadWho();
  refresh();
}

$('#login').addEventListener('submit', login);
$('#logout').addEventListener('click', logout);
window.addEventListener('hashchange', route);
document.addEventListener('visibilitychange', () => (document.hidden ? clearTimeout(app.timer) : refresh()));
setInterval(tick, 1000);
route();
