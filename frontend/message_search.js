// message_search.js — searching messages: the "Search messages" box in the top bar asks
// GET /api/search?q= and lists what it finds, newest first, in a panel above the feed;
// "More" asks for the next (older) page with the `next_before` cursor. The matched parts
// show as <mark> elements built from the `highlight` ranges (UTF-16 code units, which is
// how JavaScript slices strings) — text nodes only, never HTML. Choosing a result opens
// its room (`onOpen(room, id)`).
import { api } from './api.js';
import { el } from './render.js';

const PAGE = 20;

/** `text` with the `[start, end)` ranges in <mark>; bad or overlapping ranges are skipped. */
export function highlightedText(text, ranges) {
  const parts = [];
  let at = 0;
  for (const range of Array.isArray(ranges) ? ranges : []) {
    const [start, end] = range;
    if (!(Number.isInteger(start) && Number.isInteger(end) && start >= at && end > start && end <= text.length)) continue;
    if (start > at) parts.push(text.slice(at, start));
    parts.push(el('mark', {}, text.slice(start, end)));
    at = end;
  }
  if (at < text.length) parts.push(text.slice(at));
  return el('div', { class: 'text', dir: 'auto' }, ...parts);
}

export class MessageSearch {
  /** `label(room)`: how a room is named on the page (a direct message by the other user). */
  constructor({ form, panel, title, list, more, close }, { onOpen, onError, label }) {
    Object.assign(this, { form, panel, title, list, more, onOpen, onError, label });
    this.input = form.elements.q;
    this.query = '';
    this.next = null; // the cursor of the next page
    this.seq = 0;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const query = this.input.value.trim();
      if (query) this.search(query);
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') this.close();
    });
    close.addEventListener('click', () => this.close());
    more.addEventListener('click', () => this.page());
    list.addEventListener('click', (event) => {
      const hit = event.target.closest('button.hit');
      if (!hit) return;
      this.close();
      this.onOpen(hit.dataset.room, Number(hit.dataset.id));
    });
  }

  close() {
    this.seq += 1;
    this.panel.hidden = true;
    this.list.replaceChildren();
  }

  async search(query) {
    this.query = query;
    this.next = null;
    this.list.replaceChildren();
    this.title.textContent = `Searching for “${query}”…`;
    this.panel.hidden = false;
    await this.page();
  }

  async page() {
    const seq = ++this.seq;
    const params = new URLSearchParams({ q: this.query, limit: String(PAGE) });
    if (this.next) params.set('before', this.next);
    this.more.disabled = true;
    try {
      const data = await api('GET', `/api/search?${params}`);
      if (seq !== this.seq) return;
      const results = (data && data.results) || [];
      this.list.append(...results.map((result) => this.item(result)));
      this.next = (data && data.next_before) || null;
      const count = this.list.children.length;
      this.title.textContent = count
        ? `${count}${this.next ? '+' : ''} found for “${this.query}”`
        : `Nothing found for “${this.query}”`;
    } catch (error) {
      if (seq !== this.seq) return;
      this.title.textContent = `Search failed: ${error.message}`;
      if (error.status === 401) this.onError(error);
    } finally {
      if (seq === this.seq) {
        this.more.hidden = !this.next;
        this.more.disabled = false;
      }
    }
  }

  item({ room, id, user, text, ts, highlight }) {
    const date = new Date(ts);
    const when = Number.isNaN(date.getTime()) ? String(ts) : date.toLocaleString();
    const button = el(
      'button',
      { type: 'button', class: 'hit', 'data-room': room, 'data-id': id },
      el(
        'div',
        { class: 'meta' },
        el('span', { class: 'hit-room' }, this.label(room)),
        ' ',
        el('bdi', { class: 'user' }, String(user)),
        ' ',
        el('time', { datetime: ts }, when),
      ),
      highlightedText(String(text), highlight),
    );
    return el('li', {}, button);
  }
}
