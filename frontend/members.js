// members.js — the members panel of a private room: a "Members" button in the room's
// header opens a list of who is in it (GET /api/rooms/{room}/members); the room's creator
// can add an account by name (PUT …/members/{user}) and remove others (DELETE). Public
// rooms and direct messages have no panel. The list is fetched again when a `member`
// frame says it changed. `members` is what the composer's `@` autocomplete offers.
import { api, roomPath } from './api.js';
import { el } from './render.js';

export class MembersPanel {
  constructor({ toggle, panel, list, form, badge }, { me, onError }) {
    Object.assign(this, { toggle, panel, list, form, badge, me, onError });
    this.room = null;
    this.data = null; // {room, created_by, members} of this.room, once known
    this.seq = 0;
    toggle.addEventListener('click', () => this.setOpen(panel.hidden));
    list.addEventListener('click', (event) => {
      const button = event.target.closest('button.remove-member');
      if (button) this.change('DELETE', button.dataset.user);
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const name = form.elements.name.value.trim();
      if (name) this.change('PUT', name);
    });
  }

  /** The members' names (none for a public room). */
  get members() {
    return this.data ? this.data.members : [];
  }

  get isPrivate() {
    return this.data !== null;
  }

  /** A room was opened: find out whether it has members (only private rooms do). */
  async show(room, { dm = false } = {}) {
    this.room = room;
    this.data = null;
    this.render();
    if (!room || dm) return;
    await this.refresh();
  }

  async refresh() {
    const room = this.room;
    const seq = ++this.seq;
    try {
      const data = await api('GET', `/api/rooms/${roomPath(room)}/members`);
      if (seq === this.seq) this.data = data;
    } catch (error) {
      if (seq !== this.seq) return;
      this.data = null; // 400: a public room; 404: not ours to see
      if (error.status === 401) this.onError(error);
    }
    this.render();
  }

  get isCreator() {
    return Boolean(this.data) && this.data.created_by.toLowerCase() === this.me().toLowerCase();
  }

  setOpen(open) {
    this.panel.hidden = !open;
    this.toggle.setAttribute('aria-expanded', String(open));
    this.form.querySelector('.form-error').textContent = '';
    if (open && this.isCreator) this.form.elements.name.focus();
  }

  render() {
    const known = this.isPrivate;
    this.toggle.hidden = !known;
    this.badge.hidden = !known;
    if (!known) {
      this.setOpen(false);
      this.list.replaceChildren();
      return;
    }
    this.toggle.textContent = `Members (${this.data.members.length})`;
    this.form.hidden = !this.isCreator;
    this.list.replaceChildren(...this.data.members.map((name) => this.item(name)));
  }

  item(name) {
    const creator = name.toLowerCase() === this.data.created_by.toLowerCase();
    const li = el('li', { class: 'member', 'data-user': name }, el('bdi', { class: 'member-name' }, name));
    if (creator) li.append(' ', el('span', { class: 'hint' }, '(creator)'));
    if (this.isCreator && !creator) {
      li.append(
        el(
          'button',
          { type: 'button', class: 'action remove-member', 'data-user': name, 'aria-label': `Remove ${name}` },
          'Remove',
        ),
      );
    }
    return li;
  }

  async change(method, name) {
    const error = this.form.querySelector('.form-error');
    error.textContent = '';
    const room = this.room;
    try {
      const data = await api(method, `/api/rooms/${roomPath(room)}/members/${encodeURIComponent(name)}`, {});
      if (room !== this.room) return;
      this.data = data;
      if (method === 'PUT') this.form.elements.name.value = '';
      this.render();
    } catch (failure) {
      if (failure.status === 401) this.onError(failure);
      else error.textContent = failure.message;
    }
  }
}
