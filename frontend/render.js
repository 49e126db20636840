// render.js — DOM building for the home page. Every piece of user text goes in through
// textContent (never innerHTML), so `<img src=x onerror=...>` shows up as literal text.
// `Feed` owns #messages: messages kept in id order, each id rendered at most once,
// pending (unacknowledged) sends at the bottom, and scroll position handled.

/** createElement with attributes; string children become text nodes. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    if (name === 'class') node.className = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child == null) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

const pad = (n) => String(n).padStart(2, '0');

function timeElement(ts) {
  const date = new Date(ts);
  if (Number.isNaN(date.getTime())) return el('time', { datetime: ts }, '');
  return el(
    'time',
    { datetime: ts, title: date.toLocaleString() },
    `${pad(date.getHours())}:${pad(date.getMinutes())}`,
  );
}

function messageBody(user, timeNode, text) {
  return [
    el('div', { class: 'meta' }, el('bdi', { class: 'user' }, user), ' ', timeNode),
    el('div', { class: 'text', dir: 'auto' }, text),
  ];
}

export function messageElement(msg, mine) {
  return el(
    'div',
    { class: `message ${mine ? 'mine' : 'theirs'}`, 'data-id': msg.id },
    ...messageBody(String(msg.user), timeElement(msg.ts), String(msg.text)),
  );
}

export function pendingElement(entry, me) {
  const status = el('span', { class: 'status' }, entry.error ? `Not sent: ${entry.error}` : 'sending…');
  const node = el(
    'div',
    { class: `message mine pending${entry.error ? ' failed' : ''}`, 'data-client-id': entry.client_id },
    ...messageBody(me, status, entry.text),
  );
  return node;
}

export function noticeElement(text) {
  return el('div', { class: 'notice' }, text);
}

export class Feed {
  constructor(root, isMine) {
    this.root = root;
    this.isMine = isMine; // (msg) => boolean
    this.clear();
  }

  clear() {
    this.root.replaceChildren();
    this.ids = []; // sorted ascending
    this.nodes = new Map(); // id -> element
  }

  get oldestId() {
    return this.ids.length ? this.ids[0] : undefined;
  }

  has(id) {
    return this.nodes.has(id);
  }

  nearBottom() {
    const r = this.root;
    return r.scrollHeight - r.scrollTop - r.clientHeight < 80;
  }

  scrollToBottom() {
    this.root.scrollTop = this.root.scrollHeight;
  }

  /** Adds messages in id order (skipping ids already shown); returns how many were new. */
  add(messages) {
    let added = 0;
    for (const msg of messages) {
      if (!Number.isFinite(msg.id) || this.nodes.has(msg.id)) continue;
      this.insert(msg.id, messageElement(msg, this.isMine(msg)));
      added += 1;
    }
    return added;
  }

  insert(id, node) {
    const index = this.insertIndex(id);
    if (index < this.ids.length) {
      this.root.insertBefore(node, this.nodes.get(this.ids[index]));
    } else {
      // Newest so far: after notices, before the pending sends.
      this.root.insertBefore(node, this.root.querySelector('.pending'));
    }
    this.ids.splice(index, 0, id);
    this.nodes.set(id, node);
  }

  insertIndex(id) {
    let lo = 0;
    let hi = this.ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.ids[mid] < id) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Adds older messages above the current ones without moving what the user is reading. */
  prepend(messages) {
    const fromBottom = this.root.scrollHeight - this.root.scrollTop;
    const added = this.add(messages);
    this.root.scrollTop = this.root.scrollHeight - fromBottom;
    return added;
  }

  notice(text) {
    this.root.insertBefore(noticeElement(text), this.root.querySelector('.pending'));
  }

  showPending(entry, me) {
    const old = this.pendingNode(entry.client_id);
    const node = pendingElement(entry, me);
    if (old) old.replaceWith(node);
    else this.root.append(node);
  }

  removePending(clientId) {
    this.pendingNode(clientId)?.remove();
  }

  pendingNode(clientId) {
    for (const node of this.root.querySelectorAll('.pending')) {
      if (node.dataset.clientId === clientId) return node;
    }
    return null;
  }
}

export function roomListItem(room) {
  const badge = el('span', { class: 'unread', hidden: true }, '0');
  const open = el(
    'button',
    { type: 'button', class: 'open-room', 'data-room': room },
    el('span', { class: 'room-name' }, room),
    badge,
  );
  const unsubscribe = el(
    'button',
    { type: 'button', class: 'unsubscribe', 'aria-label': `Unsubscribe from ${room}`, title: 'Unsubscribe' },
    '×',
  );
  return el('li', { class: 'room-item' }, open, unsubscribe);
}

export function setUnreadBadge(item, room, count) {
  const badge = item.querySelector('.unread');
  badge.textContent = String(count);
  badge.hidden = count === 0;
  const open = item.querySelector('.open-room');
  if (count) open.setAttribute('aria-label', `${room}, ${count} unread`);
  else open.removeAttribute('aria-label');
}

export function searchOption(room, index) {
  return el(
    'li',
    { role: 'option', id: `search-option-${index}`, 'data-room': room, 'aria-selected': 'false' },
    room,
  );
}

export function onlineItem(user, isMe) {
  return el('li', { class: isMe ? 'me' : false, dir: 'auto' }, user);
}
