// render.js — DOM building for the home page. Every piece of user text goes in through
// textContent (never innerHTML), so `<img src=x onerror=...>` shows up as literal text.
// `Feed` owns #messages: messages kept in id order, each id rendered at most once and
// kept as it is now (edited text with an "(edited)" mark; a deleted message as a greyed
// "message deleted" line), pending (unacknowledged) sends at the bottom, and scroll
// position handled. One's own stored messages carry Edit and Delete buttons (the clicks
// are handled in editing.js). A "New messages" line can mark where the unread ones begin.
// Messages that mention the user (`feed.mentionsMe`) carry the class `mention`. Every
// stored message has React (and, when it is no reply, Reply) buttons, its reactions as
// chips, and under a thread's parent how many replies it has; replies themselves are not
// in the feed but in the thread panel (threads.js), which uses the same elements.

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

/** The "(edited)" mark; its title says when. */
function editedMark(editedAt) {
  const date = new Date(editedAt);
  const when = Number.isNaN(date.getTime()) ? String(editedAt) : date.toLocaleString();
  return el('time', { class: 'edited', datetime: editedAt, title: `Edited ${when}` }, '(edited)');
}

/** Edit and Delete, on one's own messages. */
function ownActions() {
  return el(
    'span',
    { class: 'actions' },
    el('button', { type: 'button', class: 'action', 'data-action': 'edit', 'aria-label': 'Edit message' }, 'Edit'),
    el(
      'button',
      { type: 'button', class: 'action', 'data-action': 'delete', 'aria-label': 'Delete message' },
      'Delete',
    ),
  );
}

/** React, and Reply on a message that is no reply. */
function socialActions(msg) {
  return el(
    'span',
    { class: 'social' },
    el('button', { type: 'button', class: 'action', 'data-action': 'react', 'aria-label': 'Add a reaction' }, 'React'),
    msg.thread
      ? null
      : el('button', { type: 'button', class: 'action', 'data-action': 'reply', 'aria-label': 'Reply in thread' }, 'Reply'),
  );
}

/** The emoji one click away. */
export const EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '🙏'];

export function emojiPicker() {
  return el(
    'div',
    { class: 'emoji-picker', role: 'group', 'aria-label': 'Pick a reaction' },
    ...EMOJI.map((emoji) =>
      el('button', { type: 'button', class: 'action', 'data-action': 'pick-emoji', 'data-emoji': emoji }, emoji),
    ),
  );
}

/** The reaction chips: `{emoji, count, me}`; a click toggles one's own. */
export function reactionsElement(reactions) {
  const chips = (reactions || [])
    .filter((r) => r.count > 0)
    .map((r) =>
      el(
        'button',
        {
          type: 'button',
          class: `reaction${r.me ? ' me' : ''}`,
          'data-action': 'toggle-reaction',
          'data-emoji': r.emoji,
          'aria-pressed': String(Boolean(r.me)),
          'aria-label': `${r.emoji} ${r.count}${r.me ? ', yours' : ''}`,
        },
        el('span', { class: 'emoji' }, r.emoji),
        ' ',
        el('span', { class: 'count' }, String(r.count)),
      ),
    );
  return el('div', { class: 'reactions', hidden: chips.length === 0 }, ...chips);
}

/** Under a thread's parent: "3 replies · last 12:01" (a button that opens the thread). */
export function threadSummaryElement(msg) {
  const count = msg.reply_count || 0;
  const summary = el(
    'button',
    { type: 'button', class: 'thread-summary', 'data-action': 'open-thread', hidden: count === 0 },
    `${count} ${count === 1 ? 'reply' : 'replies'}`,
  );
  if (count && msg.last_reply_at) summary.append(' · last ', timeElement(msg.last_reply_at));
  return summary;
}

export function messageElement(msg, mine) {
  if (msg.deleted) return deletedElement(msg.id);
  const [meta, text] = messageBody(String(msg.user), timeElement(msg.ts), String(msg.text));
  if (msg.edited_at) meta.append(' ', editedMark(msg.edited_at));
  meta.append(socialActions(msg));
  if (mine) meta.append(ownActions());
  const node = el('div', { class: `message ${mine ? 'mine' : 'theirs'}`, 'data-id': msg.id }, meta, text);
  node.append(reactionsElement(msg.reactions));
  if (!msg.thread) node.append(threadSummaryElement(msg));
  return node;
}

/** Shows a message's reactions and thread summary as they are now. */
export function showSocial(node, msg) {
  node.querySelector('.reactions')?.replaceWith(reactionsElement(msg.reactions));
  node.querySelector('.thread-summary')?.replaceWith(threadSummaryElement(msg));
}

/**
 * A message's reactions after a `reacted` event: the counts it carries, and `me` from
 * whether `user` is the reader (else as it was).
 */
export function reactedList(old, event, isMe) {
  const mine = new Map((old || []).map((r) => [r.emoji, Boolean(r.me)]));
  if (isMe) mine.set(event.emoji, Boolean(event.added));
  return (event.reactions || []).map((r) => ({ emoji: r.emoji, count: r.count, me: mine.get(r.emoji) ?? false }));
}

/** A deleted message: who wrote it and what it said are gone, from the server too. */
export function deletedElement(id) {
  return el('div', { class: 'message deleted', 'data-id': id }, el('div', { class: 'text' }, 'message deleted'));
}

/** Shows new text in a message's element, with its "(edited)" mark. */
function showEdited(node, text, editedAt) {
  node.querySelector('.text').textContent = text;
  const mark = editedMark(editedAt);
  const old = node.querySelector('.meta > .edited');
  if (old) old.replaceWith(mark);
  else node.querySelector('.meta > time').after(' ', mark);
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

/** The inline box that edits a message: Enter saves, Escape cancels. */
export function editorElement(text) {
  const input = el('textarea', {
    class: 'edit-input',
    rows: 1,
    maxlength: 4000,
    dir: 'auto',
    'aria-label': 'Edit message',
    'aria-describedby': 'edit-hint',
  });
  input.value = text;
  return el(
    'form',
    { class: 'edit-box', novalidate: true },
    input,
    el(
      'div',
      { class: 'edit-bar' },
      el('span', { class: 'hint', id: 'edit-hint' }, 'Enter saves · Esc cancels'),
      el('button', { type: 'button', 'data-action': 'cancel-edit' }, 'Cancel'),
      el('button', { type: 'submit', class: 'primary' }, 'Save'),
    ),
    el('p', { class: 'form-error', role: 'alert' }),
  );
}

/** Asks once more before a delete. */
export function confirmDeleteElement() {
  return el(
    'span',
    { class: 'confirm-delete', role: 'group', 'aria-label': 'Delete this message?' },
    el('span', { class: 'question' }, 'Delete?'),
    el('button', { type: 'button', class: 'action danger', 'data-action': 'confirm-delete' }, 'Delete'),
    el('button', { type: 'button', class: 'action', 'data-action': 'cancel-delete' }, 'Cancel'),
  );
}

/** Whether timestamp `a` is later than `b` (a missing `b` is earlier than any `a`). */
function isLater(a, b) {
  if (!a) return false;
  if (!b) return true;
  return Date.parse(a) > Date.parse(b);
}

export function noticeElement(text) {
  return el('div', { class: 'notice' }, text);
}

/** The line before the first unread message. */
export function newMessagesElement() {
  return el(
    'div',
    { class: 'new-messages', role: 'separator', 'aria-label': 'New messages' },
    el('span', {}, 'New messages'),
  );
}

export class Feed {
  constructor(root, isMine) {
    this.root = root;
    this.isMine = isMine; // (msg) => boolean
    this.onDeleted = () => {}; // (id) => void, set by whoever edits messages
    this.mentionsMe = () => false; // (text) => boolean: such messages are highlighted
    this.isMe = () => false; // (user) => boolean: the reader
    this.withReplies = false; // the main feed leaves replies to the thread panel
    this.clear();
  }

  clear() {
    this.root.replaceChildren();
    this.ids = []; // sorted ascending
    this.nodes = new Map(); // id -> element
    this.items = new Map(); // id -> {id, user, text, ts, edited_at, deleted, changeSeq}
    this.unreadFrom = null; // {after, until}: where the "New messages" line may go
    this.divider = null; // {node, before: id}, once drawn
  }

  get oldestId() {
    return this.ids.length ? this.ids[0] : undefined;
  }

  get newestId() {
    return this.ids.length ? this.ids[this.ids.length - 1] : undefined;
  }

  /**
   * Draws the "New messages" line before the first message after `after` (the read
   * marker) that is not one's own nor deleted, among those up to `until` (what was there
   * when the room was opened). It stays until the feed is cleared; older pages loaded
   * later may move it up. Returns the line, if there is one.
   */
  markUnreadFrom(after, until) {
    this.unreadFrom = { after, until };
    return this.placeDivider();
  }

  placeDivider() {
    if (!this.unreadFrom) return null;
    const { after, until } = this.unreadFrom;
    const first = this.ids.find((id) => {
      const item = this.items.get(id);
      return id > after && id <= until && !item.deleted && !this.isMine(item);
    });
    if (first !== undefined && (!this.divider || first < this.divider.before)) {
      this.divider ??= { node: newMessagesElement(), before: first };
      this.divider.before = first;
      this.root.insertBefore(this.divider.node, this.nodes.get(first));
    }
    return this.divider && this.divider.node;
  }

  has(id) {
    return this.nodes.has(id);
  }

  /** The message with this id as it is shown now, or undefined. */
  item(id) {
    return this.items.get(id);
  }

  node(id) {
    return this.nodes.get(id);
  }

  /** The id of the newest of one's own messages that is not deleted, or undefined. */
  lastOwnId() {
    for (let i = this.ids.length - 1; i >= 0; i -= 1) {
      const item = this.items.get(this.ids[i]);
      if (!item.deleted && this.isMine(item)) return item.id;
    }
    return undefined;
  }

  nearBottom() {
    const r = this.root;
    return r.scrollHeight - r.scrollTop - r.clientHeight < 80;
  }

  scrollToBottom() {
    this.root.scrollTop = this.root.scrollHeight;
  }

  /**
   * Adds messages in id order; returns how many were new. A message already shown is
   * brought up to date instead — a message list shows each one as it is now, so a newer
   * edit or a delete wins, and a list older than what is shown changes nothing.
   */
  add(messages) {
    let added = 0;
    for (const msg of messages) {
      if (!Number.isFinite(msg.id) || (msg.thread && !this.withReplies)) continue; // replies: in their thread
      if (this.items.has(msg.id)) {
        this.update(msg);
        continue;
      }
      const item = {
        id: msg.id,
        user: msg.user,
        text: msg.text,
        ts: msg.ts,
        edited_at: msg.edited_at,
        deleted: Boolean(msg.deleted),
        changeSeq: 0,
        reply_count: msg.reply_count || 0,
        last_reply_at: msg.last_reply_at,
        reactions: msg.reactions || [],
        reactSeq: 0,
      };
      this.items.set(msg.id, item);
      const node = messageElement(item, !item.deleted && this.isMine(item));
      if (!item.deleted && this.mentionsMe(item.text)) node.classList.add('mention');
      this.insert(msg.id, node);
      added += 1;
    }
    return added;
  }

  update(msg) {
    const item = this.items.get(msg.id);
    if (item.deleted) return;
    if (!msg.deleted && (msg.reply_count || 0) >= item.reply_count) {
      // A newer look at the message: its thread and reactions as they are now.
      item.reply_count = msg.reply_count || 0;
      item.last_reply_at = msg.last_reply_at;
      if (msg.reactions) item.reactions = msg.reactions;
      showSocial(this.nodes.get(item.id), item);
    }
    if (msg.deleted) this.markDeleted(item);
    else if (typeof msg.text === 'string' && isLater(msg.edited_at, item.edited_at)) {
      this.setText(item, msg.text, msg.edited_at);
    }
  }

  /**
   * An `edited` or `deleted` event of a message that is shown (others are skipped: they
   * come as they are now when loaded). Events of one message apply in seq order; an
   * edit older than the text shown, or anything after a delete, changes nothing.
   */
  change(event) {
    const item = this.items.get(event.id);
    if (!item || item.deleted) return;
    if (event.type === 'reacted') {
      this.react(item, event);
      return;
    }
    if (event.type === 'deleted') {
      this.markDeleted(item);
      return;
    }
    if (typeof event.text !== 'string' || !(event.seq > item.changeSeq)) return;
    if (isLater(item.edited_at, event.edited_at)) return;
    item.changeSeq = event.seq;
    this.setText(item, event.text, event.edited_at);
  }

  /** A `reacted` event of a shown message (each applies once, in seq order). */
  react(item, event) {
    if (Number.isFinite(event.seq) && !(event.seq > item.reactSeq)) return;
    item.reactSeq = event.seq;
    item.reactions = reactedList(item.reactions, event, this.isMe(event.user));
    showSocial(this.nodes.get(item.id), item);
  }

  /** A reply to message `id` arrived (live): its summary counts it. */
  replied(id, reply) {
    const item = this.items.get(id);
    if (!item || item.deleted) return;
    item.reply_count += 1;
    item.last_reply_at = reply.ts;
    showSocial(this.nodes.get(id), item);
  }

  setText(item, text, editedAt) {
    item.text = text;
    item.edited_at = editedAt;
    const node = this.nodes.get(item.id);
    showEdited(node, text, editedAt);
    node.classList.toggle('mention', this.mentionsMe(text));
  }

  markDeleted(item) {
    item.deleted = true;
    delete item.user;
    delete item.text;
    const node = deletedElement(item.id);
    this.nodes.get(item.id).replaceWith(node);
    this.nodes.set(item.id, node);
    this.onDeleted(item.id);
  }

  insert(id, node) {
    const index = this.insertIndex(id);
    if (index < this.ids.length) {
      const next = this.ids[index];
      // An older message goes above the "New messages" line of the next one.
      const above = this.divider && this.divider.before === next ? this.divider.node : this.nodes.get(next);
      this.root.insertBefore(node, above);
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
    this.placeDivider();
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

/**
 * A row of the room list (or, with `dm`, of the direct messages: `label` is the other
 * user's name and there is no unsubscribe): open button with unread and mention badges.
 */
export function roomListItem(room, { label = room, dm = false } = {}) {
  const badge = el('span', { class: 'unread', hidden: true }, '0');
  const mentions = el('span', { class: 'mentions', hidden: true, title: 'Mentions you' }, '@0');
  const open = el(
    'button',
    { type: 'button', class: 'open-room', 'data-room': room },
    el('span', { class: 'room-name', dir: 'auto' }, label),
    mentions,
    badge,
  );
  if (dm) return el('li', { class: 'room-item dm' }, open);
  const unsubscribe = el(
    'button',
    { type: 'button', class: 'unsubscribe', 'aria-label': `Unsubscribe from ${room}`, title: 'Unsubscribe' },
    '×',
  );
  return el('li', { class: 'room-item' }, open, unsubscribe);
}

/** Counts above this show as "999+" (the server counts up to 1,000). */
const MOST_UNREAD_SHOWN = 999;

export function setUnreadBadge(item, label, count, mentions = 0) {
  const badge = item.querySelector('.unread');
  const shown = count > MOST_UNREAD_SHOWN ? `${MOST_UNREAD_SHOWN}+` : String(count);
  badge.textContent = shown;
  badge.hidden = count === 0;
  const mark = item.querySelector('.mentions');
  mark.textContent = `@${mentions}`;
  mark.hidden = mentions === 0;
  const open = item.querySelector('.open-room');
  const parts = [label];
  if (count) parts.push(`${shown} unread`);
  if (mentions) parts.push(`${mentions} mentioning you`);
  if (parts.length > 1) open.setAttribute('aria-label', parts.join(', '));
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
