// editing.js — editing and deleting one's own messages in the open room's feed. Own
// messages carry Edit and Delete buttons (render.js). Edit — or ↑ in the empty compose
// box, for one's last message — swaps the text for an inline box where Enter saves,
// Shift+Enter adds a line and Escape cancels; Delete asks once more, inline. The change
// goes to the server through `save` / `remove`; what it becomes on screen comes back as
// `edited`/`deleted` events through the feed (ours and everyone else's alike).
import { confirmDeleteElement, editorElement } from './render.js';

export class MessageActions {
  /**
   * save(id, text), remove(id): promises that settle when the server has answered (and
   * reject with an ApiError, whose message is shown). composer: the compose box, where
   * the focus goes back after an edit started with ↑, or a delete.
   */
  constructor(feed, { save, remove, composer, onError }) {
    Object.assign(this, { feed, save, remove, composer, onError });
    this.editing = null; // {id, node, form, input, returnTo, busy}
    const root = feed.root;
    root.addEventListener('click', (event) => this.onClick(event));
    root.addEventListener('keydown', (event) => this.onKeydown(event));
    root.addEventListener('submit', (event) => {
      event.preventDefault();
      this.commit();
    });
    feed.onDeleted = (id) => this.deleted(id);
  }

  /** The feed was emptied (another room opened): forget what was being edited. */
  reset() {
    this.editing = null;
  }

  /** ↑ in the empty compose box: edit one's last message here. Returns whether it did. */
  editLast() {
    const id = this.feed.lastOwnId();
    if (id === undefined) return false;
    this.startEdit(id, this.composer);
    return true;
  }

  onClick(event) {
    const button = event.target.closest('button[data-action]');
    const node = button && button.closest('.message[data-id]');
    if (!node) return;
    const id = Number(node.dataset.id);
    switch (button.dataset.action) {
      case 'edit':
        this.startEdit(id, button);
        break;
      case 'cancel-edit':
        this.cancelEdit();
        break;
      case 'delete':
        this.askDelete(node);
        break;
      case 'confirm-delete':
        this.confirmDelete(id, node);
        break;
      case 'cancel-delete':
        this.cancelDelete(node);
        break;
      default:
        break;
    }
  }

  onKeydown(event) {
    if (event.target.matches('.edit-input')) {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.commit();
      } else if (event.key === 'Escape') {
        event.preventDefault();
        this.cancelEdit();
      }
    } else if (event.key === 'Escape') {
      const confirm = event.target.closest('.confirm-delete');
      if (confirm) {
        event.preventDefault();
        this.cancelDelete(confirm.closest('.message'));
      }
    }
  }

  // ---- edit ----------------------------------------------------------------------------

  /** Opens the inline box on message `id`; `returnTo` gets the focus when it closes. */
  startEdit(id, returnTo) {
    if (this.editing && this.editing.id === id && this.editing.node.isConnected) {
      this.editing.input.focus();
      return;
    }
    this.close(false);
    const item = this.feed.item(id);
    const node = this.feed.node(id);
    if (!item || item.deleted || !node) return;
    const form = editorElement(item.text);
    const input = form.querySelector('.edit-input');
    const text = node.querySelector('.text');
    text.hidden = true;
    text.after(form);
    node.classList.add('editing');
    this.editing = { id, node, form, input, returnTo, busy: false };
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
    node.scrollIntoView({ block: 'nearest' });
  }

  async commit() {
    const editing = this.editing;
    if (!editing || editing.busy) return;
    const item = this.feed.item(editing.id);
    if (!item || item.deleted) {
      this.close(true);
      return;
    }
    const text = editing.input.value.trim();
    if (!text) {
      this.showEditError('A message cannot be empty. To remove it, use Delete.');
      return;
    }
    if (text === item.text) {
      this.close(true);
      return;
    }
    editing.busy = true;
    editing.input.readOnly = true;
    this.showEditError('');
    try {
      await this.save(editing.id, text);
      if (this.editing === editing) this.close(true);
    } catch (error) {
      if (this.editing !== editing) return;
      editing.busy = false;
      editing.input.readOnly = false;
      this.showEditError(error.message || 'The edit was not saved.');
    }
  }

  cancelEdit() {
    this.close(true);
  }

  showEditError(message) {
    if (this.editing) this.editing.form.querySelector('.form-error').textContent = message;
  }

  /** Closes the inline box (if open); `refocus`: give the focus back to where it came from. */
  close(refocus) {
    const editing = this.editing;
    if (!editing) return;
    this.editing = null;
    editing.form.remove();
    editing.node.classList.remove('editing');
    const text = editing.node.querySelector('.text');
    if (text) text.hidden = false;
    if (!refocus) return;
    const target = editing.returnTo && editing.returnTo.isConnected ? editing.returnTo : this.composer;
    target.focus();
  }

  /** The feed shows message `id` as deleted now (by us, or in another tab). */
  deleted(id) {
    if (!this.editing || this.editing.id !== id) return;
    this.editing = null; // its node, with the box, is gone already
    const focus = document.activeElement;
    if (!focus || focus === document.body) this.composer.focus(); // the box had it
  }

  // ---- delete --------------------------------------------------------------------------

  askDelete(node) {
    const actions = node.querySelector('.actions');
    if (!actions || node.querySelector('.confirm-delete')) return;
    const confirm = confirmDeleteElement();
    actions.hidden = true;
    actions.after(confirm);
    confirm.querySelector('[data-action="confirm-delete"]').focus();
  }

  cancelDelete(node) {
    const confirm = node && node.querySelector('.confirm-delete');
    if (!confirm) return;
    confirm.remove();
    const actions = node.querySelector('.actions');
    actions.hidden = false;
    actions.querySelector('[data-action="delete"]').focus();
  }

  async confirmDelete(id, node) {
    const confirm = node.querySelector('.confirm-delete');
    for (const button of confirm.querySelectorAll('button')) button.disabled = true;
    try {
      await this.remove(id);
      this.composer.focus();
    } catch (error) {
      if (!node.isConnected) return;
      this.cancelDelete(node);
      this.onError(error);
    }
  }
}
