// Switchboard operator console. Plain JavaScript, no build step, nothing loaded from elsewhere.
//
// Everything shown comes from the admin API on this origin. Message content is only ever put
// into the page with textContent (never innerHTML) and never into a URL: the location hash
// holds a view name and at most a message id. A missing value shows as an empty cell or a
// dash, never as "null", "undefined" or "?".
'use strict';

const TOKEN_KEY = 'switchboard.token';
const MAX_EVENTS = 500;
const OK_STATUSES = ['delivered', 'routed', 'received', 'filtered'];
const BAD_STATUSES = ['rejected', 'failed'];

const state = {
  events: [],        // newest first, at most MAX_EVENTS
  source: null,      // the EventSource
  timer: null,       // the current view's refresh timer
  view: '',
  tokenWaiters: null,
  dictionary: null,  // the HL7 v2 field dictionary, once loaded (a promise)
  nextNotice: null,  // a notice for the next view (after an action that opens another)
};

// ---- small DOM helpers ---------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function main() { return document.getElementById('main'); }

// Nodes to put in a parent, without the null/undefined/false that conditional parts leave
// (replaceChildren would write them as the text "null").
function present(nodes) { return nodes.flat().filter((n) => n !== null && n !== undefined && n !== false); }

function show(...nodes) { main().replaceChildren(...present(nodes)); }

// A value for a cell: the value, or a dash when there is none.
const DASH = '\u2014';
function dash(value) { return value === null || value === undefined || value === '' ? DASH : value; }

function pill(text, cls) { return el('span', { class: 'pill ' + (cls || text) }, text); }

function when(value) {
  if (value === null || value === undefined || value === '') return '';
  const d = typeof value === 'number' ? new Date(value) : new Date(value);
  if (isNaN(d)) return String(value);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function notice(text, isError) {
  const n = document.getElementById('notice');
  n.textContent = text;
  n.className = isError ? 'error' : '';
  n.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { n.hidden = true; }, isError ? 10000 : 5000);
}

function table(headers, rows, attrs) {
  return el('table', attrs || {},
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', { class: h.num ? 'num' : '' }, h.label || h)))),
    el('tbody', {}, rows));
}

// ---- API and token -------------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

function askToken(refused) {
  if (!state.tokenWaiters) {
    state.tokenWaiters = [];
    const dialog = document.getElementById('token-dialog');
    document.getElementById('token-error').hidden = !refused;
    const input = document.getElementById('token-input');
    input.value = '';
    if (!dialog.open) dialog.showModal();
    input.focus();
  }
  return new Promise((resolve) => state.tokenWaiters.push(resolve));
}

function tokenEntered(ev) {
  ev.preventDefault();
  const value = document.getElementById('token-input').value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  document.getElementById('token-dialog').close();
  showWhoami();
  const waiters = state.tokenWaiters || [];
  state.tokenWaiters = null;
  waiters.forEach((w) => w());
  startEvents();
}

async function api(path, options) {
  const opts = options || {};
  for (let tries = 0; ; tries++) {
    const headers = { Accept: 'application/json' };
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    if (token()) headers.Authorization = 'Bearer ' + token();
    const res = await fetch(path, {
      method: opts.method || 'GET',
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      cache: 'no-store',
    });
    if (res.status === 401) {
      const hadToken = !!token();
      sessionStorage.removeItem(TOKEN_KEY);
      await askToken(tries > 0 || hadToken);
      continue;
    }
    const data = await res.json().catch(() => ({}));
    if (res.status === 403) {
      throw new Error('Refused: ' + (data.detail || 'this token may not do that') + '. Sign in with an operator token to act.');
    }
    if (!res.ok) throw new Error(data.detail || data.error || res.statusText);
    return data;
  }
}

// Shows who the token belongs to and its role in the header.
function showWhoami() {
  api('/api/whoami').then((me) => {
    const w = document.getElementById('whoami');
    w.textContent = `${me.name} \u00b7 ${me.role === 'operator' ? 'operator' : 'read-only'}`;
    w.dataset.role = me.role;
    w.hidden = false;
  }, () => {});
}

// ---- live event stream ---------------------------------------------------------------

function setLiveStatus(text, on) {
  const s = document.getElementById('live-status');
  s.textContent = text;
  s.className = 'pill ' + (on ? 'on' : 'off');
}

function startEvents() {
  if (state.source) state.source.close();
  const t = token();
  // EventSource cannot send headers; the token goes in the query of this one endpoint.
  const url = '/api/events' + (t ? '?access_token=' + encodeURIComponent(t) : '');
  const source = new EventSource(url);
  state.source = source;
  source.addEventListener('open', () => setLiveStatus('live', true));
  source.addEventListener('error', () => {
    setLiveStatus('reconnecting', false);
    if (source.readyState === EventSource.CLOSED && state.source === source) {
      // Refused (token) or the engine went away: probe the API, which asks for a token on 401.
      setTimeout(() => api('/api/channels').then(startEvents, () => setTimeout(startEvents, 5000)), 2000);
    }
  });
  source.addEventListener('message', (msg) => {
    let ev;
    try { ev = JSON.parse(msg.data); } catch (_) { return; }
    state.events.unshift(ev);
    if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
    if (state.view === 'live') addEventRow(ev, true);
    if (state.view === 'dead-letters' && ev.kind === 'dead_letter') renderDeadLetters();
  });
  source.addEventListener('lagged', (msg) => {
    let missed = null;
    try { missed = JSON.parse(msg.data).missed; } catch (_) { /* count unknown */ }
    notice(`The live stream skipped ${missed ? missed + ' events' : 'some events'} (the browser fell behind).`, true);
  });
}

function eventRow(ev) {
  return el('tr', {
    class: 'clickable event',
    dataset: { id: ev.id, controlId: ev.control_id, kind: ev.kind },
    title: 'Open message ' + ev.id,
    onclick: () => { location.hash = '#/message/' + ev.id; },
  },
  el('td', {}, dash(when(ev.at_ms))),
  el('td', {}, pill(ev.kind)),
  el('td', {}, dash(ev.channel)),
  el('td', {}, dash(ev.message_type)),
  el('td', {}, ev.control_id ? el('code', {}, ev.control_id) : DASH),
  el('td', {}, dash(ev.destination)),
  el('td', { class: 'muted' }, dash(ev.id)));
}

function addEventRow(ev, atTop) {
  const body = document.querySelector('#live-table tbody');
  if (!body) return;
  const row = eventRow(ev);
  if (atTop) body.prepend(row); else body.append(row);
  while (body.children.length > MAX_EVENTS) body.lastChild.remove();
  const empty = document.getElementById('live-empty');
  if (empty) empty.remove();
}

function renderLive() {
  const rows = state.events.map(eventRow);
  show(el('div', { class: 'panel' },
    el('div', { class: 'toolbar' },
      el('h2', { class: 'grow' }, 'Live stream'),
      el('span', { class: 'muted' }, 'Newest first; ids, types and statuses as they happen. Click a row to open the message.'),
      el('button', { class: 'secondary', onclick: () => { state.events = []; renderLive(); } }, 'Clear')),
    table(['Time', 'Event', 'Channel', 'Type', 'Control id', 'Destination', 'Message id'], rows, { id: 'live-table' }),
    rows.length ? null : el('p', { class: 'empty', id: 'live-empty' }, 'Waiting for messages...')));
}

// ---- channels ------------------------------------------------------------------------

function statusPills(counts) {
  const entries = Object.entries(counts || {});
  if (!entries.length) return el('span', { class: 'muted' }, 'none');
  return el('span', { class: 'actions' }, entries.map(([k, v]) => pill(`${k} ${v}`, k)));
}

async function setPaused(name, pause) {
  if (pause && !confirm(`Pause channel ${name}?\n\nIts source refuses new messages until you resume it: MLLP senders get AR ("channel paused by operator"), HTTP senders 503, SFTP and Latrexa stop polling. What it already took is still delivered.`)) return;
  try {
    const r = await api(`/api/channels/${encodeURIComponent(name)}/${pause ? 'pause' : 'resume'}`, { method: 'POST', body: {} });
    notice(r.paused ? `Channel ${name} is paused.` : `Channel ${name} runs again.`);
  } catch (e) { fail(e); }
  renderChannels().catch(fail);
}

function sourceLine(ch) {
  const from = ch.source_type === 'sftp' || ch.source_type === 'latrexa' ? ' from ' : ' on ';
  return [dash(ch.source_type), from, ch.endpoint ? el('code', {}, ch.endpoint) : el('span', { class: 'muted' }, 'not started')];
}

async function renderChannels() {
  const data = await api('/api/channels');
  if (state.view !== 'channels') return;
  const cards = data.channels.map((ch) => el('section', { class: 'panel channel' + (ch.paused ? ' paused' : ''), dataset: { channel: ch.name, paused: ch.paused ? 'yes' : 'no' } },
    el('div', { class: 'toolbar' },
      el('h2', { class: 'grow' }, ch.name, ' ', ch.paused ? pill('paused', 'paused') : null),
      ch.paused
        ? el('button', { class: 'resume', onclick: () => setPaused(ch.name, false) }, 'Resume')
        : el('button', { class: 'secondary pause', onclick: () => setPaused(ch.name, true) }, 'Pause')),
    ch.paused ? el('p', { class: 'paused-note' }, `Paused by ${dash(ch.paused_by)} since ${dash(when(ch.paused_at))}: new messages are refused, deliveries go on.`) : null,
    el('dl', { class: 'kv' },
      el('dt', {}, 'Source'), el('dd', {}, sourceLine(ch)),
      el('dt', {}, 'Last message'), el('dd', {}, ch.last_message_at ? when(ch.last_message_at) : el('span', { class: 'muted' }, 'none yet')),
      el('dt', {}, 'Last 24 h'), el('dd', {}, statusPills(ch.counts_24h))),
    el('h3', {}, 'Destinations'),
    ch.destinations.length ? table(['Destination', 'Type', 'State', { label: 'Outbox', num: true }, { label: 'Dead letters', num: true }],
      ch.destinations.map((d) => el('tr', { dataset: { destination: `${ch.name}/${d.name}` } },
        el('td', {}, d.name),
        el('td', {}, dash(d.type)),
        el('td', {}, d.up === null || d.up === undefined ? pill('starting', 'pending') : (d.up ? pill('up') : pill('down'))),
        el('td', { class: 'num' }, dash(d.outbox_depth)),
        el('td', { class: 'num' }, d.dead_letters ? el('a', { href: '#/dead-letters' }, d.dead_letters) : '0'))))
      : el('p', { class: 'muted' }, 'No destinations: messages are stored only.')));
  show(el('div', { class: 'toolbar' }, el('h2', { class: 'grow' }, 'Channels and destinations'),
    data.counts_truncated ? el('span', { class: 'muted' }, `24 h counts cover the newest ${data.counts_scanned} messages.`) : null,
    el('span', { class: 'muted' }, 'Refreshes every 5 s')),
  data.channels.length ? el('div', { class: 'grid' }, cards) : el('p', { class: 'empty' }, 'No channels configured.'));
}

// ---- search --------------------------------------------------------------------------

const search = { params: null, sinceLocal: '', items: [], channels: null };

// The patient of a message: name, and the MRN under it.
function patientCell(p) {
  if (!p || (!p.name && !p.mrn)) return el('td', { class: 'patient' }, DASH);
  return el('td', { class: 'patient' },
    el('span', { class: 'patient-name' }, dash(p.name)),
    p.mrn ? el('span', { class: 'mrn muted' }, 'MRN ', el('code', {}, p.mrn)) : null);
}

function messageRow(m) {
  return el('tr', {
    class: 'clickable message', dataset: { id: m.id, controlId: m.control_id },
    onclick: () => { location.hash = '#/message/' + m.id; },
  },
  el('td', {}, dash(when(m.received_at))),
  el('td', {}, dash(m.channel)),
  patientCell(m.patient),
  el('td', {}, dash(m.message_type)),
  el('td', {}, m.control_id ? el('code', {}, m.control_id) : DASH),
  el('td', {}, m.status ? pill(m.status) : DASH),
  el('td', {}, dash(m.ack_code)),
  el('td', { class: 'num' }, dash(m.size)));
}

async function runSearch(more) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(search.params || {})) if (v) p.set(k, v);
  p.set('limit', '100');
  if (more && search.items.length) p.set('before', search.items[search.items.length - 1].id);
  const data = await api('/api/messages?' + p.toString());
  search.items = more ? search.items.concat(data.items) : data.items;
  renderSearchResults(data.items.length === 100);
}

function renderSearchResults(hasMore) {
  const box = document.getElementById('search-results');
  if (!box) return;
  box.replaceChildren(...present([
    search.items.length
      ? table(['Received', 'Channel', 'Patient', 'Type', 'Control id', 'Status', 'ACK', { label: 'Bytes', num: true }], search.items.map(messageRow), { id: 'search-table' })
      : el('p', { class: 'empty' }, search.params ? 'No messages match.' : 'Choose filters and search.'),
    hasMore ? el('button', { class: 'secondary', onclick: () => runSearch(true).catch(fail) }, 'Older') : null]));
}

// What the search box is looked up as: any (control id, any identifier, or the words of a
// patient name), or one kind of key.
const SEARCH_KINDS = [
  ['', 'anything'], ['name', 'patient name'], ['patient_id', 'patient id / MRN'], ['control_id', 'control id (MSH-10)'],
  ['order_number', 'order / accession number'], ['appointment_id', 'appointment id'], ['visit_number', 'visit number'],
];

async function renderSearch() {
  if (!search.channels) {
    search.channels = (await api('/api/channels')).channels.map((c) => c.name);
  }
  const prev = search.form || {};
  const form = el('form', { class: 'search', id: 'search-form' },
    el('label', { class: 'wide' }, 'Patient name, MRN, control id, order, accession or appointment number',
      el('input', { name: 'q', value: prev.q || '', autocomplete: 'off', placeholder: 'e.g. Testperson Alex, MRN-100234, CTL-42' })),
    el('label', {}, 'Look up as', el('select', { name: 'kind' },
      SEARCH_KINDS.map(([v, t]) => el('option', { value: v, selected: (prev.kind || '') === v }, t)))),
    el('label', {}, 'Channel', el('select', { name: 'channel' }, el('option', { value: '' }, 'any'),
      search.channels.map((c) => el('option', { value: c, selected: prev.channel === c }, c)))),
    el('label', {}, 'Status', el('select', { name: 'status' }, el('option', { value: '' }, 'any'),
      ['received', 'routed', 'delivered', 'retrying', 'failed', 'rejected', 'filtered']
        .map((st) => el('option', { value: st, selected: prev.status === st }, st)))),
    el('label', {}, 'Since', el('input', { name: 'since', type: 'datetime-local', value: search.sinceLocal || '' })),
    el('button', { type: 'submit' }, 'Search'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const text = String(f.get('q') || '').trim();
    const kind = String(f.get('kind') || '');
    const sinceLocal = String(f.get('since') || '');
    search.sinceLocal = sinceLocal;
    search.form = { q: text, kind, channel: String(f.get('channel') || ''), status: String(f.get('status') || '') };
    search.params = {
      channel: search.form.channel, status: search.form.status,
      since: sinceLocal ? new Date(sinceLocal).toISOString() : '',
    };
    if (text && !kind) search.params.q = text;
    else if (text && kind === 'control_id') search.params.control_id = text;
    else if (text) { search.params.key = text; search.params.key_type = kind; }
    runSearch(false).catch(fail);
  });
  show(el('div', { class: 'panel' }, el('h2', {}, 'Search messages'), form),
    el('div', { class: 'panel', id: 'search-results' }));
  if (search.params) await runSearch(false); else renderSearchResults(false);
}

// ---- message viewer ------------------------------------------------------------------

// The HL7 v2 field dictionary (segment, field and component names), loaded once; null when
// it cannot be read (positions are shown alone then).
function dictionary() {
  if (!state.dictionary) {
    state.dictionary = fetch('/console/hl7-dictionary.json', { cache: 'no-store' })
      .then((r) => (r.ok ? r.json() : null)).catch(() => null);
  }
  return state.dictionary;
}

// `PID-5 Patient Name`: the position and, when the dictionary knows it, the field's name.
function fieldTitle(dict, seg, n) {
  const f = dict && dict.segments[seg] && dict.segments[seg].fields[n - 1];
  return f ? `${seg}-${n} ${f[0]}` : `${seg}-${n}`;
}

// `PID-5.1 Family Name`: a component's position and the name of that component of the
// field's data type.
function componentTitle(dict, seg, n, pos, k) {
  const f = dict && dict.segments[seg] && dict.segments[seg].fields[n - 1];
  const names = f && dict.types[f[1]];
  const name = names && names[k - 1];
  return name ? `${pos} ${name}` : pos;
}

// One HL7 v2 message, one segment per line; every field and component is a span whose
// data-pos is its position (PID-5, PID-5.1, PID-3(2).1) and whose title adds its name from
// the HL7 v2 dictionary (PID-5 Patient Name, PID-5.1 Family Name), so hovering tells the
// operator where they are and what it is.
function hl7View(text, id, dict) {
  const box = el('div', { class: 'hl7', id });
  const segments = String(text || '').split(/\r\n|\r|\n/).filter((seg) => seg.length);
  let fs = '|'; let cs = '^'; let rs = '~';
  for (const seg of segments) {
    const name = seg.slice(0, 3);
    const header = name === 'MSH' || name === 'FHS' || name === 'BHS';
    if (header && seg.length > 4) {
      fs = seg[3]; cs = seg[4] || '^'; rs = seg[5] || '~';
    }
    const line = el('span', { class: 'segment', dataset: { segment: name } });
    const parts = seg.split(fs);
    const segName = dict && dict.segments[name] ? `${name} ${dict.segments[name].name}` : name;
    line.append(el('span', { class: 'segid', title: segName }, parts[0]));
    for (let i = 1; i < parts.length; i++) {
      // In MSH the separator itself is MSH-1, so the first part after it is MSH-2.
      const n = header ? i + 1 : i;
      const pos = `${name}-${n}`;
      line.append(el('span', { class: 'sep' }, fs));
      const field = el('span', { class: 'field', title: fieldTitle(dict, name, n), dataset: { pos } });
      if (header && n === 2) {
        field.append(parts[i]);
      } else {
        const reps = parts[i].split(rs);
        reps.forEach((rep, r) => {
          if (r > 0) field.append(el('span', { class: 'sep' }, rs));
          const comps = rep.split(cs);
          if (comps.length === 1) { field.append(rep); return; }
          const base = reps.length > 1 ? `${pos}(${r + 1})` : pos;
          comps.forEach((c, k) => {
            if (k > 0) field.append(el('span', { class: 'sep' }, cs));
            const cpos = `${base}.${k + 1}`;
            field.append(el('span', { class: 'comp', title: componentTitle(dict, name, n, cpos, k + 1), dataset: { pos: cpos } }, c));
          });
        });
      }
      line.append(field);
    }
    box.append(line);
  }
  if (!segments.length) box.append(el('span', { class: 'muted' }, '(empty)'));
  return box;
}

function payloadText(p) {
  if ((p.content_type || '').includes('json')) {
    try { return JSON.stringify(JSON.parse(p.body), null, 2); } catch (_) { /* show as sent */ }
  }
  return String(p.body || '').replace(/\r/g, '\n');
}

// A peer's whole answer to one attempt: an HL7 ACK as segments, JSON pretty-printed, any
// other text as sent.
function answerView(text, dict, i) {
  const t = String(text || '');
  if (/^(MSH|FHS|BHS)./.test(t)) return hl7View(t, `answer-${i}`, dict);
  let shown = t;
  try { shown = JSON.stringify(JSON.parse(t), null, 2); } catch (_) { /* not JSON */ }
  return el('pre', { class: 'payload', id: `answer-${i}` }, shown);
}

function attemptRows(attempts, dict) {
  const rows = [];
  attempts.forEach((a, i) => {
    rows.push(el('tr', { class: 'attempt', dataset: { destination: a.destination, attempt: a.attempt } },
      el('td', {}, dash(when(a.at_ms))), el('td', {}, dash(a.destination)), el('td', { class: 'num' }, dash(a.attempt)),
      el('td', {}, a.outcome ? pill(a.outcome, a.outcome === 'retry' ? 'retrying' : a.outcome) : DASH),
      el('td', {}, dash(a.status)),
      el('td', { class: 'num' }, dash(a.duration_ms)), el('td', {}, dash(a.detail))));
    rows.push(el('tr', { class: 'attempt-answer', dataset: { destination: a.destination, attempt: a.attempt } },
      el('td', { colspan: 7 }, a.answer
        ? el('details', {}, el('summary', {}, `Answer of ${a.destination} to attempt ${a.attempt}`), answerView(a.answer, dict, i))
        : el('span', { class: 'muted' }, 'No answer kept for this attempt (none came, or it was recorded before answers were kept).'))));
  });
  return rows;
}

// The edit-and-resend panel: the raw message in a text area, sent as a new message into
// the same channel.
function resendEditor(m) {
  const area = el('textarea', { id: 'resend-text', spellcheck: 'false', autocomplete: 'off', rows: 12 });
  area.value = String(m.raw || '').replace(/\r\n|\r/g, '\n');
  const send = el('button', {
    id: 'resend-send',
    onclick: async (e) => {
      e.target.disabled = true;
      try {
        const r = await api(`/api/messages/${m.id}/resend`, { method: 'POST', body: { raw: area.value } });
        // Shown once the new message's view is open (a view change clears notices).
        state.nextNotice = `Sent as new message ${r.id}: ${r.status}${r.ack_code ? ' (' + r.ack_code + ')' : ''}. Message ${m.id} is unchanged.`;
        location.hash = '#/message/' + r.id;
      } catch (err) { fail(err); e.target.disabled = false; }
    },
  }, 'Send as a new message');
  return el('div', { class: 'panel', id: 'resend-panel', hidden: true },
    el('h3', {}, 'Edit and resend'),
    el('p', { class: 'muted' }, `The edited text goes into channel ${m.channel} as a new message: checked, stored and routed like one from its source, and never taken for a duplicate. This message stays as it is; the audit log names both and you.`),
    area,
    el('div', { class: 'actions' }, send,
      el('button', { class: 'secondary', onclick: () => { document.getElementById('resend-panel').hidden = true; } }, 'Cancel')));
}

async function renderMessage(id) {
  const [m, dict] = await Promise.all([api('/api/messages/' + encodeURIComponent(id)), dictionary()]);
  if (state.view !== 'message') return;
  const reprocess = el('button', {
    class: 'secondary',
    onclick: async () => {
      if (!confirm('Route this message again to its destinations?')) return;
      try {
        const r = await api(`/api/messages/${m.id}/reprocess`, { method: 'POST', body: {} });
        notice(`Message ${r.id} reprocessed: ${r.status}.`);
        renderMessage(id).catch(fail);
      } catch (e) { fail(e); }
    },
  }, 'Reprocess');
  const resendable = m.format === 'hl7v2';
  const edit = resendable ? el('button', {
    class: 'secondary', id: 'resend-open',
    onclick: () => {
      const panel = document.getElementById('resend-panel');
      panel.hidden = false;
      document.getElementById('resend-text').focus();
    },
  }, 'Edit and resend') : null;
  const p = m.patient || {};
  show(
    el('div', { class: 'toolbar' },
      el('a', { href: '#/live' }, '\u2190 Live'), el('a', { href: '#/search' }, 'Search'),
      el('h2', { class: 'grow', id: 'message-title' }, `Message ${m.id}`), edit, reprocess),
    resendable ? resendEditor(m) : null,
    el('div', { class: 'panel' }, el('dl', { class: 'kv', id: 'message-summary' },
      el('dt', {}, 'Status'), el('dd', {}, m.status ? pill(m.status) : DASH),
      el('dt', {}, 'Channel'), el('dd', {}, dash(m.channel)),
      el('dt', {}, 'Patient'), el('dd', { id: 'message-patient' }, dash(p.name), p.mrn ? el('span', { class: 'muted' }, ' \u00b7 MRN ', el('code', {}, p.mrn)) : null),
      el('dt', {}, 'Received'), el('dd', {}, dash(when(m.received_at)), m.peer ? [' from ', el('code', {}, m.peer)] : null),
      m.resent_from ? [el('dt', {}, 'Resent from'), el('dd', { id: 'resent-from' }, el('a', { href: '#/message/' + m.resent_from }, `message ${m.resent_from}`))] : null,
      el('dt', {}, 'Type / control id'), el('dd', {}, dash(m.message_type), ' / ', m.control_id ? el('code', {}, m.control_id) : DASH),
      el('dt', {}, 'Sender'), el('dd', {}, `${dash(m.sending_application)} / ${dash(m.sending_facility)}`),
      el('dt', {}, 'Version / charset'), el('dd', {}, `${dash(m.version)} / ${dash(m.charset)}`),
      el('dt', {}, 'Size'), el('dd', {}, `${dash(m.size)} bytes`, m.truncated ? ' (truncated)' : ''),
      el('dt', {}, 'Config version'), el('dd', {}, m.config_version ? el('code', {}, m.config_version) : DASH))),
    el('div', { class: 'panel' }, el('h3', {}, 'Message as received ', el('span', { class: 'muted hint' }, 'hover a field for its name')), hl7View(m.raw, 'raw', dict)),
    el('div', { class: 'panel' }, el('h3', {}, 'Answer sent ', m.ack_code ? pill(m.ack_code, m.ack_code === 'AA' || m.ack_code === 'CA' ? 'delivered' : 'failed') : null),
      m.ack ? hl7View(m.ack, 'ack', dict) : el('p', { class: 'muted' }, 'No answer recorded.'),
      (m.errors || []).length ? el('ul', { class: 'error' }, m.errors.map((e) => el('li', {}, e))) : null),
    el('div', { class: 'panel' }, el('h3', {}, 'Deliveries'),
      (m.deliveries || []).length ? table(['Destination', 'Status', { label: 'Attempts', num: true }, 'Detail'],
        m.deliveries.map((d) => el('tr', { dataset: { destination: d.destination } },
          el('td', {}, d.destination), el('td', {}, pill(d.status)), el('td', { class: 'num' }, dash(d.attempts)), el('td', {}, dash(d.detail)))),
        { id: 'deliveries' }) : el('p', { class: 'muted' }, 'Not routed to any destination.')),
    el('div', { class: 'panel' }, el('h3', {}, 'Attempts ', el('span', { class: 'muted hint' }, 'with each answer the destination gave')),
      (m.attempts || []).length ? table(['When', 'Destination', { label: '#', num: true }, 'Outcome', 'HTTP', { label: 'ms', num: true }, 'Detail'],
        attemptRows(m.attempts, dict), { id: 'attempts' }) : el('p', { class: 'muted' }, 'No attempts yet.')),
    el('div', { class: 'panel' }, el('h3', {}, 'Rendered payloads'),
      (m.payloads || []).length ? m.payloads.map((pl) => el('div', {},
        el('p', {}, el('strong', {}, pl.destination), ' ', el('span', { class: 'muted' }, `${dash(pl.payload)} \u00b7 ${dash(pl.content_type)} \u00b7 key ${dash(pl.idempotency_key)}`)),
        el('pre', { class: 'payload' }, payloadText(pl)))) : el('p', { class: 'muted' }, 'No payloads (not routed, or already pruned).')));
}

// ---- dead letters --------------------------------------------------------------------

async function deadLetterAction(action, items) {
  const body = items === 'all' ? { all: true } : { items };
  const r = await api('/api/dead-letters/' + action, { method: 'POST', body });
  if (action === 'retry') notice(`Retried ${r.retried} delivery(ies).`);
  else notice(`Discarded ${r.discarded} delivery(ies).`);
  await renderDeadLetters();
}

async function renderDeadLetters() {
  const data = await api('/api/dead-letters?limit=500');
  if (state.view !== 'dead-letters') return;
  const act = (action, items, confirmText) => async (e) => {
    e.stopPropagation();
    if (confirmText && !confirm(confirmText)) return;
    e.target.disabled = true;
    try { await deadLetterAction(action, items); } catch (err) { fail(err); e.target.disabled = false; }
  };
  const rows = data.items.map((d) => el('tr', { class: 'dead-letter', dataset: { destination: d.destination, seq: d.seq, id: d.message_id } },
    el('td', {}, dash(when(d.created_at))),
    el('td', {}, dash(d.destination)),
    el('td', {}, el('a', { href: '#/message/' + d.message_id }, d.message_id)),
    el('td', {}, dash(d.payload)),
    el('td', { class: 'num' }, dash(d.attempts)),
    el('td', { class: 'error' }, dash(d.reason)),
    el('td', {}, el('div', { class: 'actions' },
      el('button', { class: 'retry', onclick: act('retry', [{ destination: d.destination, seq: d.seq, node: d.node }]) }, 'Retry'),
      el('button', { class: 'danger discard', onclick: act('discard', [{ destination: d.destination, seq: d.seq, node: d.node }], 'Discard this delivery for good?') }, 'Discard')))));
  show(el('div', { class: 'panel' },
    el('div', { class: 'toolbar' },
      el('h2', { class: 'grow' }, `Dead letters (${data.count})`),
      el('button', { class: 'secondary', onclick: () => renderDeadLetters().catch(fail) }, 'Refresh'),
      el('button', { disabled: !data.count, onclick: act('retry', 'all', `Retry all ${data.count} dead letters?`) }, 'Retry all')),
    rows.length ? table(['Created', 'Destination', 'Message', 'Payload', { label: 'Attempts', num: true }, 'Reason', ''], rows, { id: 'dead-table' })
      : el('p', { class: 'empty', id: 'dead-empty' }, 'No dead letters. Every delivery either went through or is still being tried.')));
}

// ---- radiology ------------------------------------------------------------------------

// A DICOM person name (Family^Given^Middle^Prefix^Suffix) as "Family, Given Middle".
function personName(pn) {
  const c = String(pn || '').split('=')[0].split('^');
  const given = [c[1], c[2]].filter((x) => x).join(' ');
  if (c[0] && given) return `${c[0]}, ${given}`;
  return c[0] || given || '';
}

// A DICOM date (YYYYMMDD) and time (HHMM[SS]) as "YYYY-MM-DD HH:MM".
function dicomWhen(date, time) {
  const d = String(date || '');
  if (d.length !== 8) return d;
  const t = String(time || '');
  const day = `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}`;
  return t.length >= 4 ? `${day} ${t.slice(0, 2)}:${t.slice(2, 4)}` : day;
}

const PERFORMED_PILL = { in_progress: 'pending', completed: 'delivered', discontinued: 'failed' };

async function renderRadiology() {
  const [wl, st] = await Promise.all([api('/api/dicom/worklist'), api('/api/dicom/studies?limit=200')]);
  if (state.view !== 'radiology') return;
  const patient = (id, name) => patientCell({ name: personName(name), mrn: id });
  const items = wl.items.map((i) => el('tr', { class: 'worklist-item', dataset: { accession: i.accession_number, worklist: i.worklist } },
    el('td', {}, dash(dicomWhen(i.start_date, i.start_time))),
    el('td', {}, dash(i.worklist)),
    patient(i.patient_id, i.patient_name),
    el('td', {}, el('code', {}, dash(i.accession_number))),
    el('td', {}, dash(i.requested_procedure)),
    el('td', {}, dash(i.modality)),
    el('td', {}, dash(i.station_ae_title)),
    el('td', { class: 'performed' }, i.performed ? pill(i.performed.replace('_', ' '), PERFORMED_PILL[i.performed] || 'pending') : el('span', { class: 'muted' }, 'scheduled'))));
  const studies = st.items.map((s) => el('tr', {
    class: 'study', dataset: { study: s.study_instance_uid, channel: s.channel },
    title: s.series.map((x) => `${x.uid} ${x.modality}: ${x.instances}`).join('\n'),
  },
  el('td', {}, dash(when(s.last_at))),
  el('td', {}, dash(s.channel)),
  patient(s.patient_id, s.patient_name),
  el('td', {}, s.accession_number ? el('code', {}, s.accession_number) : DASH),
  el('td', {}, dash(s.modalities.join(', '))),
  el('td', { class: 'num series' }, s.number_of_series),
  el('td', { class: 'num instances' }, s.number_of_instances),
  el('td', { class: 'study-status' }, pill(s.status, s.status === 'announced' ? 'delivered' : 'pending')),
  el('td', {}, el('code', { class: 'muted' }, s.study_instance_uid))));
  show(el('section', { class: 'panel' },
    el('div', { class: 'toolbar' }, el('h2', { class: 'grow' }, `Worklist (${wl.count})`), el('span', { class: 'muted' }, 'Refreshes every 10 s')),
    items.length
      ? table(['Scheduled', 'Worklist', 'Patient', 'Accession', 'Procedure', 'Modality', 'Station AE', 'Performed'], items, { id: 'worklist-table' })
      : el('p', { class: 'empty', id: 'worklist-empty' }, 'No scheduled procedure steps: orders routed to a worklist destination appear here.')),
  el('section', { class: 'panel' },
    el('h2', {}, `Studies received (${st.total})`),
    studies.length
      ? table(['Last image', 'Channel', 'Patient', 'Accession', 'Modalities', { label: 'Series', num: true }, { label: 'Images', num: true }, 'Status', 'Study UID'], studies, { id: 'studies-table' })
      : el('p', { class: 'empty', id: 'studies-empty' }, 'No studies received: images stored by a dicom_store source appear here.')));
}

// ---- statistics ----------------------------------------------------------------------

function split(counts) {
  let ok = 0; let bad = 0; let other = 0;
  for (const [k, v] of Object.entries(counts || {})) {
    if (OK_STATUSES.includes(k)) ok += v; else if (BAD_STATUSES.includes(k)) bad += v; else other += v;
  }
  return { ok, bad, other, total: ok + bad + other };
}

function stackedBar(counts, max, width, height) {
  const s = split(counts);
  const scale = max ? width / max : 0;
  let x = 0;
  const parts = [];
  for (const [n, cls] of [[s.ok, 'bar-ok'], [s.other, 'bar-other'], [s.bad, 'bar-bad']]) {
    if (!n) continue;
    parts.push(svg('rect', { x, y: 0, width: Math.max(n * scale, 1), height, class: cls }));
    x += n * scale;
  }
  return parts;
}

function legend() {
  return el('div', { class: 'legend' },
    el('span', {}, el('i', { class: 'ok' }), 'received / routed / delivered / filtered'),
    el('span', {}, el('i', { class: 'other' }), 'retrying'),
    el('span', {}, el('i', { class: 'bad' }), 'failed / rejected'));
}

function timeChart(data) {
  const W = 960; const H = 180; const pad = 24;
  const n = data.buckets.length;
  const max = Math.max(1, ...data.buckets.map((b) => b.total));
  const bw = (W - pad) / n;
  const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H + 20}`, role: 'img', 'aria-label': 'Messages per time bucket' });
  chart.append(svg('text', { x: 0, y: 10 }, String(max)));
  data.buckets.forEach((b, i) => {
    const s = split(b.by_status);
    const x = pad + i * bw + 1;
    let y = H;
    for (const [v, cls] of [[s.ok, 'bar-ok'], [s.other, 'bar-other'], [s.bad, 'bar-bad']]) {
      if (!v) continue;
      const h = (v / max) * (H - 14);
      y -= h;
      chart.append(svg('rect', { x, y, width: Math.max(bw - 2, 1), height: h, class: cls },
        svg('title', {}, `${when(b.start_ms)}: ${b.total} message(s)`)));
    }
    if (i % Math.ceil(n / 8) === 0) {
      const d = new Date(b.start_ms);
      const label = data.window === '7d' ? `${d.getMonth() + 1}/${d.getDate()} ${String(d.getHours()).padStart(2, '0')}h`
        : `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
      chart.append(svg('text', { x, y: H + 14 }, label));
    }
  });
  return chart;
}

function hbars(rows) {
  const max = Math.max(1, ...rows.map((r) => split(r.counts).total));
  return rows.map((r) => el('div', { class: 'hbar' },
    el('span', {}, r.label),
    (() => { const s = svg('svg', { viewBox: '0 0 300 14', preserveAspectRatio: 'none' }); s.append(...stackedBar(r.counts, max, 300, 14)); return s; })(),
    el('span', { class: 'num' }, split(r.counts).total)));
}

async function renderStats(windowName) {
  const w = windowName || sessionStorage.getItem('switchboard.window') || '24h';
  const data = await api('/api/stats?window=' + encodeURIComponent(w));
  if (state.view !== 'stats') return;
  const s = split(data.by_status);
  const select = el('select', { id: 'stats-window', onchange: (e) => { sessionStorage.setItem('switchboard.window', e.target.value); renderStats(e.target.value).catch(fail); } },
    [['1h', 'Last hour'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days']].map(([v, t]) => el('option', { value: v, selected: v === data.window }, t)));
  const rate = s.total ? ((100 * s.ok) / s.total).toFixed(1) + '%' : '\u2013';
  show(
    el('div', { class: 'toolbar' }, el('h2', { class: 'grow' }, 'Statistics'), select),
    el('div', { class: 'cards' },
      el('div', { class: 'panel' }, el('div', { class: 'muted' }, 'Messages'), el('div', { class: 'big', id: 'stats-total' }, data.total)),
      el('div', { class: 'panel' }, el('div', { class: 'muted' }, 'Not failed or rejected'), el('div', { class: 'big' }, rate)),
      el('div', { class: 'panel' }, el('div', { class: 'muted' }, 'Failed / rejected'), el('div', { class: 'big' }, s.bad)),
      el('div', { class: 'panel' }, el('div', { class: 'muted' }, 'By status'), statusPills(data.by_status))),
    el('div', { class: 'panel' }, el('h3', {}, `Messages per ${data.bucket_secs >= 3600 ? data.bucket_secs / 3600 + ' h' : data.bucket_secs / 60 + ' min'}`), legend(), timeChart(data),
      data.truncated ? el('p', { class: 'muted' }, `Only the newest ${data.scanned} messages were counted.`) : null),
    el('div', { class: 'grid' },
      el('div', { class: 'panel' }, el('h3', {}, 'By channel'),
        data.channels.length ? hbars(data.channels.map((c) => ({ label: c.channel, counts: c.by_status }))) : el('p', { class: 'empty' }, 'No messages in this window.')),
      el('div', { class: 'panel' }, el('h3', {}, 'By message type'),
        data.message_types.length ? hbars(data.message_types.map((t) => ({ label: t.message_type, counts: { received: t.count } }))) : el('p', { class: 'empty' }, 'No messages in this window.')),
      el('div', { class: 'panel' }, el('h3', {}, 'By destination'),
        data.destinations.length ? table(['Destination', { label: 'Delivered', num: true }, { label: 'Pending', num: true }, { label: 'Dead letter', num: true }, { label: 'Success', num: true }],
          data.destinations.map((d) => {
            const c = d.by_status; const done = (c.delivered || 0) + (c.dead_letter || 0) + (c.discarded || 0);
            return el('tr', {}, el('td', {}, d.destination), el('td', { class: 'num' }, c.delivered || 0), el('td', { class: 'num' }, c.pending || 0),
              el('td', { class: 'num' }, (c.dead_letter || 0) + (c.discarded || 0)), el('td', { class: 'num' }, done ? ((100 * (c.delivered || 0)) / done).toFixed(1) + '%' : '\u2013'));
          })) : el('p', { class: 'empty' }, 'No deliveries in this window.'))));
}

// ---- routing -------------------------------------------------------------------------

function fail(e) { notice(String((e && e.message) || e), true); }

function route() {
  document.getElementById('notice').hidden = true;
  if (state.nextNotice) { notice(state.nextNotice); state.nextNotice = null; }
  clearInterval(state.timer);
  state.timer = null;
  const parts = (location.hash || '#/channels').slice(2).split('/');
  const view = parts[0] || 'channels';
  state.view = view;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === view);
  let work;
  switch (view) {
    case 'live': renderLive(); return;
    case 'search': work = renderSearch(); break;
    case 'message': work = renderMessage(parts[1] || ''); break;
    case 'dead-letters': work = renderDeadLetters(); break;
    case 'radiology': work = renderRadiology(); state.timer = setInterval(() => renderRadiology().catch(fail), 10000); break;
    case 'stats': work = renderStats(); state.timer = setInterval(() => renderStats().catch(fail), 30000); break;
    default:
      state.view = 'channels';
      work = renderChannels();
      state.timer = setInterval(() => renderChannels().catch(fail), 5000);
  }
  work.catch(fail);
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('token-form').addEventListener('submit', tokenEntered);
  window.addEventListener('hashchange', route);
  route();
  // Probe once so a missing token is asked for before the event stream needs it.
  api('/api/channels').then(() => { startEvents(); showWhoami(); }, () => startEvents());
});
