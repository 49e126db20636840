// transport.js — the live link to the server. Prefers one WebSocket (/ws) carrying every
// room, reconnecting by itself with exponential backoff (0.5 s doubling to 10 s, jittered).
// If the socket never opens 3 times in a row (or ?transport=polling), it falls back to
// polling the HTTP API and emits the same kind of events, so the page does not care which.
//
// Every change to a room is an event with a per-room `seq` (a message's id is the seq of
// its post). The page keeps the last seq it saw of each room (`rooms().lastSeq`); a
// (re)join sends it as `after`, and a poll asks for the events after it, so edits and
// deletes of old messages are neither missed nor fetched twice.
//
// Events given to onEvent: the server's frames ({type:'joined'|'message'|'edited'|
// 'deleted'|'reacted'|'member'|'mention'|'read'|'presence'|'typing'|'error', ...}) plus, from polling,
// {type:'history', room, messages} (a room's latest messages as they are now, when no
// seq is known yet), {type:'events', room, after, events, seq} (the room's events after
// `after`, as frames, and the seq they reach) and {type:'posted', message} (the answer to
// our POST). A read marker put over HTTP (polling, or no socket open) is answered by a
// {type:'read', room, id} as well.
import { api, roomPath } from './api.js';

const FAILURES_BEFORE_POLLING = 3;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const POLL_OPEN_ROOM_MS = 2_000;
const POLL_OTHER_ROOMS_MS = 10_000;
const SOCKET_RETRY_WHILE_POLLING_MS = 30_000;
const POLL_PAGE = 500;
const SESSION_ENDED = 4401;

export class Transport {
  /**
   * rooms(): { open: string|null, all: string[], lastSeq(room): number|undefined }
   * onState(state): 'connecting' | 'connected' | 'reconnecting' | 'polling' | 'offline'
   * onReady(): the link is (again) usable — the page re-sends its outbox.
   */
  constructor({ forcePolling, rooms, onEvent, onState, onReady, onSessionEnded }) {
    Object.assign(this, { forcePolling, rooms, onEvent, onState, onReady, onSessionEnded });
    this.mode = 'ws'; // or 'polling'
    this.ws = null;
    this.failures = 0; // socket attempts in a row that never opened
    this.attempt = 0; // for the backoff delay
    this.retryTimer = null;
    this.pollTimers = [];
    this.pollOk = null; // last poll outcome, to notice offline <-> online
    this.unposted = new Map(); // polling sends that hit a network error
    this.lastPolledOthers = 0;
  }

  start() {
    window.addEventListener('online', () => this.retryNow());
    window.addEventListener('offline', () => this.setState('offline'));
    // A page kept in the back/forward cache would keep its socket (and its
    // user "online") open: close it when the page is hidden, reopen on return.
    window.addEventListener('pagehide', () => this.suspend());
    window.addEventListener('pageshow', (event) => {
      if (event.persisted) this.resume();
    });
    if (this.forcePolling) this.startPolling();
    else this.connect();
  }

  suspend() {
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    this.ws = null; // so its close event is not taken for a failure
    if (ws) ws.close(1000, 'page hidden');
  }

  resume() {
    if (this.mode === 'polling') {
      this.pollOpenRoom();
      if (!this.forcePolling) this.retryTimer = setTimeout(() => this.connect(), SOCKET_RETRY_WHILE_POLLING_MS);
    } else {
      this.attempt = 0;
      this.connect();
    }
  }

  get socketOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  setState(state) {
    this.state = state;
    this.onState(state);
  }

  // ---- WebSocket -------------------------------------------------------------------------

  connect() {
    clearTimeout(this.retryTimer);
    if (this.ws) return;
    if (this.mode === 'ws') this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    let ws;
    try {
      ws = new WebSocket(scheme + location.host + '/ws');
    } catch {
      this.socketClosed(null, false, {});
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.addEventListener('open', () => {
      opened = true;
      this.socketOpened();
    });
    ws.addEventListener('message', (event) => this.socketFrame(event.data));
    ws.addEventListener('close', (event) => this.socketClosed(ws, opened, event));
  }

  socketOpened() {
    this.failures = 0;
    this.attempt = 0;
    if (this.mode === 'polling') this.stopPolling();
    this.mode = 'ws';
    this.setState('connected');
    const { all, lastSeq } = this.rooms();
    for (const room of all) this.sendJoin(room, lastSeq(room));
    this.onReady();
  }

  socketFrame(data) {
    if (typeof data !== 'string') return;
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (event && typeof event.type === 'string') this.onEvent(event);
  }

  socketClosed(ws, opened, event) {
    if (ws && this.ws !== ws) return;
    this.ws = null;
    if (event.code === SESSION_ENDED) {
      this.onSessionEnded();
      return;
    }
    if (!opened) {
      this.failures += 1;
      this.checkSession();
    }
    if (this.mode === 'polling') {
      this.retryTimer = setTimeout(() => this.connect(), SOCKET_RETRY_WHILE_POLLING_MS);
      return;
    }
    if (this.failures >= FAILURES_BEFORE_POLLING) {
      this.startPolling();
      this.retryTimer = setTimeout(() => this.connect(), SOCKET_RETRY_WHILE_POLLING_MS);
      return;
    }
    this.setState(navigator.onLine === false ? 'offline' : 'reconnecting');
    this.retryTimer = setTimeout(() => this.connect(), backoffDelay(this.attempt));
    this.attempt += 1;
  }

  /** A socket that cannot open may mean the session is gone: ask, and leave if so. */
  async checkSession() {
    try {
      await api('GET', '/api/me');
    } catch (error) {
      if (error.status === 401) this.onSessionEnded();
    }
  }

  /** The browser says the network is back: try at once instead of waiting for the backoff. */
  retryNow() {
    if (this.mode === 'polling') {
      this.pollOpenRoom();
    } else if (this.socketOpen) {
      this.setState('connected');
    } else if (!this.ws) {
      this.attempt = 0;
      this.connect();
    }
  }

  sendFrame(frame) {
    if (!this.socketOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  sendJoin(room, after) {
    const frame = { type: 'join', room };
    if (Number.isFinite(after)) frame.after = after;
    this.sendFrame(frame);
  }

  // ---- what the page asks for --------------------------------------------------------------

  join(room) {
    if (this.mode === 'polling') this.pollRoom(room);
    else this.sendJoin(room, this.rooms().lastSeq(room));
  }

  leave(room) {
    this.sendFrame({ type: 'leave', room });
  }

  typing(room) {
    this.sendFrame({ type: 'typing', room });
  }

  /**
   * Moves the user's read marker in `room` to message `id`: a `read` frame, or without an
   * open socket PUT /api/rooms/{room}/read, whose answer (the marker as it is now) comes
   * back as a `read` event.
   */
  read(room, id) {
    if (this.mode === 'ws' && this.sendFrame({ type: 'read', room, id })) return;
    this.putRead(room, id);
  }

  async putRead(room, id) {
    try {
      const marker = await api('PUT', `/api/rooms/${roomPath(room)}/read`, { id });
      if (marker && Number.isFinite(marker.id)) this.onEvent({ type: 'read', room, id: marker.id });
    } catch (error) {
      if (error.status === 401) this.onSessionEnded();
      // Otherwise the marker stays behind until the next read moves it.
    }
  }

  /**
   * Toggles the user's `emoji` on message `id`: a `react` frame, or without an open socket
   * PUT …/messages/{id}/reactions (the change comes back as a `reacted` event either way).
   */
  react(room, id, emoji) {
    if (this.mode === 'ws' && this.sendFrame({ type: 'react', room, id, emoji })) return;
    api('PUT', `/api/rooms/${roomPath(room)}/messages/${id}/reactions`, { emoji }).catch((error) => {
      if (error.status === 401) this.onSessionEnded();
      else this.onEvent({ type: 'error', code: error.code, message: error.message });
    });
  }

  /** Sends (or re-sends) an outbox entry; returns false if it has to wait for onReady. */
  send({ room, text, client_id }) {
    if (this.mode === 'polling') {
      this.post({ room, text, client_id });
      return true;
    }
    return this.sendFrame({ type: 'send', room, text, client_id });
  }

  // ---- polling fallback --------------------------------------------------------------------

  startPolling() {
    if (this.mode === 'polling' && this.pollTimers.length) return;
    this.mode = 'polling';
    this.pollOk = null;
    this.setState('polling');
    this.pollTimers = [
      setInterval(() => this.pollOpenRoom(), POLL_OPEN_ROOM_MS),
      setInterval(() => this.pollOtherRooms(), POLL_OTHER_ROOMS_MS),
    ];
    this.pollOpenRoom();
    this.pollOtherRooms();
  }

  stopPolling() {
    for (const timer of this.pollTimers) clearInterval(timer);
    this.pollTimers = [];
  }

  pollOpenRoom() {
    const { open } = this.rooms();
    if (open) this.pollRoom(open);
    else this.pollSession();
  }

  pollOtherRooms() {
    const { open, all } = this.rooms();
    for (const room of all) if (room !== open) this.pollRoom(room);
  }

  /** With no room open, still notice a lost session or a lost connection. */
  async pollSession() {
    try {
      await api('GET', '/api/me');
      this.pollSucceeded();
    } catch (error) {
      this.pollFailed(error);
    }
  }

  /**
   * One poll of a room: the events after its last seq, page by page until caught up. A
   * room with no known seq yet gets its latest messages instead (the page takes the
   * highest id as its seq: the events after it, replayed, change nothing it shows).
   */
  async pollRoom(room) {
    try {
      for (;;) {
        const after = this.rooms().lastSeq(room);
        if (!Number.isFinite(after)) {
          const data = await api('GET', `/api/rooms/${roomPath(room)}/messages?limit=50`);
          if (this.mode !== 'polling') return; // the socket came back meanwhile
          this.pollSucceeded();
          this.onEvent({ type: 'history', room, messages: (data && data.messages) || [] });
          return;
        }
        const data = await api('GET', `/api/rooms/${roomPath(room)}/events?after=${after}&limit=${POLL_PAGE}`);
        if (this.mode !== 'polling') return;
        this.pollSucceeded();
        const events = (data && data.events) || [];
        const seq = data && Number.isFinite(data.seq) ? data.seq : after;
        if (events.length || seq !== after) this.onEvent({ type: 'events', room, after, events, seq });
        // Stop unless there is more and the page moved the room's seq on.
        if (!(data && data.has_more) || this.rooms().lastSeq(room) === after) return;
      }
    } catch (error) {
      if (error.status === 404) return; // room gone; nothing to poll
      this.pollFailed(error);
    }
  }

  async post(entry) {
    try {
      const message = await api('POST', `/api/rooms/${roomPath(entry.room)}/messages`, {
        text: entry.text,
        client_id: entry.client_id,
      });
      this.unposted.delete(entry.client_id);
      this.pollSucceeded();
      // Not a 'message': other messages may sit between the last poll and this one.
      this.onEvent({ type: 'posted', message });
    } catch (error) {
      if (error.status === 401) return this.onSessionEnded();
      const retryable = error.status === 0 || error.status === 408 || error.status === 429 || error.status >= 500;
      if (retryable) {
        this.unposted.set(entry.client_id, entry);
        if (error.status === 0) this.pollFailed(error);
        return;
      }
      this.unposted.delete(entry.client_id);
      this.onEvent({ type: 'error', code: error.code, message: error.message, client_id: entry.client_id });
    }
  }

  pollSucceeded() {
    const wasDown = this.pollOk !== true;
    this.pollOk = true;
    if (this.state !== 'polling') this.setState('polling');
    if (wasDown) this.onReady();
    else this.repost();
  }

  repost() {
    for (const entry of [...this.unposted.values()]) {
      this.unposted.delete(entry.client_id);
      this.post(entry);
    }
  }

  pollFailed(error) {
    if (error.status === 401) {
      this.onSessionEnded();
      return;
    }
    if (error.status === 0) {
      this.pollOk = false;
      this.setState('offline');
    }
  }
}

function backoffDelay(attempt) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  return base * (0.5 + Math.random() * 0.5);
}
