// home.js — the chat app at /home. Holds the page state (who I am, subscribed rooms,
// the open room, last seq seen per room, read markers and unread counts, the outbox of
// unacknowledged sends) and turns server events into DOM updates via render.js /
// sidebar.js. The connection itself (WebSocket or polling) lives in transport.js; editing
// and deleting one's own messages in editing.js; the read-marker bookkeeping in unread.js;
// a private room's members in members.js; `@` mentions (highlight, autocomplete,
// notifications) in mentions.js; searching messages in message_search.js; the thread
// panel in threads.js. Reactions (the emoji picker, chips that toggle) are wired here for
// both feeds. A reply is not in the main feed: its parent's "N replies" counts it when it
// comes live (a page opened later gets the counts from the server).
//
// Direct messages are listed apart from the rooms (GET /api/dms) but are otherwise rooms
// like any other: joined on the socket, counted, opened the same way. A `mention` frame
// for a room not being read bumps its mention badge; one for a direct message not listed
// yet lists it. A `member` frame that removes the user takes the room off the page.
//
// Reading: while the tab is visible, the open room is being read. Whatever it shows is
// then read, and the page moves the user's read marker to its newest message (at most
// once a second per room); the user's other pages hear of it and clear their counts. A
// room opened with messages after the marker shows a "New messages" line before the
// first of them until another room is opened.
import { api, roomPath } from './api.js';
import { MessageActions } from './editing.js';
import { MembersPanel } from './members.js';
import { MentionSuggest, Notifier, mentionsMe } from './mentions.js';
import { MessageSearch } from './message_search.js';
import { Feed, el, emojiPicker, onlineItem } from './render.js';
import { setupSearch } from './search.js';
import { Outbox } from './outbox.js';
import { RoomList, setupNewRoomForm } from './sidebar.js';
import { ThreadPanel } from './threads.js';
import { Transport } from './transport.js';
import { TypingIndicator } from './typing.js';
import { ReadState } from './unread.js';

const PAGE = 50;
const GAP_PAGE = 500;
const TYPING_SEND_EVERY_MS = 2_000;
const TYPING_SHOWN_FOR_MS = 3_000;
const ERROR_SHOWN_FOR_MS = 8_000;
const READ_SEND_EVERY_MS = 1_000;
const RECOUNT_AFTER_MS = 300;
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
  roomPrivate: $('room-private'),
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
  dms: new Map(), // direct message room -> the other member's name
  current: null, // the open room
  lastSeq: new Map(), // room -> the seq up to which every event of the room was seen
  gaps: new Map(), // room -> {liveFrom, liveMax} while missed events are fetched over HTTP
  readSends: new Map(), // room -> {at, id, timer}: read markers on their way (throttled)
  recount: null, // {timer, again}: unread counts being asked of the server again
  online: new Map(), // room -> Set of usernames (unknown while polling)
  outbox: null, // Outbox, once we know who we are
  openSeq: 0, // bumps on every room switch; stale async results are dropped
  shown: false, // the open room's first page is shown (marking it read may begin)
  unreadLinePending: false, // its read marker comes with `joined` (a room not subscribed)
  hasOlder: false,
  loadingOlder: false,
  lastTypingSent: 0,
  ended: false,
};

const feed = new Feed(ui.messages, (msg) => msg.user != null && sameUser(msg.user, state.me.username));
feed.mentionsMe = (text) => mentionsMe(text, state.me.username);
feed.isMe = (user) => user != null && sameUser(user, state.me.username);
const threads = new ThreadPanel(
  {
    panel: $('thread-panel'),
    messages: $('thread-messages'),
    form: $('thread-composer'),
    close: $('thread-close'),
    title: $('thread-title'),
  },
  {
    isMine: (msg) => msg.user != null && sameUser(msg.user, state.me.username),
    isMe: feed.isMe,
    mentionsMe: feed.mentionsMe,
    onError: failed,
  },
);
const actions = new MessageActions(feed, {
  save: (id, text) => changeMessage('PATCH', id, { text }),
  remove: (id) => changeMessage('DELETE', id, {}),
  composer: ui.input,
  onError: failed,
});
const roomList = new RoomList($('room-list'), $('room-list-empty'), {
  onOpen: (room) => openRoom(room),
  onUnsubscribe: (room) => unsubscribe(room),
});
const dmList = new RoomList($('dm-list'), $('dm-list-empty'), { onOpen: (room) => openRoom(room), dm: true });
const members = new MembersPanel(
  {
    toggle: $('members-toggle'),
    panel: $('members-panel'),
    list: $('member-list'),
    form: $('add-member-form'),
    badge: ui.roomPrivate,
  },
  { me: () => state.me.username, onError: failed },
);
const suggest = new MentionSuggest(ui.input, $('mention-suggestions'), mentionCandidates);
const notifier = new Notifier($('enable-notifications'), (room) => openRoom(room));
const messageSearch = new MessageSearch(
  {
    form: $('message-search-form'),
    panel: $('search-panel'),
    title: $('search-title'),
    list: $('search-hits'),
    more: $('search-more'),
    close: $('search-close'),
  },
  {
    onOpen: (room, id) => openAt(room, id),
    onError: failed,
    label: (room) => `${state.dms.has(room) ? '@' : '#'}${roomLabel(room)}`,
  },
);
const typing = new TypingIndicator(ui.typing, TYPING_SHOWN_FOR_MS);
const reads = new ReadState((room) => {
  (state.dms.has(room) ? dmList : roomList).setUnread(room, reads.count(room), reads.mentions(room));
  updateDocumentTitle();
});
let transport = null;
let errorTimer = null;

// ---- small helpers -------------------------------------------------------------------------

function sameUser(a, b) {
  return String(a).toLowerCase() === String(b).toLowerCase();
}

const isSubscribed = (room) => state.subscribed.includes(room);
/** In the sidebar: a subscribed room or a direct message (both joined and counted). */
const isListed = (room) => isSubscribed(room) || state.dms.has(room);
/** What the page calls a room: a direct message by the other member's name. */
const roomLabel = (room) => (state.dms.has(room) ? state.dms.get(room) : room);
const hasModifier = (event) => event.shiftKey || event.altKey || event.ctrlKey || event.metaKey;

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
  const total = reads.total([...state.subscribed, ...state.dms.keys()]);
  const room = state.current ? `${state.dms.has(state.current) ? '@' : '#'}${roomLabel(state.current)} · ` : '';
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

// ---- editing and deleting one's own messages ------------------------------------------------

/**
 * PATCH (edit) or DELETE one of our messages in the open room, over HTTP whatever the
 * transport: the answer (the `edited`/`deleted` event) belongs to this request, errors
 * included. The answer is shown at once; the same event also comes through the live link.
 */
async function changeMessage(method, id, body) {
  const room = state.current;
  try {
    const event = await api(method, `/api/rooms/${roomPath(room)}/messages/${id}`, body);
    if (event && event.type) apply(room, [event], false);
  } catch (error) {
    if (error.status === 401) sessionEnded();
    throw error;
  }
}

// ---- incoming events -----------------------------------------------------------------------

const isChange = (item) => item.type === 'edited' || item.type === 'deleted' || item.type === 'reacted';
/** Events about no message's text: members (they only move the room's seq here). */
const isOther = (item) => item.type === 'member';
/** An event's place in its room: its seq (a message's id is the seq of its post). */
const seqOf = (item) => (isChange(item) || isOther(item) ? item.seq : item.id);

function onEvent(event) {
  switch (event.type) {
    case 'joined':
      onJoined(event);
      break;
    case 'history': // polling's first look at a room: its latest messages as they are now
      ingestLatest(event.room, event.messages || []);
      break;
    case 'events': // polling: the room's events after `after`
      apply(event.room, event.events || [], false);
      if (state.lastSeq.get(event.room) === event.after || event.seq > state.lastSeq.get(event.room)) {
        state.lastSeq.set(event.room, event.seq);
      }
      break;
    case 'message':
    case 'edited':
    case 'deleted':
    case 'reacted':
      apply(event.room, [event], true);
      sawLive(event.room, seqOf(event));
      break;
    case 'posted': // our own message, stored; earlier ones may still be unpolled
      apply(event.message.room, [event.message], true);
      break;
    case 'read': // the marker moved: on another of the user's pages, or our PUT's answer
      markerMoved(event.room, event.id);
      break;
    case 'member':
      onMember(event);
      sawLive(event.room, event.seq);
      break;
    case 'mention':
      onMention(event);
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
 * `joined` puts the room at `seq`: with `after`, its history is every event since (up to
 * a page; `has_more` says the rest must be fetched), without it the latest messages.
 */
function onJoined(event) {
  const { room } = event;
  const first = !state.lastSeq.has(room); // then the history is the room's latest messages
  setOnline(room, event.online);
  state.gaps.delete(room); // a fetch still running for an earlier join stops
  if (Number.isFinite(event.read)) {
    if (room === state.current && state.unreadLinePending) showUnreadLine(room, event.read);
    markerMoved(room, event.read);
  }
  apply(room, event.history || [], false);
  if (first) countLatest(room, event.history || []);
  if (Number.isFinite(event.seq)) state.lastSeq.set(room, event.seq);
  if (event.has_more && Number.isFinite(event.seq)) fillGap(room, event.seq);
}

/** A live event: the socket's stream has no holes, so the room is seen up to its seq. */
function sawLive(room, seq) {
  if (!Number.isFinite(seq)) return;
  const gap = state.gaps.get(room);
  if (gap) {
    // Missed events are still being fetched: this one is past them.
    gap.liveFrom ??= seq;
    gap.liveMax = Math.max(gap.liveMax ?? seq, seq);
    return;
  }
  const last = state.lastSeq.get(room);
  if (last === undefined || seq > last) state.lastSeq.set(room, seq);
}

/**
 * After a long absence `joined` carries only the first page of what was missed
 * (`has_more`) while live events already flow from past the rest: fetch the events in
 * between over HTTP, page by page, oldest first, up to the first live one.
 */
async function fillGap(room, after) {
  const gap = { liveFrom: undefined, liveMax: undefined };
  state.gaps.set(room, gap);
  let cursor = after;
  try {
    for (;;) {
      const data = await api('GET', `/api/rooms/${roomPath(room)}/events?after=${cursor}&limit=${GAP_PAGE}`);
      if (state.gaps.get(room) !== gap) return; // joined again meanwhile
      const page = (data && data.events) || [];
      const until = gap.liveFrom ?? Infinity; // from there on, the socket brought them
      apply(room, page.filter((event) => seqOf(event) < until), false);
      cursor = Math.max(cursor, data.seq);
      state.lastSeq.set(room, Math.min(cursor, until - 1));
      if (!data.has_more || !page.length || cursor >= until - 1) break;
    }
    state.gaps.delete(room);
    state.lastSeq.set(room, Math.max(state.lastSeq.get(room), gap.liveMax ?? 0));
  } catch (err) {
    // The gap stays marked: the room's seq stays before it, so the next join asks again.
    if (err.status === 401) sessionEnded();
    else showError(`Could not load missed messages: ${err.message}`);
  }
}

/**
 * A room's latest messages as they are now (polling's first look, or opening a room).
 * A room whose seq is not known yet takes the highest id shown: replaying the events
 * after it changes nothing on screen.
 */
function ingestLatest(room, messages) {
  apply(room, messages, false);
  if (state.lastSeq.has(room)) return;
  countLatest(room, messages);
  let highest = 0;
  for (const msg of messages) if (Number.isFinite(msg.id)) highest = Math.max(highest, msg.id);
  state.lastSeq.set(room, highest);
}

/**
 * Takes one room's items from any source, in seq order: messages (with or without
 * `type: 'message'`) and `edited`/`deleted` events. Acknowledges our own sends and draws
 * them if the room is open. In a subscribed room not being read, new messages from
 * others count as unread — live ones always, others only when they fill a gap (the
 * room's seq was known) — and deletes take them off the count again. Keeping the room's
 * seq is up to the caller, which knows whether its source has holes.
 */
function apply(room, items, live) {
  const known = state.lastSeq.get(room);
  const open = room === state.current;
  const counting = isListed(room) && !isReading(room) && (live || known !== undefined);
  const stick = open && feed.nearBottom();
  for (const item of items) {
    if (isOther(item)) continue;
    if (isChange(item)) {
      if (open) feed.change(item);
      if (item.type === 'deleted' && !reads.remove(room, item.id)) recount();
      continue;
    }
    // Reactions and member changes are not shown yet: only messages are.
    if (item.type !== undefined && item.type !== 'message') continue;
    const { type, ...msg } = item;
    if (!Number.isFinite(msg.id)) continue;
    acknowledge(msg.client_id);
    const fresh = known === undefined || msg.id > known;
    if (open) {
      feed.add([msg]);
      if (fresh && msg.user) typing.stop(msg.user);
      if (msg.thread && live && fresh) feed.replied(msg.thread, msg);
    }
    if (counting && fresh && isOthers(msg)) reads.add(room, msg.id);
  }
  if (stick) feed.scrollToBottom();
  if (open && items.length) readShown(room);
  threads.apply(room, items);
}

// ---- reactions and threads: the buttons on a message, in either feed -----------------------

/** Clicks on React, an emoji, a reaction chip, Reply or "N replies" in a feed of `room()`. */
function wireSocial(root, room) {
  root.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    const node = button && button.closest('.message[data-id]');
    if (!node || !room()) return;
    const id = Number(node.dataset.id);
    switch (button.dataset.action) {
      case 'react': {
        const open = node.querySelector('.emoji-picker');
        if (open) open.remove();
        else node.querySelector('.meta').after(emojiPicker());
        break;
      }
      case 'pick-emoji':
        node.querySelector('.emoji-picker')?.remove();
        transport?.react(room(), id, button.dataset.emoji);
        break;
      case 'toggle-reaction':
        transport?.react(room(), id, button.dataset.emoji);
        break;
      case 'reply':
      case 'open-thread':
        threads.open(room(), id);
        break;
      default:
        break;
    }
  });
  root.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') event.target.closest('.emoji-picker')?.remove();
  });
}

/** A stored message someone else wrote, not deleted. */
const isOthers = (msg) => !msg.deleted && msg.user != null && !sameUser(msg.user, state.me.username);

// ---- reading: read markers and unread counts ----------------------------------------------

/** The user is reading `room`: it is open and the tab is visible. */
function isReading(room) {
  return room === state.current && document.visibilityState === 'visible';
}

/**
 * A room's latest messages, seen for the first time (a first `joined`, polling's first
 * look): if they reach back to the read marker they say exactly which messages are
 * unread, which keeps the count right from here on; if not, the server's count stands.
 */
function countLatest(room, messages) {
  const read = reads.marker(room);
  if (!isListed(room) || isReading(room) || read === undefined) return;
  const ids = messages.map((msg) => msg.id).filter(Number.isFinite);
  if (ids.length && Math.min(...ids) > read + 1) return;
  reads.setExact(room, messages.filter((msg) => msg.id > read && isOthers(msg)).map((msg) => msg.id));
}

/** The user's read marker in `room` is now `id` (it only moves forward). */
function markerMoved(room, id) {
  if (!Number.isFinite(id)) return;
  const pending = state.readSends.get(room);
  if (pending && pending.id <= id) pending.id = 0; // nothing left to say
  if (isReading(room)) reads.readUpTo(room, id);
  else if (!reads.advance(room, id, state.lastSeq.get(room)) && isListed(room)) recount();
}

/**
 * Asks the server for the unread counts again (soon, once for many calls): when a
 * delete or a marker move touched messages counted before the page saw them.
 */
function recount() {
  if (state.recount) {
    state.recount.again = true;
    return;
  }
  const run = { again: false };
  state.recount = run;
  run.timer = setTimeout(async () => {
    try {
      const [rooms, dms] = await Promise.all([api('GET', '/api/subscriptions'), fetchDms()]);
      for (const { name, read, unread, mentions } of [...(rooms || []), ...dms]) {
        if (!isListed(name)) continue;
        if (isReading(name)) reads.readUpTo(name, read);
        else reads.setCounted(name, read, unread, mentions);
      }
    } catch (error) {
      if (error.status === 401) sessionEnded();
    }
    state.recount = null;
    if (run.again) recount();
  }, RECOUNT_AFTER_MS);
}

/**
 * Whatever the open room shows is read if the user is looking at it: its count goes to
 * 0 and the user's marker moves to its newest message — at most once a second per room,
 * the newest one then.
 */
function readShown(room) {
  if (!isReading(room) || !state.shown) return;
  const newest = feed.newestId;
  const before = reads.marker(room) ?? 0;
  reads.readUpTo(room, newest);
  if (newest === undefined || newest <= before) return;
  const send = state.readSends.get(room) || { at: 0, id: 0, timer: null };
  state.readSends.set(room, send);
  send.id = Math.max(send.id, newest);
  if (send.timer) return;
  const wait = send.at + READ_SEND_EVERY_MS - Date.now();
  if (wait <= 0) sendRead(room);
  else send.timer = setTimeout(() => sendRead(room), wait);
}

function sendRead(room) {
  const send = state.readSends.get(room);
  clearTimeout(send.timer);
  send.timer = null;
  if (!send.id || !transport) return;
  send.at = Date.now();
  transport.read(room, send.id);
  send.id = 0;
}

/** Markers still waiting for their second go out now (the page is going away). */
function sendPendingReads() {
  for (const [room, send] of state.readSends) if (send.timer) sendRead(room);
}

/**
 * The "New messages" line of the open room: before the first message after `read` (the
 * marker as it was when the room was opened) that is not one's own. When the unread
 * messages run past the feed's height, the line stays in view.
 */
function showUnreadLine(room, read) {
  state.unreadLinePending = false;
  const line = feed.markUnreadFrom(read, feed.newestId ?? 0);
  if (!line) return;
  const box = ui.messages;
  const top = line.getBoundingClientRect().top - box.getBoundingClientRect().top + box.scrollTop;
  if (top < box.scrollTop) box.scrollTop = Math.max(0, top - 8);
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

// ---- members and mentions -------------------------------------------------------------------

/** A private room's members changed: the panel shows it; a removed user loses the room. */
function onMember({ room, user, by, added }) {
  if (!added && sameUser(user, state.me.username)) {
    removedFrom(room);
    return;
  }
  if (room !== state.current) return;
  members.refresh();
  const stick = feed.nearBottom();
  feed.notice(sameUser(user, by) ? `${by} created the room` : `${by} ${added ? 'added' : 'removed'} ${user}`);
  if (stick) feed.scrollToBottom();
}

/** The user was taken out of a private room: it leaves the sidebar and, if open, the view. */
function removedFrom(room) {
  state.subscribed = state.subscribed.filter((name) => name !== room);
  state.lastSeq.delete(room);
  state.online.delete(room);
  reads.clear(room);
  roomList.remove(room);
  updateDocumentTitle();
  if (room !== state.current) return;
  closeRoom();
  ui.historyStatus.textContent = `You were removed from ${room}.`;
}

/**
 * A message concerns the user (`@name`, `@here`, a direct message, a thread reply). Where
 * they are not reading, the room's mention badge goes up (a direct message counts as
 * unread anyway); one not listed yet is listed; a hidden tab may notify.
 */
function onMention(event) {
  const { room, user, reason } = event;
  if (reason === 'dm' && !state.dms.has(room)) refreshDms();
  if (!isReading(room) && reason !== 'dm') reads.mentioned(room);
  const where = state.dms.has(room) || reason === 'dm' ? 'a direct message' : `#${room}`;
  notifier.notify(event, `${user} ${reason === 'dm' ? 'wrote you' : 'mentioned you'} in ${where}`);
}

/** Who `@` offers: a private room's members, a direct message's two, or who is online. */
function mentionCandidates() {
  const room = state.current;
  if (!room) return [];
  let names;
  if (state.dms.has(room)) names = [state.dms.get(room)];
  else if (members.isPrivate) names = members.members;
  else names = [...(state.online.get(room) || [])];
  return names.filter((name) => !sameUser(name, state.me.username)).sort((a, b) => a.localeCompare(b));
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
  const all = new Set([...state.subscribed, ...state.dms.keys()]);
  if (state.current) all.add(state.current);
  for (const entry of state.outbox.all()) all.add(entry.room);
  return { open: state.current, all: [...all], lastSeq: (room) => state.lastSeq.get(room) };
}

function showRoomHeader() {
  const room = state.current;
  ui.roomTitle.textContent = room ? roomLabel(room) : 'No room open';
  ui.roomTitle.classList.toggle('dm', state.dms.has(room));
  ui.subscribe.hidden = !room || isListed(room);
  ui.input.disabled = !room;
  ui.send.disabled = !room;
}

/** No room open (the one shown is gone). */
function closeRoom() {
  state.current = null;
  state.openSeq += 1;
  roomList.setActive(null);
  dmList.setActive(null);
  showRoomHeader();
  members.show(null);
  typing.clear();
  actions.reset();
  feed.clear();
  threads.close();
  renderOnline();
  updateDocumentTitle();
}

async function openRoom(room) {
  if (room === state.current) return;
  const previous = state.current;
  if (previous && !isListed(previous) && transport) transport.leave(previous);
  const seq = ++state.openSeq;
  state.current = room;
  state.hasOlder = false;
  state.loadingOlder = false;
  state.shown = false;
  state.unreadLinePending = false;
  if (isReading(room)) reads.clear(room);
  roomList.setActive(room);
  dmList.setActive(room);
  showRoomHeader();
  updateDocumentTitle();
  members.show(room, { dm: state.dms.has(room) });
  typing.clear();
  actions.reset();
  feed.clear();
  if (threads.room !== room) threads.close();
  renderOnline();
  for (const entry of state.outbox.all()) {
    if (entry.room === room) feed.showPending(entry, state.me.username);
  }
  ui.historyStatus.textContent = 'Loading messages…';
  if (!isListed(room) && transport) transport.join(room);
  await loadLatest(room, seq);
}

/** Opens `room` and, if message `id` is among those shown, brings it into view, marked. */
async function openAt(room, id) {
  await openRoom(room);
  const node = room === state.current && feed.node(id);
  if (!node) return;
  for (const old of ui.messages.querySelectorAll('.message.found')) old.classList.remove('found');
  node.classList.add('found');
  node.scrollIntoView({ block: 'center' });
}

async function loadLatest(room, seq) {
  try {
    const data = await api('GET', `/api/rooms/${roomPath(room)}/messages?limit=${PAGE}`);
    if (seq !== state.openSeq) return;
    const messages = (data && data.messages) || [];
    ingestLatest(room, messages);
    feed.scrollToBottom();
    // Where the unread messages begin: known now, or (a room not subscribed) once joined.
    const read = reads.marker(room);
    if (read !== undefined) showUnreadLine(room, read);
    else state.unreadLinePending = true;
    state.shown = true;
    readShown(room);
    state.hasOlder = messages.length >= PAGE;
    showHistoryStatus();
    fillViewport();
  } catch (error) {
    if (seq !== state.openSeq) return;
    ui.historyStatus.textContent = '';
    state.shown = true;
    if (error.code !== 'room_not_found') {
      failed(error);
      return;
    }
    // Missing, or private and not ours: exactly the same to us.
    ui.historyStatus.textContent = `Room “${room}” not found.`;
    ui.input.disabled = true;
    ui.send.disabled = true;
    ui.subscribe.hidden = true;
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
  else if (state.dms.has(state.current)) {
    ui.historyStatus.textContent = `This is the beginning of your messages with ${roomLabel(state.current)}.`;
  } else ui.historyStatus.textContent = `This is the beginning of ${state.current}.`;
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
  reads.clear(room);
  updateDocumentTitle();
  const next = roomList.remove(room);
  if (room !== state.current) transport?.leave(room);
  showRoomHeader();
  (next || $('room-search')).focus();
}

/**
 * Creates a room (an existing one is fine, unless a private one was asked for),
 * subscribes to it and opens it. Throws if the room cannot be had (e.g. an invalid name,
 * or a private room of others: not found); another failed subscribe is shown but still
 * opens it.
 */
async function createRoom(name, { private: secret = false } = {}) {
  let room = name;
  try {
    const created = await api('POST', '/api/rooms', secret ? { name, private: true } : { name });
    if (created && created.name) room = created.name;
  } catch (error) {
    if (error.status === 401) sessionEnded();
    if (error.status !== 409 || secret) throw error;
  }
  try {
    await subscribe(room);
  } catch (error) {
    if (error.code === 'room_not_found') throw error;
    failed(error);
  }
  await openRoom(room);
}

/** `?room=name` at start: create it if needed, subscribe, open. Returns the room or null. */
async function enterRoomFromUrl(name) {
  if (isListed(name)) return name;
  try {
    await createRoom(name);
    return name;
  } catch (error) {
    const why = error.code === 'room_not_found' ? 'not found' : error.message;
    failed({ status: error.status, message: `Cannot open room “${name}”: ${why}` });
    return null;
  }
}

// ---- direct messages -------------------------------------------------------------------------

/** GET /api/dms: the user's direct messages with their read state (none for guests). */
async function fetchDms() {
  if (state.me.guest) return [];
  return (await api('GET', '/api/dms')) || [];
}

function addDm(dm) {
  const known = state.dms.has(dm.name);
  state.dms.set(dm.name, dm.with);
  dmList.add(dm.name, dm.with);
  dmList.setActive(state.current);
  if (known) return;
  if (dm.name === state.current) showRoomHeader();
  else transport?.join(dm.name);
}

/** Lists direct messages the page does not show yet (someone wrote to the user). */
async function refreshDms() {
  try {
    for (const dm of await fetchDms()) {
      if (state.dms.has(dm.name)) continue;
      addDm(dm);
      if (!isReading(dm.name)) reads.setCounted(dm.name, dm.read, dm.unread, dm.mentions);
    }
  } catch (error) {
    failed(error);
  }
}

/** Opens the direct message with `user` (POST /api/dms makes it the first time). */
async function openDm(user) {
  const dm = await api('POST', '/api/dms', { user });
  addDm(dm);
  await openRoom(dm.name);
}

// ---- wiring --------------------------------------------------------------------------------

function wireComposer() {
  wireSocial(ui.messages, () => state.current);
  wireSocial($('thread-messages'), () => threads.room);
  ui.composer.addEventListener('submit', (event) => {
    event.preventDefault();
    sendMessage();
    ui.input.focus();
  });
  ui.input.addEventListener('keydown', (event) => {
    if (event.isComposing || suggest.onKeydown(event)) return;
    if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault();
      sendMessage();
    } else if (event.key === 'ArrowUp' && !ui.input.value && !hasModifier(event)) {
      // As in Slack: ↑ in the empty box edits one's last message in this room.
      if (actions.editLast()) event.preventDefault();
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
  setupNewRoomForm($('new-room'), $('new-room-form'), async (name, options) => {
    await createRoom(name, options);
    ui.input.focus();
  });
  setupNewRoomForm($('new-dm'), $('new-dm-form'), async (name) => {
    await openDm(name);
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
  // Guests have neither private rooms nor direct messages.
  $('dms').hidden = Boolean(state.me.guest);
  $('new-room-private-label').hidden = Boolean(state.me.guest);
  state.outbox = new Outbox(state.me.username);

  try {
    const [subscriptions, dms] = await Promise.all([api('GET', '/api/subscriptions'), fetchDms()]);
    for (const { name, read, unread, mentions } of subscriptions || []) {
      addSubscription(name);
      reads.setCounted(name, read, unread, mentions);
    }
    for (const dm of dms) {
      addDm(dm);
      reads.setCounted(dm.name, dm.read, dm.unread, dm.mentions);
    }
  } catch (error) {
    failed(error);
  }
  roomList.updateEmpty();
  dmList.updateEmpty();

  // Before the transport's own `pagehide` closes the socket: what was read is said first.
  window.addEventListener('pagehide', sendPendingReads);
  document.addEventListener('visibilitychange', () => {
    if (state.current) readShown(state.current);
  });

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
