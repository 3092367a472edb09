// Trellis console: reads the control plane's API with the token its user
// gives, follows /v1/traffic as server-sent events, and draws. No framework
// and no build step; every text goes in through textContent, never as HTML.
'use strict';

const KINDS = ['networks', 'servicenetworks', 'services', 'targetgroups'];
const TOKEN_KEY = 'trellis-token';

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  objects: { networks: [], servicenetworks: [], services: [], targetgroups: [] },
  revision: null,
  traffic: null,
  live: false,
  abort: null,
};

// --- small helpers ---------------------------------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    // Through the CSSOM: the page's CSP refuses style attributes.
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function svg(tag, attrs, ...kids) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

const rate = (r) => (r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2)) + '/s';
const pct = (x) => (x * 100).toFixed(x > 0 && x < 0.1 ? 1 : 0) + '%';
const time = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
const byName = (kind, name) => state.objects[kind].find((o) => o.metadata.name === name);
// One colour per target group, the same on every bar.
const colour = (group) => 'c' + (Math.max(0, state.objects.targetgroups.findIndex((g) => g.metadata.name === group)) % 6);

class Unauthorized extends Error {}

async function api(path, opts = {}) {
  const resp = await fetch(path, {
    ...opts,
    headers: { Authorization: 'Bearer ' + state.token, ...(opts.headers || {}) },
    cache: 'no-store',
  });
  if (resp.status === 401) throw new Unauthorized('the control plane refused this token');
  if (!resp.ok) {
    let message = resp.status + ' ' + resp.statusText;
    try { message = (await resp.json()).message || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return resp;
}

// --- signing in and out ----------------------------------------------------

function showLogin(message) {
  document.getElementById('login').hidden = false;
  document.getElementById('page').hidden = true;
  document.getElementById('nav').hidden = true;
  document.getElementById('status').hidden = true;
  document.getElementById('login-error').textContent = message || '';
  document.getElementById('token').focus();
}

function signOut(message) {
  if (state.abort) state.abort.abort();
  state.abort = null;
  state.token = null;
  state.traffic = null;
  state.revision = null;
  for (const k of KINDS) state.objects[k] = [];
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById('page').replaceChildren();
  document.body.dataset.live = 'false';
  showLogin(message);
}

async function signIn(token) {
  state.token = token;
  try {
    await loadObjects();
  } catch (e) {
    signOut(e instanceof Unauthorized ? 'That token was refused.' : 'Could not reach the control plane: ' + e.message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  document.getElementById('login').hidden = true;
  document.getElementById('page').hidden = false;
  document.getElementById('nav').hidden = false;
  document.getElementById('status').hidden = false;
  render();
  follow();
}

// --- data ------------------------------------------------------------------

async function loadObjects() {
  const lists = await Promise.all(KINDS.map((k) => api('/v1/' + k).then((r) => r.json())));
  KINDS.forEach((k, i) => {
    state.objects[k] = lists[i].items.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  });
}

function setLive(live, text) {
  state.live = live;
  document.body.dataset.live = String(live);
  document.getElementById('live-dot').className = 'dot ' + (live ? 'live' : 'down');
  document.getElementById('live-text').textContent = text;
}

// Follows /v1/traffic?follow=true for as long as the tab is signed in; a
// stream that ends (the control plane restarted, the network blinked) is
// opened again after a second.
async function follow() {
  while (state.token) {
    const abort = new AbortController();
    state.abort = abort;
    try {
      const resp = await api('/v1/traffic?follow=true', { signal: abort.signal });
      setLive(true, 'live');
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
          if (data) await onTraffic(JSON.parse(data));
        }
      }
    } catch (e) {
      if (e instanceof Unauthorized) { signOut('The token is no longer accepted.'); return; }
      if (abort.signal.aborted) return;
    }
    if (!state.token) return;
    setLive(false, 'reconnecting');
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function onTraffic(traffic) {
  if (traffic.revision !== state.revision) {
    try { await loadObjects(); } catch (e) { if (e instanceof Unauthorized) throw e; }
    state.revision = traffic.revision;
    document.body.dataset.revision = String(traffic.revision);
  }
  state.traffic = traffic;
  render();
}

// --- what the numbers say ----------------------------------------------------

function serviceTraffic(name) {
  return (state.traffic && state.traffic.services.find((s) => s.service === name)) || null;
}

function measured(service, listener, rule) {
  const t = serviceTraffic(service);
  return (t && t.splits.find((s) => s.listener === listener && s.rule === rule)) || null;
}

// A match's place when a listener orders by specificity (as
// RuleMatch::specificity does): greater first.
function specificity(m) {
  const p = m.path || {};
  const [kind, len] = p.exact !== undefined ? [3, p.exact.length] : p.prefix !== undefined ? [2, p.prefix.length]
    : p.regex !== undefined ? [1, 0] : [0, 0];
  return [kind, len, m.method ? 1 : 0, (m.headers || []).length, (m.query || []).length];
}

function bySpecificity(a, b) {
  const [x, y] = [specificity(a.match), specificity(b.match)];
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return y[i] - x[i];
  return a.priority - b.priority;
}

// Every (listener, rule, action) of a service in the order they are tried,
// the default action last as rule "default".
function rulesOf(service) {
  const out = [];
  for (const l of service.spec.listeners || []) {
    const rules = [...(l.rules || [])].sort(l.ruleOrder === 'Specificity' ? bySpecificity : (a, b) => a.priority - b.priority);
    for (const r of rules) out.push({ listener: l, name: r.name, priority: r.priority, match: r.match, action: r.action });
    out.push({ listener: l, name: 'default', priority: null, match: null, action: l.defaultAction });
  }
  return out;
}

function matchText(m) {
  if (!m) return 'anything else';
  const parts = [];
  if (m.method) parts.push(m.method);
  if (m.host) parts.push('host ' + m.host);
  if (m.path && m.path.exact !== undefined) parts.push('path = ' + m.path.exact);
  if (m.path && m.path.prefix !== undefined) parts.push('path ' + m.path.prefix + '*');
  if (m.path && m.path.regex !== undefined) parts.push('path ~ ' + m.path.regex);
  for (const hd of m.headers || []) {
    if (hd.present !== undefined) { parts.push((hd.present ? 'with ' : 'without ') + hd.name); continue; }
    const [op, v] = hd.exact !== undefined ? ['=', hd.exact] : hd.prefix !== undefined ? ['^=', hd.prefix]
      : hd.contains !== undefined ? ['*=', hd.contains] : ['~', hd.regex];
    parts.push(hd.name + ' ' + op + ' ' + v);
  }
  for (const q of m.query || []) {
    if (q.present !== undefined) parts.push((q.present ? '?' : 'no ?') + q.name);
    else parts.push('?' + q.name + (q.exact !== undefined ? ' = ' + q.exact : ' ~ ' + q.regex));
  }
  return parts.join(', ') || 'anything';
}

// --- pages -----------------------------------------------------------------

const pages = { overview, service, map, targets, refused, networks };

function render() {
  if (!state.token) return;
  const [, page = '', arg] = location.hash.split('/');
  const name = pages[page] ? page : 'overview';
  document.querySelectorAll('nav a').forEach((a) => a.classList.toggle('active', a.dataset.page === (name === 'service' ? 'overview' : name)));
  const y = window.scrollY;
  const content = pages[name](arg && decodeURIComponent(arg));
  document.getElementById('page').replaceChildren(content);
  document.body.dataset.page = name;
  window.scrollTo(0, y);
}

function stat(k, v, cls) {
  return h('div', { class: 'stat' }, h('div', { class: 'v ' + (cls || '') }, v), h('div', { class: 'k' }, k));
}

function overview() {
  const t = state.traffic;
  const total = t ? t.services.reduce((a, s) => a + s.rate, 0) : 0;
  const errors = t ? t.services.reduce((a, s) => a + s.rate * s.errorRatio, 0) : 0;
  const nodes = t ? t.nodes.filter((n) => !n.stale).length : 0;
  const rows = state.objects.services.map((s) => {
    const st = serviceTraffic(s.metadata.name);
    return h('tr', { 'data-service': s.metadata.name },
      h('td', { 'data-label': 'Service' }, h('a', { href: '#/service/' + encodeURIComponent(s.metadata.name) }, s.metadata.name),
        s.spec.authType === 'SIGV4' ? [' ', h('span', { class: 'pill sigv4' }, 'SigV4')] : null),
      h('td', { 'data-label': 'VIP', class: 'mono' }, s.status.vip || '—'),
      h('td', { 'data-label': 'DNS name', class: 'mono' }, s.status.dnsName || '—'),
      h('td', { 'data-label': 'Requests', class: 'num' }, st ? rate(st.rate) : '—'),
      h('td', { 'data-label': 'Errors', class: 'num ' + (st && st.errorRatio > 0 ? 'bad' : '') }, st && st.rate ? pct(st.errorRatio) : '—'),
      h('td', { 'data-label': 'Denied', class: 'num' }, st && st.rate ? pct(st.deniedRatio) : '—'));
  });
  return h('div', {},
    h('div', { class: 'stats' },
      stat('services', state.objects.services.length),
      stat('nodes reporting', nodes),
      stat('requests', rate(total)),
      stat('errors', rate(errors), errors > 0 ? 'bad' : '')),
    h('div', { class: 'card' },
      h('h2', {}, 'Services'),
      rows.length ? h('table', { class: 'stack' },
        h('thead', {}, h('tr', {}, ['Service', 'VIP', 'DNS name', 'Requests', 'Errors (5xx)', 'Denied'].map((c, i) => h('th', { class: i > 2 ? 'num' : '' }, c)))),
        h('tbody', {}, rows)) : h('p', { class: 'empty-state' }, 'No services yet: trellis apply -f samples/demo.yaml')),
    refusedCard(5));
}

function service(name) {
  const s = byName('services', name);
  if (!s) return h('div', { class: 'card' }, h('p', {}, 'No service named ', h('code', {}, name), '. ', h('a', { href: '#/' }, 'All services')));
  const st = serviceTraffic(name);
  const head = h('div', { class: 'card' },
    h('h1', {}, name),
    s.spec.description ? h('p', { class: 'muted' }, s.spec.description) : null,
    h('div', { class: 'stats' },
      stat('VIP', s.status.vip || '—'),
      stat('requests', st ? rate(st.rate) : '—'),
      stat('errors (5xx)', st && st.rate ? pct(st.errorRatio) : '—', st && st.errorRatio > 0 ? 'bad' : ''),
      stat('denied', st && st.rate ? pct(st.deniedRatio) : '—')),
    h('p', { class: 'muted' }, h('span', { class: 'mono' }, s.status.dnsName || ''), ' · auth ', s.spec.authType || 'NONE',
      ' · service networks ', (s.spec.serviceNetworks || []).join(', ') || 'none'));
  const listeners = (s.spec.listeners || []).map((l) => h('div', { class: 'card' },
    h('h2', {}, 'Listener ', h('code', {}, l.name), ' ', h('span', { class: 'pill' }, l.protocol + ' ' + (l.port || (l.protocol === 'HTTPS' ? 443 : 80)))),
    rulesOf(s).filter((r) => r.listener === l).map((r) => ruleView(s, r))));
  return h('div', {}, head, listeners);
}

function ruleView(s, r) {
  const head = h('div', { class: 'rule-head' },
    h('h3', {}, r.name === 'default' ? 'default action' : r.name),
    r.priority !== null ? h('span', { class: 'pill' }, 'priority ' + r.priority) : null,
    h('span', { class: 'match' }, matchText(r.match)));
  if (r.action && r.action.fixedResponse) {
    return h('div', { class: 'rule' }, head, h('p', { class: 'muted' }, 'answers ' + r.action.fixedResponse.statusCode));
  }
  if (r.action && r.action.redirect) {
    const d = r.action.redirect;
    const path = d.path ? (d.path.full !== undefined ? d.path.full : d.path.prefix + '…') : '';
    const to = (d.scheme ? d.scheme + '://' : '') + (d.hostname || '') + (d.port ? ':' + d.port : '') + path;
    return h('div', { class: 'rule' }, head,
      h('p', { class: 'muted' }, 'redirects (' + (d.statusCode || 302) + ') to ', h('code', {}, to || 'the same URL')));
  }
  const forward = (r.action && r.action.forward) || [];
  const sum = forward.reduce((a, f) => a + (f.weight ?? 1), 0);
  const m = measured(s.metadata.name, r.listener.name, r.name);
  const counts = forward.map((f) => (m && m.groups[f.targetGroup]) || 0);
  const seen = counts.reduce((a, n) => a + n, 0);
  const bar = (kind, share, label) => h('div', { class: 'bar', 'data-kind': kind },
    forward.map((f, i) => share[i] > 0 ? h('div', {
      class: 'seg ' + colour(f.targetGroup), style: 'flex-grow:' + share[i],
      'data-group': f.targetGroup, 'data-percent': (share[i] * 100).toFixed(1),
      title: f.targetGroup + ': ' + pct(share[i]) + label(i),
    }, share[i] >= 0.08 ? pct(share[i]) : '') : null));
  const configured = forward.map((f) => (sum ? (f.weight ?? 1) / sum : 0));
  const measuredShare = counts.map((n) => (seen ? n / seen : 0));
  return h('div', {
    class: 'rule', 'data-split': '', 'data-service': s.metadata.name, 'data-listener': r.listener.name,
    'data-rule': r.name, 'data-seen': seen,
  },
    head,
    h('div', { class: 'split' },
      h('span', { class: 'label' }, 'configured'),
      bar('configured', configured, (i) => ' (weight ' + (forward[i].weight ?? 1) + ')'),
      h('span', { class: 'label' }, 'measured'),
      seen ? bar('measured', measuredShare, (i) => ' (' + counts[i] + ' requests)')
        : h('div', { class: 'bar', 'data-kind': 'measured' }, h('span', { class: 'empty' }, 'no requests yet'))),
    h('div', { class: 'legend' },
      forward.map((f, i) => h('span', {},
        h('span', { class: 'sw ' + colour(f.targetGroup) }),
        h('a', { href: '#/targets' }, f.targetGroup), ' ',
        h('span', { class: 'muted' }, 'weight ' + (f.weight ?? 1) + ' · ' + counts[i] + ' req'))),
      h('span', { class: 'muted' }, m ? 'measured over the last ' + Math.round(m.windowSeconds) + ' s (since the latest change)' : '')));
}

function refusedCard(limit) {
  const items = state.traffic ? [...state.traffic.refused].reverse().slice(0, limit) : [];
  return h('div', { class: 'card' },
    h('h2', {}, 'Recently refused'),
    items.length ? h('table', { class: 'stack' },
      h('thead', {}, h('tr', {}, ['Time', 'Service', 'Request', 'Status', 'Verdict', 'Reason', 'Caller'].map((c) => h('th', {}, c)))),
      h('tbody', {}, items.map((f) => h('tr', { 'data-refused': '', 'data-service': f.service },
        h('td', { 'data-label': 'Time', class: 'mono' }, time(f.timeMs)),
        h('td', { 'data-label': 'Service' }, f.service),
        h('td', { 'data-label': 'Request', class: 'mono' }, (f.method + ' ' + f.path).trim() || f.kind),
        h('td', { 'data-label': 'Status', class: 'num' }, f.status),
        h('td', { 'data-label': 'Verdict' }, h('span', { class: 'pill ' + f.verdict }, f.verdict)),
        h('td', { 'data-label': 'Reason', class: 'reason' }, f.reason || '—'),
        h('td', { 'data-label': 'Caller' }, f.identity || f.workload || f.client || '—'))))) :
      h('p', { class: 'empty-state' }, 'Nothing refused recently.'));
}

function refused() {
  return refusedCard(50);
}

function targets() {
  const health = state.traffic ? state.traffic.health : [];
  const nodes = state.traffic ? state.traffic.nodes.map((n) => n.network + '/' + n.node) : [];
  return h('div', {}, state.objects.targetgroups.map((g) => {
    const rows = (g.spec.targets || []).map((t) => {
      const port = t.port || g.spec.port || (g.spec.protocol === 'HTTPS' ? 443 : 80);
      const addr = t.address.includes(':') ? '[' + t.address + ']:' + port : t.address + ':' + port;
      const seen = health.find((x) => x.targetGroup === g.metadata.name && x.target === addr);
      return h('tr', { 'data-target': addr },
        h('td', { 'data-label': 'Target', class: 'mono' }, addr),
        nodes.length ? nodes.map((n) => {
          const v = seen && seen.byNode[n];
          return h('td', { 'data-label': n }, v ? h('span', { class: 'pill ' + v }, v) : h('span', { class: 'muted' }, 'not reached'));
        }) : h('td', { 'data-label': 'Health' }, h('span', { class: 'muted' }, 'no node reporting')));
    });
    return h('div', { class: 'card', 'data-group': g.metadata.name },
      h('h2', {}, g.metadata.name, ' ', h('span', { class: 'pill' }, (g.spec.protocol || 'HTTP') + ' · network ' + g.spec.network)),
      h('table', { class: 'stack' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Target'), nodes.length ? nodes.map((n) => h('th', {}, 'as seen by ' + n)) : h('th', {}, 'Health'))),
        h('tbody', {}, rows)));
  }));
}

function networks() {
  const t = state.traffic;
  return h('div', { class: 'grid' },
    h('div', { class: 'card' }, h('h2', {}, 'Networks'),
      h('table', {}, h('tbody', {}, state.objects.networks.map((n) => h('tr', {},
        h('td', {}, h('strong', {}, n.metadata.name), n.spec.description ? h('div', { class: 'muted' }, n.spec.description) : null),
        h('td', { class: 'muted' }, (n.spec.gateways || []).length ? 'gateway ' + n.spec.gateways.map((g) => g.address).join(', ') : 'no gateway')))))),
    h('div', { class: 'card' }, h('h2', {}, 'Service networks'),
      h('table', {}, h('tbody', {}, state.objects.servicenetworks.map((sn) => h('tr', {},
        h('td', {}, h('strong', {}, sn.metadata.name)),
        h('td', { class: 'muted' }, 'networks: ' + ((sn.spec.networks || []).join(', ') || 'none')),
        h('td', { class: 'muted' }, 'services: ' + (state.objects.services.filter((s) => (s.spec.serviceNetworks || []).includes(sn.metadata.name)).map((s) => s.metadata.name).join(', ') || 'none'))))))),
    h('div', { class: 'card' }, h('h2', {}, 'Nodes'),
      t && t.nodes.length ? h('table', {}, h('tbody', {}, t.nodes.map((n) => h('tr', {},
        h('td', {}, h('strong', {}, n.node), h('div', { class: 'muted' }, 'network ' + n.network)),
        h('td', { class: 'muted' }, 'revision ' + n.revision),
        h('td', {}, h('span', { class: 'pill ' + (n.stale ? 'unhealthy' : 'healthy') }, n.stale ? 'silent ' + Math.round(n.secondsSinceReport) + ' s' : 'reporting')))))) :
        h('p', { class: 'empty-state' }, 'No node has reported yet.')));
}

// Who calls whom: networks (by their nodes' traffic) to services to target
// groups, the configured paths faint, the ones carrying traffic now bold.
function map() {
  const t = state.traffic;
  const services = state.objects.services;
  const nets = state.objects.networks.map((n) => n.metadata.name);
  const groups = state.objects.targetgroups.map((g) => g.metadata.name);
  const rowH = 54, W = 960, boxW = 210, boxH = 38;
  const rows = Math.max(nets.length, services.length, groups.length, 1);
  const height = rows * rowH + 40;
  const col = [20, W / 2 - boxW / 2, W - boxW - 20];
  const y = (i, n) => 30 + i * rowH + ((rows - n) * rowH) / 2;
  const pos = {};
  nets.forEach((n, i) => { pos['n:' + n] = [col[0], y(i, nets.length)]; });
  services.forEach((s, i) => { pos['s:' + s.metadata.name] = [col[1], y(i, services.length)]; });
  groups.forEach((g, i) => { pos['g:' + g] = [col[2], y(i, groups.length)]; });
  const edges = [];
  const live = new Map((t ? t.edges : []).map((e) => ['n:' + e.network + '>s:' + e.service, e.rate]));
  for (const s of services) {
    const reach = new Set();
    for (const snName of s.spec.serviceNetworks || []) {
      const sn = byName('servicenetworks', snName);
      for (const n of (sn && sn.spec.networks) || []) reach.add(n);
    }
    for (const e of t ? t.edges : []) if (e.service === s.metadata.name) reach.add(e.network);
    for (const n of reach) edges.push(['n:' + n, 's:' + s.metadata.name, live.get('n:' + n + '>s:' + s.metadata.name) || 0]);
    const tgs = new Set(rulesOf(s).flatMap((r) => ((r.action && r.action.forward) || []).map((f) => f.targetGroup)));
    for (const g of tgs) edges.push(['s:' + s.metadata.name, 'g:' + g, 0]);
  }
  const paths = edges.filter(([a, b]) => pos[a] && pos[b]).map(([a, b, r]) => {
    const [x1, y1] = [pos[a][0] + boxW, pos[a][1] + boxH / 2];
    const [x2, y2] = [pos[b][0], pos[b][1] + boxH / 2];
    const mx = (x1 + x2) / 2;
    return svg('g', {},
      svg('path', { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, class: r > 0 ? 'live' : '', 'stroke-width': r > 0 ? Math.min(2 + Math.log2(1 + r), 9) : 1.2 }),
      r > 0 ? svg('text', { x: mx, y: (y1 + y2) / 2 - 4, 'text-anchor': 'middle', class: 'rate' }, rate(r)) : null);
  });
  const box = (key, cls, title, sub) => {
    const [x, yy] = pos[key];
    return svg('g', { class: 'node ' + cls, 'data-node': key },
      svg('rect', { x, y: yy, width: boxW, height: boxH, rx: 8 }),
      svg('text', { x: x + 12, y: yy + 16 }, title),
      svg('text', { x: x + 12, y: yy + 31, class: 'sub' }, sub));
  };
  const boxes = [
    ...nets.map((n) => box('n:' + n, 'network', n, 'network')),
    ...services.map((s) => {
      const st = serviceTraffic(s.metadata.name);
      return box('s:' + s.metadata.name, 'service', s.metadata.name, (s.status.vip || '') + (st && st.rate ? ' · ' + rate(st.rate) : ''));
    }),
    ...groups.map((g) => box('g:' + g, 'group', g, 'target group · ' + (byName('targetgroups', g).spec.network))),
  ];
  return h('div', { class: 'card map' },
    h('h2', {}, 'Service map'),
    h('p', { class: 'muted' }, 'Networks whose clients may reach each service, and the target groups its rules send to; bold lines carry traffic now.'),
    svg('svg', { viewBox: `0 0 ${W} ${height}`, role: 'img', 'aria-label': 'service map' }, paths, boxes));
}

// --- start -------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = document.getElementById('token').value.trim();
    document.getElementById('token').value = '';
    if (token) signIn(token);
  });
  document.getElementById('logout').addEventListener('click', () => signOut(''));
  window.addEventListener('hashchange', render);
  if (state.token) signIn(state.token);
  else showLogin('');
});
