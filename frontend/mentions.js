// mentions.js — everything about `@name` on the page: which messages mention the user
// (the server's rule, so the highlight matches who was notified), the composer's `@`
// autocomplete (an ARIA listbox under the message box), and browser notifications of
// mentions while the tab is hidden (asked for from a button, at most one per room a while).
import { el } from './render.js';

const OPENERS = '([{"\'';
const CLOSERS = '.,;:!?)]}"\'';
const MOST_SUGGESTED = 8;
const NOTIFY_EVERY_MS = 15_000;
const NOTIFICATION_TEXT = 200;

/**
 * The lower-cased names `text` mentions (`@name` at the start of a word, after an opening
 * bracket or quote at most; the name runs to the next blank, without closing punctuation),
 * and whether it says `@here` — as the server reads it.
 */
export function mentioned(text) {
  const names = new Set();
  let here = false;
  if (!String(text).includes('@')) return { names, here };
  for (const word of String(text).split(/\s+/)) {
    const at = word.indexOf('@');
    if (at < 0 || ![...word.slice(0, at)].every((c) => OPENERS.includes(c))) continue;
    let end = word.length;
    while (end > at + 1 && CLOSERS.includes(word[end - 1])) end -= 1;
    const name = word.slice(at + 1, end).toLowerCase();
    if (name === 'here') here = true;
    else if (name) names.add(name);
  }
  return { names, here };
}

/** Whether `text` mentions `me` by name or says `@here`. */
export function mentionsMe(text, me) {
  if (text == null || me == null) return false;
  const { names, here } = mentioned(text);
  return here || names.has(String(me).toLowerCase());
}

/**
 * The composer's `@` autocomplete: typing `@` and the start of a name lists the matching
 * `candidates()` (and `here`); ArrowUp/ArrowDown move, Enter or Tab choose, Escape closes;
 * clicks work too. `onKeydown` must see the box's keys first: it returns true when it used one.
 */
export class MentionSuggest {
  constructor(input, listbox, candidates) {
    Object.assign(this, { input, listbox, candidates });
    this.options = [];
    this.active = 0;
    this.start = -1; // where the `@` being completed is
    input.setAttribute('aria-controls', listbox.id);
    input.setAttribute('aria-autocomplete', 'list');
    input.addEventListener('input', () => this.update());
    input.addEventListener('click', () => this.update());
    input.addEventListener('blur', () => this.close());
    listbox.addEventListener('mousedown', (event) => event.preventDefault());
    listbox.addEventListener('click', (event) => {
      const option = event.target.closest('[role="option"]');
      if (option) this.choose(option.dataset.name);
    });
  }

  get open() {
    return !this.listbox.hidden;
  }

  /** The `@partial` right before the caret, if any: {start, partial}. */
  token() {
    const caret = this.input.selectionStart;
    if (caret !== this.input.selectionEnd) return null;
    const before = this.input.value.slice(0, caret);
    const match = /(^|[\s([{"'])@([^\s@]*)$/.exec(before);
    if (!match) return null;
    return { start: caret - match[2].length - 1, partial: match[2].toLowerCase() };
  }

  update() {
    const token = this.token();
    if (!token) return this.close();
    const names = [...new Set(this.candidates().map(String)), 'here'];
    const matching = names.filter((name) => name.toLowerCase().startsWith(token.partial)).slice(0, MOST_SUGGESTED);
    if (!matching.length) return this.close();
    this.start = token.start;
    this.show(matching);
  }

  show(names) {
    this.options = names;
    this.active = 0;
    this.listbox.replaceChildren(
      ...names.map((name, i) =>
        el('li', { role: 'option', id: `mention-option-${i}`, 'data-name': name, dir: 'auto' }, `@${name}`),
      ),
    );
    this.listbox.hidden = false;
    this.input.setAttribute('aria-expanded', 'true');
    this.setActive(0);
  }

  setActive(index) {
    const items = this.listbox.querySelectorAll('[role="option"]');
    this.active = (index + items.length) % items.length;
    items.forEach((item, i) => item.setAttribute('aria-selected', String(i === this.active)));
    this.input.setAttribute('aria-activedescendant', items[this.active].id);
  }

  close() {
    this.listbox.hidden = true;
    this.input.setAttribute('aria-expanded', 'false');
    this.input.removeAttribute('aria-activedescendant');
  }

  /** Puts `@name ` in place of the `@partial` being typed. */
  choose(name) {
    const { value, selectionStart } = this.input;
    const inserted = `@${name} `;
    this.input.value = value.slice(0, this.start) + inserted + value.slice(selectionStart);
    const caret = this.start + inserted.length;
    this.input.setSelectionRange(caret, caret);
    this.close();
    this.input.focus();
  }

  onKeydown(event) {
    if (!this.open || event.isComposing) return false;
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      this.setActive(this.active + (event.key === 'ArrowDown' ? 1 : -1));
    } else if ((event.key === 'Enter' && !event.shiftKey) || event.key === 'Tab') {
      this.choose(this.options[this.active]);
    } else if (event.key === 'Escape') {
      this.close();
    } else {
      return false;
    }
    event.preventDefault();
    return true;
  }
}

/**
 * Browser notifications of mentions while the tab is hidden. Permission is asked from the
 * "Enable notifications" button (a user gesture), which shows only while the browser has
 * not been asked yet. One room notifies at most once every 15 s; clicking a notification
 * opens its room (`onOpen`).
 */
export class Notifier {
  constructor(button, onOpen) {
    this.button = button;
    this.onOpen = onOpen;
    this.last = new Map(); // room -> when it last notified
    this.showButton();
    button.addEventListener('click', async () => {
      try {
        await Notification.requestPermission();
      } finally {
        this.showButton();
      }
    });
  }

  static get supported() {
    return typeof window.Notification === 'function';
  }

  showButton() {
    this.button.hidden = !Notifier.supported || Notification.permission !== 'default';
  }

  /** A `mention` frame: notify if the user cannot see the page. `title` names who and where. */
  notify(event, title) {
    if (!Notifier.supported || Notification.permission !== 'granted') return;
    if (document.visibilityState !== 'hidden') return;
    const now = Date.now();
    if (now - (this.last.get(event.room) ?? -Infinity) < NOTIFY_EVERY_MS) return;
    this.last.set(event.room, now);
    const notification = new Notification(title, {
      body: String(event.text ?? '').slice(0, NOTIFICATION_TEXT),
      tag: `chatroom-${event.room}`,
    });
    notification.addEventListener('click', () => {
      window.focus();
      this.onOpen(event.room);
      notification.close();
    });
  }
}
