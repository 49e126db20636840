// home.js — the chat app at /home. Holds the page state (who I am, subscribed rooms,
// the open room, last id seen per room, unread counts, the outbox of unacknowledged
// sends) and turns server events into DOM updates via render.js / sidebar.js.
// The connection itself (WebSocket or polling) lives in transport.js.
import { api, roomPath } from './api.js';
import { Feed, el, onlineItem } from './render.js';
import { setupSearch } from './search.js';
import { Outbox } from './outbox.js';
import { RoomList, setupNewRoomForm } from './sidebar.js';
import { Transport } from './transport.js';
import { TypingIndicator } from './typing.js';

const PAGE = 50;
const TYPING_SEND_EVERY_MS = 2_000;
const TYPING_SHOWN_FOR_MS = 3_000;
const ERROR_SHOWN_FOR_MS = 8_000;
const STATE_LABELS = {
  connecting: 'connecting…',
  connected: 'connected',
  reconnecting: 'reconnecting…',
  polling: 'polling',
  offline: 'offline',
};

const $ = (id) => document.getElementById(id);
const ui = {
  whoami: $('whoami'),
  logout: $('logout'),
  connState: $('conn-state'),
  roomTitle: $('room-title'),
  subscribe: $('subscribe'),
  onlineBar: $('online-bar'),
  online: $('online'),
  appError: $('app-error'),
  historyStatus: $('history-status'),
  messages: $('messages'),
  typing: $('typing'),
  composer: $('composer'),
  input: $('message-input'),
  send: document.querySelector('#composer button[type="submit"]'),
};

const state = {
  me: null, // {username, guest}
  subscribed: [], // room names, in list order
  current: null, // the open room
  lastId: new Map(), // room -> highest message id seen
  unread: new Map(), // room -> count
  online: new Map(), // room -> Set of usernames (unknown while polling)
  outbox: null, // Outbox, once we know who we are
  openSeq: 0, // bumps on every room switch; stale async results are dropped
  hasOlder: false,
  loadingOlder: false,
  lastTypingSent: 0,
  ended: false,
};

const feed = new Feed(ui.messages, (msg) => sameUser(msg.user, state.me.username));
const roomList = new RoomList($('room-list'), $('room-list-empty'), {
  onOpen: (room) => openRoom(room),
  onUnsubscribe: (room) => unsubscribe(room),
});
const typing = new TypingIndicator(ui.typing, TYPING_SHOWN_FOR_MS);
let transport = null;
let errorTimer = null;

// ---- small helpers -------------------------------------------------------------------------

function sameUser(a, b) {
  return String(a).toLowerCase() === String(b).toLowerCase();
}

const isSubscribed = (room) => state.subscribed.includes(room);

function showError(message) {
  ui.appError.textContent = message;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => (ui.appError.textContent = ''), ERROR_SHOWN_FOR_MS);
}

function sessionEnded() {
  if (state.ended) return;
  state.ended = true;
  location.assign('/');
}

/** Reports an API failure; a 401 means the session is over. */
function failed(error) {
  if (error.status === 401) sessionEnded();
  else showError(error.message);
}

function updateDocumentTitle() {
  let total = 0;
  for (const count of state.unread.values()) total += count;
  const room = state.current ? `#${state.current} · ` : '';
  document.title = `${total ? `(${total}) ` : ''}${room}chatroom`;
}

// ---- sending: the outbox holds every send until the server echoes its client_id --------

function acknowledge(clientId) {
  if (state.outbox.remove(clientId)) feed.removePending(clientId);
}

function resendOutbox() {
  for (const entry of state.outbox.all()) transport.send(entry);
}

function sendMessage() {
  const text = ui.input.value.trim();
  if (!text || !state.current) return;
  const entry = state.outbox.add(state.current, text);
  feed.showPending(entry, state.me.username);
  feed.scrollToBottom();
  ui.input.value = '';
  state.lastTypingSent = 0;
  transport.send(entry); // if the link is down, onReady re-sends it
}

// ---- incoming events -----------------------------------------------------------------------

function onEvent(event) {
  switch (event.type) {
    case 'joined': {
      const history = event.history || [];
      setOnline(event.room, event.online);
      ingest(event.room, history, false);
      if (event.has_more && history.length) fillGap(event.room, history[history.length - 1].id);
      break;
    }
    case 'history':
      ingest(event.room, event.messages || [], false);
      break;
    case 'message': {
      const { type, ...msg } = event;
      ingest(msg.room, [msg], true);
      break;
    }
    case 'posted': // our own message, stored; earlier ones may still be unpolled
      ingest(event.message.room, [event.message], true, false);
      break;
    case 'presence':
      onPresence(event);
      break;
    case 'typing':
      onTyping(event);
      break;
    case 'error':
      onServerError(event);
      break;
    default:
      break;
  }
}

/**
 * After a long absence `joined` carries only the first page of what was missed
 * (`has_more`): fetch the rest over HTTP, page by page, oldest first.
 */
async function fillGap(room, afterId) {
  const PAGE = 500;
  let cursor = afterId;
  try {
    for (;;) {
      const { messages } = await api('GET', `/api/rooms/${roomPath(room)}/messages?after=${cursor}&limit=${PAGE}`);
      if (!messages.length) return;
      ingest(room, messages, false);
      cursor = messages[messages.length - 1].id;
      if (messages.length < PAGE) return;
    }
  } catch (err) {
    showError(`Could not load missed messages: ${err.message}`);
  }
}

/**
 * Takes messages of one room from any source. Remembers the highest id (for resuming —
 * only from sources with no holes, hence `advance`), acknowledges our own sends, draws
 * them if the room is open, and otherwise counts the new ones as unread: live messages
 * always, history only when it fills a gap.
 */
function ingest(room, messages, live, advance = true) {
  const previous = state.lastId.get(room);
  let highest = previous ?? 0;
  const fresh = [];
  for (const msg of messages) {
    if (!Number.isFinite(msg.id)) continue;
    if (previous === undefined || msg.id > previous) fresh.push(msg);
    highest = Math.max(highest, msg.id);
    acknowledge(msg.client_id);
  }
  if (advance) state.lastId.set(room, highest);

  if (room === state.current) {
    const stick = feed.nearBottom();
    feed.add(messages);
    if (stick) feed.scrollToBottom();
    for (const msg of fresh) typing.stop(msg.user);
  } else if (isSubscribed(room) && (live || previous !== undefined)) {
    const count = fresh.filter((msg) => !sameUser(msg.user, state.me.username)).length;
    if (count) setUnread(room, (state.unread.get(room) || 0) + count);
  }
}

function setUnread(room, count) {
  state.unread.set(room, count);
  roomList.setUnread(room, count);
  updateDocumentTitle();
}

function setOnline(room, users) {
  if (Array.isArray(users)) state.online.set(room, new Set(users.map(String)));
  if (room === state.current) renderOnline();
}

function renderOnline() {
  const users = state.current && state.online.get(state.current);
  const known = users && transport && transport.mode === 'ws';
  ui.onlineBar.hidden = !known;
  if (!known) return;
  const sorted = [...users].sort((a, b) => a.localeCompare(b));
  ui.online.replaceChildren(...sorted.map((user) => onlineItem(user, sameUser(user, state.me.username))));
}

function onPresence({ room, user, online }) {
  const users = state.online.get(room) || new Set();
  state.online.set(room, users);
  for (const name of [...users]) if (sameUser(name, user)) users.delete(name);
  if (online) users.add(String(user));
  if (room !== state.current) return;
  renderOnline();
  if (sameUser(user, state.me.username)) return;
  const stick = feed.nearBottom();
  feed.notice(`${user} ${online ? 'joined' : 'left'}`);
  if (!online) typing.stop(user);
  if (stick) feed.scrollToBottom();
}

function onTyping({ room, user }) {
  if (room === state.current && !sameUser(user, state.me.username)) typing.saw(user);
}

function onServerError(event) {
  const entry = event.client_id && state.outbox.get(event.client_id);
  if (!entry) {
    showError(event.message || 'Something went wrong.');
    return;
  }
  state.outbox.remove(entry.client_id);
  if (entry.room === state.current) {
    feed.showPending({ ...entry, error: event.message || 'rejected' }, state.me.username);
  } else {
    showError(`Message to ${entry.room} not sent: ${event.message}`);
  }
}

function onConnectionState(connection) {
  ui.connState.dataset.state = connection;
  ui.connState.textContent = STATE_LABELS[connection] || connection;
  renderOnline();
}

// ---- rooms ---------------------------------------------------------------------------------

function roomsForTransport() {
  const all = new Set(state.subscribed);
  if (state.current) all.add(state.current);
  for (const entry of state.outbox.all()) all.add(entry.room);
  return { open: state.current, all: [...all], lastId: (room) => state.lastId.get(room) };
}

function showRoomHeader() {
  const room = state.current;
  ui.roomTitle.textContent = room ?? 'No room open';
  ui.subscribe.hidden = !room || isSubscribed(room);
  ui.input.disabled = !room;
  ui.send.disabled = !room;
}

async function openRoom(room) {
  if (room === state.current) return;
  const previous = state.current;
  if (previous && !isSubscribed(previous) && transport) transport.leave(previous);
  const seq = ++state.openSeq;
  state.current = room;
  state.hasOlder = false;
  state.loadingOlder = false;
  setUnread(room, 0);
  roomList.setActive(room);
  showRoomHeader();
  typing.clear();
  feed.clear();
  renderOnline();
  for (const entry of state.outbox.all()) {
    if (entry.room === room) feed.showPending(entry, state.me.username);
  }
  ui.historyStatus.textContent = 'Loading messages…';
  if (!isSubscribed(room) && transport) transport.join(room);
  await loadLatest(room, seq);
}

async function loadLatest(room, seq) {
  try {
    const data = await api('GET', `/api/rooms/${roomPath(room)}/messages?limit=${PAGE}`);
    if (seq !== state.openSeq) return;
    const messages = (data && data.messages) || [];
    ingest(room, messages, false);
    feed.scrollToBottom();
    state.hasOlder = messages.length >= PAGE;
    showHistoryStatus();
    fillViewport();
  } catch (error) {
    if (seq !== state.openSeq) return;
    ui.historyStatus.textContent = '';
    failed(error);
  }
}

/** Scrolling to the top loads one more page of older messages, keeping the view still. */
async function loadOlder() {
  const before = feed.oldestId;
  if (!state.hasOlder || state.loadingOlder || !state.current || before === undefined) return;
  const seq = state.openSeq;
  const room = state.current;
  state.loadingOlder = true;
  showHistoryStatus();
  let loaded = false;
  try {
    const query = `before=${before}&limit=${PAGE}`;
    const data = await api('GET', `/api/rooms/${roomPath(room)}/messages?${query}`);
    if (seq !== state.openSeq) return;
    const messages = (data && data.messages) || [];
    feed.prepend(messages);
    state.hasOlder = messages.length >= PAGE;
    loaded = true;
  } catch (error) {
    if (seq === state.openSeq) failed(error);
  }
  if (seq !== state.openSeq) return;
  state.loadingOlder = false;
  showHistoryStatus();
  if (loaded) fillViewport(); // after a failure, wait for the user to scroll again
}

/** If the messages do not fill the feed there is no scrollbar to pull: load one more page. */
function fillViewport() {
  const box = ui.messages;
  if (state.hasOlder && box.scrollHeight <= box.clientHeight + 10) loadOlder();
}

function showHistoryStatus() {
  if (state.loadingOlder) ui.historyStatus.textContent = 'Loading older messages…';
  else if (state.hasOlder) ui.historyStatus.textContent = '';
  else ui.historyStatus.textContent = `This is the beginning of ${state.current}.`;
}

function addSubscription(room) {
  if (isSubscribed(room)) return;
  state.subscribed.push(room);
  roomList.add(room);
  roomList.setActive(state.current);
  if (room !== state.current) transport?.join(room);
  showRoomHeader();
}

async function subscribe(room) {
  await api('PUT', `/api/subscriptions/${roomPath(room)}`, {});
  addSubscription(room);
}

async function unsubscribe(room) {
  try {
    await api('DELETE', `/api/subscriptions/${roomPath(room)}`, {});
  } catch (error) {
    failed(error);
    return;
  }
  state.subscribed = state.subscribed.filter((name) => name !== room);
  state.unread.delete(room);
  updateDocumentTitle();
  const next = roomList.remove(room);
  if (room !== state.current) transport?.leave(room);
  showRoomHeader();
  (next || $('room-search')).focus();
}

/**
 * Creates a room (an existing one is fine), subscribes to it and opens it. Throws if the
 * room cannot be had (e.g. an invalid name); a failed subscribe is shown but still opens it.
 */
async function createRoom(name) {
  let room = name;
  try {
    const created = await api('POST', '/api/rooms', { name });
    if (created && created.name) room = created.name;
  } catch (error) {
    if (error.status === 401) sessionEnded();
    if (error.status !== 409) throw error;
  }
  try {
    await subscribe(room);
  } catch (error) {
    failed(error);
  }
  await openRoom(room);
}

/** `?room=name` at start: create it if needed, subscribe, open. Returns the room or null. */
async function enterRoomFromUrl(name) {
  if (isSubscribed(name)) return name;
  try {
    await createRoom(name);
    return name;
  } catch (error) {
    failed({ status: error.status, message: `Cannot open room “${name}”: ${error.message}` });
    return null;
  }
}

// ---- wiring --------------------------------------------------------------------------------

function wireComposer() {
  ui.composer.addEventListener('submit', (event) => {
    event.preventDefault();
    sendMessage();
    ui.input.focus();
  });
  ui.input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  ui.input.addEventListener('input', () => {
    const now = Date.now();
    if (!state.current || !ui.input.value || now - state.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    state.lastTypingSent = now;
    transport.typing(state.current);
  });
}

function wireHeaderAndFeed() {
  ui.logout.addEventListener('click', async () => {
    ui.logout.disabled = true;
    try {
      await api('POST', '/api/logout', {});
    } catch (error) {
      if (error.status !== 401) {
        ui.logout.disabled = false;
        showError(error.message);
        return;
      }
    }
    state.outbox?.clear();
    sessionEnded();
  });
  ui.subscribe.addEventListener('click', async () => {
    try {
      await subscribe(state.current);
      ui.input.focus();
    } catch (error) {
      failed(error);
    }
  });
  ui.messages.addEventListener('scroll', () => {
    if (ui.messages.scrollTop < 100) loadOlder();
  });
  setupSearch($('room-search'), $('search-results'), async (room) => {
    await openRoom(room);
  });
  setupNewRoomForm($('new-room'), $('new-room-form'), async (name) => {
    await createRoom(name);
    ui.input.focus();
  });
}

async function start() {
  wireComposer();
  wireHeaderAndFeed();
  try {
    state.me = await api('GET', '/api/me');
  } catch (error) {
    if (error.status === 401) location.replace('/');
    else showError(error.message);
    return;
  }
  ui.whoami.textContent = state.me.username;
  ui.whoami.dataset.guest = String(Boolean(state.me.guest));
  if (state.me.guest) ui.whoami.after(' ', el('span', { class: 'guest-tag' }, 'guest'));
  state.outbox = new Outbox(state.me.username);

  try {
    const subscriptions = await api('GET', '/api/subscriptions');
    for (const { name } of subscriptions || []) addSubscription(name);
  } catch (error) {
    failed(error);
  }
  roomList.updateEmpty();

  const params = new URLSearchParams(location.search);
  transport = new Transport({
    forcePolling: params.get('transport') === 'polling',
    rooms: roomsForTransport,
    onEvent,
    onState: onConnectionState,
    onReady: resendOutbox,
    onSessionEnded: sessionEnded,
  });

  const wanted = (params.get('room') || '').trim();
  const room = (wanted && (await enterRoomFromUrl(wanted))) || state.subscribed[0] || null;
  if (params.has('room')) {
    // Handled once: a reload must not re-subscribe to a room the user has since left.
    params.delete('room');
    const query = params.toString();
    history.replaceState(null, '', location.pathname + (query ? `?${query}` : '') + location.hash);
  }
  if (room) openRoom(room);
  else ui.historyStatus.textContent = 'Open a room: search for one above, or create one with +.';
  showRoomHeader();
  updateDocumentTitle();
  transport.start();
}

start();
