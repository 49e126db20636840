// sidebar.js — the left column of /home: the chatroom list (open, unread and mention
// badges, unsubscribe), the direct messages' list (the same, named after the other user,
// without unsubscribe), and the small inline forms behind the + buttons (a new room,
// public or private; a direct message with someone). It only draws and reports clicks;
// home.js decides what they mean.
import { roomListItem, setUnreadBadge } from './render.js';

export class RoomList {
  /** With `dm`, rows are direct messages (`add(room, label)` names the other user). */
  constructor(list, emptyNote, { onOpen, onUnsubscribe, dm = false }) {
    this.list = list;
    this.emptyNote = emptyNote;
    this.dm = dm;
    this.labels = new Map(); // room -> what its row shows
    list.addEventListener('click', (event) => {
      const button = event.target.closest('button');
      if (!button || !list.contains(button)) return;
      const room = button.closest('li').querySelector('.open-room').dataset.room;
      if (button.classList.contains('unsubscribe')) onUnsubscribe(room);
      else onOpen(room);
    });
  }

  item(room) {
    for (const li of this.list.children) {
      if (li.querySelector('.open-room').dataset.room === room) return li;
    }
    return null;
  }

  has(room) {
    return this.item(room) !== null;
  }

  add(room, label = room) {
    this.labels.set(room, label);
    if (!this.item(room)) this.list.append(roomListItem(room, { label, dm: this.dm }));
    this.updateEmpty();
  }

  /** Removes a room; returns the control that should take the keyboard focus, if any. */
  remove(room) {
    const li = this.item(room);
    if (!li) return null;
    const neighbour = li.nextElementSibling || li.previousElementSibling;
    li.remove();
    this.labels.delete(room);
    this.updateEmpty();
    return neighbour ? neighbour.querySelector('.open-room') : null;
  }

  setUnread(room, count, mentions) {
    const li = this.item(room);
    if (li) setUnreadBadge(li, this.labels.get(room) ?? room, count, mentions);
  }

  setActive(room) {
    for (const li of this.list.children) {
      const button = li.querySelector('.open-room');
      const active = button.dataset.room === room;
      li.classList.toggle('active', active);
      if (active) button.setAttribute('aria-current', 'true');
      else button.removeAttribute('aria-current');
    }
  }

  updateEmpty() {
    this.emptyNote.hidden = this.list.children.length > 0;
  }
}

/**
 * Wires a + button and its form; `create(name, {private})` does the work and throws to
 * show an error (`private`: the form's "private" box, if it has one, is ticked).
 */
export function setupNewRoomForm(button, form, create) {
  const input = form.elements.name;
  const error = form.querySelector('.form-error');
  const submit = form.querySelector('button[type="submit"]');

  function setOpen(open) {
    form.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
    error.textContent = '';
    if (open) input.focus();
    else {
      input.value = '';
      if (form.elements.private) form.elements.private.checked = false;
      button.focus();
    }
  }

  button.addEventListener('click', () => setOpen(form.hidden));
  form.querySelector('.cancel').addEventListener('click', () => setOpen(false));
  form.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') setOpen(false);
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = input.value.trim();
    error.textContent = '';
    if (!name) {
      error.textContent = input.dataset.missing || 'Enter a room name.';
      return;
    }
    submit.disabled = true;
    try {
      await create(name, { private: Boolean(form.elements.private?.checked) });
      form.hidden = true;
      input.value = '';
      if (form.elements.private) form.elements.private.checked = false;
      button.setAttribute('aria-expanded', 'false');
    } catch (failure) {
      error.textContent = failure.message;
    } finally {
      submit.disabled = false;
    }
  });
}
