// sidebar.js — the left column of /home: the chatroom list (open, unread badge,
// unsubscribe) and the small inline "new room" form behind the + button.
// It only draws and reports clicks; home.js decides what they mean.
import { roomListItem, setUnreadBadge } from './render.js';

export class RoomList {
  constructor(list, emptyNote, { onOpen, onUnsubscribe }) {
    this.list = list;
    this.emptyNote = emptyNote;
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

  add(room) {
    if (!this.item(room)) this.list.append(roomListItem(room));
    this.updateEmpty();
  }

  /** Removes a room; returns the control that should take the keyboard focus, if any. */
  remove(room) {
    const li = this.item(room);
    if (!li) return null;
    const neighbour = li.nextElementSibling || li.previousElementSibling;
    li.remove();
    this.updateEmpty();
    return neighbour ? neighbour.querySelector('.open-room') : null;
  }

  setUnread(room, count) {
    const li = this.item(room);
    if (li) setUnreadBadge(li, room, count);
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

/** Wires the + button and its form; `create(name)` does the work and throws to show an error. */
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
      error.textContent = 'Enter a room name.';
      return;
    }
    submit.disabled = true;
    try {
      await create(name);
      form.hidden = true;
      input.value = '';
      button.setAttribute('aria-expanded', 'false');
    } catch (failure) {
      error.textContent = failure.message;
    } finally {
      submit.disabled = false;
    }
  });
}
