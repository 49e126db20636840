// search.js — the room search box: an ARIA combobox that asks the server
// (GET /api/rooms?q=…&limit=20, debounced) as the user types and lists the matches.
// ArrowUp/ArrowDown move, Enter chooses, Escape closes (then clears); clicks work too.
import { api } from './api.js';
import { el, searchOption } from './render.js';

const DEBOUNCE_MS = 150;
const LIMIT = 20;

export function setupSearch(input, listbox, onChoose) {
  let timer = null;
  let requestSeq = 0;
  let options = []; // room names shown
  let active = -1;

  function close() {
    listbox.hidden = true;
    input.setAttribute('aria-expanded', 'false');
    input.removeAttribute('aria-activedescendant');
    active = -1;
  }

  function show(rooms, query) {
    options = rooms;
    active = -1;
    input.removeAttribute('aria-activedescendant');
    listbox.replaceChildren(...rooms.map((room, i) => searchOption(room, i)));
    if (!rooms.length) {
      listbox.append(el('li', { class: 'no-match', role: 'presentation' }, `No room matches “${query}”`));
    }
    listbox.hidden = false;
    input.setAttribute('aria-expanded', 'true');
  }

  function setActive(index) {
    const items = listbox.querySelectorAll('[role="option"]');
    if (!items.length) return;
    active = (index + items.length) % items.length;
    items.forEach((item, i) => item.setAttribute('aria-selected', String(i === active)));
    input.setAttribute('aria-activedescendant', items[active].id);
    items[active].scrollIntoView({ block: 'nearest' });
  }

  function choose(room) {
    close();
    input.value = '';
    onChoose(room);
  }

  /** Asks the server; with `chooseExact`, an exact match is opened at once (Enter typed fast). */
  async function lookUp(query, chooseExact = false) {
    clearTimeout(timer);
    const seq = ++requestSeq;
    try {
      const rooms = await api('GET', `/api/rooms?q=${encodeURIComponent(query)}&limit=${LIMIT}`);
      if (seq !== requestSeq || input.value.trim() !== query) return; // a newer query won
      if (document.activeElement !== input) return; // the user has moved on
      const names = (rooms || []).map((room) => room.name);
      if (chooseExact && names.includes(query)) choose(query);
      else show(names, query);
    } catch (error) {
      if (seq !== requestSeq) return;
      listbox.replaceChildren(el('li', { class: 'no-match', role: 'presentation' }, error.message));
      listbox.hidden = false;
    }
  }

  input.addEventListener('input', () => {
    clearTimeout(timer);
    const query = input.value.trim();
    if (!query) {
      requestSeq += 1;
      close();
      return;
    }
    timer = setTimeout(() => lookUp(query), DEBOUNCE_MS);
  });

  input.addEventListener('keydown', (event) => {
    const open = !listbox.hidden;
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      if (!open) {
        if (input.value.trim()) lookUp(input.value.trim());
        return;
      }
      setActive(event.key === 'ArrowDown' ? active + 1 : active < 0 ? -1 : active - 1);
    } else if (event.key === 'Enter') {
      event.preventDefault();
      if (open && active >= 0) choose(options[active]);
      else if (open && options.length) choose(options[0]);
      else if (!open && input.value.trim()) lookUp(input.value.trim(), true);
    } else if (event.key === 'Escape') {
      if (open) close();
      else input.value = '';
    }
  });

  // Keep focus in the input while clicking an option, then choose it.
  listbox.addEventListener('mousedown', (event) => event.preventDefault());
  listbox.addEventListener('click', (event) => {
    const option = event.target.closest('[role="option"]');
    if (option) choose(option.dataset.room);
  });
  input.addEventListener('blur', close);
}
