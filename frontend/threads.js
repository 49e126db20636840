// threads.js — the thread panel beside the feed: Reply (or a parent's "N replies") opens
// it with GET /api/rooms/{room}/threads/{id} — the parent, then its replies in a Feed of
// their own (edit, delete and reactions work as in the main feed). Its composer posts a
// reply over HTTP (`thread`: the parent's id). Live replies to the open thread are added
// as they come (`message` frames carrying `thread`); the main feed counts them under the
// parent (home.js). One level deep: a reply has no Reply button.
import { api, roomPath } from './api.js';
import { newClientId } from './outbox.js';
import { Feed } from './render.js';
import { MessageActions } from './editing.js';

const PAGE = 100;

export class ThreadPanel {
  constructor({ panel, messages, form, close, title }, { isMine, isMe, mentionsMe, onError }) {
    Object.assign(this, { panel, form, title, onError });
    this.input = form.elements.text;
    this.room = null;
    this.parent = null; // the parent's id while open
    this.seq = 0;
    this.feed = new Feed(messages, isMine);
    this.feed.withReplies = true;
    this.feed.isMe = isMe;
    this.feed.mentionsMe = mentionsMe;
    this.actions = new MessageActions(this.feed, {
      save: (id, text) => this.change('PATCH', id, { text }),
      remove: (id) => this.change('DELETE', id, {}),
      composer: this.input,
      onError,
    });
    close.addEventListener('click', () => this.close());
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.send();
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      } else if (event.key === 'Escape') {
        this.close();
      }
    });
  }

  isOpen(room, id) {
    return this.room === room && (id === undefined || this.parent === id);
  }

  async open(room, id) {
    const seq = ++this.seq;
    this.room = room;
    this.parent = id;
    this.feed.clear();
    this.actions.reset();
    this.title.textContent = 'Thread';
    this.panel.hidden = false;
    this.input.focus();
    try {
      const data = await api('GET', `/api/rooms/${roomPath(room)}/threads/${id}?limit=${PAGE}`);
      if (seq !== this.seq) return;
      this.feed.add([data.parent, ...(data.replies || [])]);
      this.feed.scrollToBottom();
    } catch (error) {
      if (seq !== this.seq) return;
      this.title.textContent = `Thread: ${error.message}`;
      if (error.status === 401) this.onError(error);
    }
  }

  close() {
    this.seq += 1;
    this.room = null;
    this.parent = null;
    this.feed.clear();
    this.panel.hidden = true;
  }

  /** Items of `room` from any source: replies to the open thread, and changes of what it shows. */
  apply(room, items) {
    if (room !== this.room) return;
    const stick = this.feed.nearBottom();
    for (const item of items) {
      if (item.type === 'edited' || item.type === 'deleted' || item.type === 'reacted') this.feed.change(item);
      else if (item.thread === this.parent || item.id === this.parent) this.feed.add([item]);
    }
    if (stick) this.feed.scrollToBottom();
  }

  async send() {
    const text = this.input.value.trim();
    if (!text || !this.room) return;
    const room = this.room;
    const thread = this.parent;
    this.input.value = '';
    try {
      const message = await api('POST', `/api/rooms/${roomPath(room)}/messages`, {
        text,
        client_id: newClientId(),
        thread,
      });
      if (this.isOpen(room, thread) && message) this.apply(room, [message]);
    } catch (error) {
      if (this.isOpen(room, thread) && !this.input.value) this.input.value = text;
      this.onError(error);
    }
  }

  async change(method, id, body) {
    const event = await api(method, `/api/rooms/${roomPath(this.room)}/messages/${id}`, body);
    if (event && event.type) this.apply(this.room, [event]);
  }
}
