// landing.js — behaviour of the landing page: the Log in / Sign up buttons swap with
// their forms (Cancel swaps back), the forms call /api/login, /api/signup and /api/guest,
// and success lands on /home. Server errors are shown next to the form.
import { api } from './api.js';

const choiceButtons = [
  document.getElementById('show-login'),
  document.getElementById('show-signup'),
];
const forms = {
  login: document.getElementById('login-form'),
  signup: document.getElementById('signup-form'),
};
const guestForm = document.getElementById('guest-form');

function showForm(which) {
  for (const button of choiceButtons) button.hidden = true;
  for (const [name, form] of Object.entries(forms)) form.hidden = name !== which;
  const form = forms[which];
  setError(form, '');
  form.elements.username.focus();
}

function showChoice(focusButton) {
  for (const form of Object.values(forms)) {
    form.hidden = true;
    setError(form, '');
  }
  for (const button of choiceButtons) button.hidden = false;
  focusButton?.focus();
}

function setError(form, message) {
  form.querySelector('.form-error').textContent = message;
}

/** Runs `action` with the form's submit button disabled; shows any error next to the form. */
async function submitting(form, action) {
  const submit = form.querySelector('button[type="submit"]');
  submit.disabled = true;
  setError(form, '');
  try {
    await action();
  } catch (error) {
    setError(form, error.message);
    submit.disabled = false;
  }
}

function credentials(form) {
  const username = form.elements.username.value.trim();
  const password = form.elements.password.value;
  if (!username) throw new Error('Enter a username.');
  if (!password) throw new Error('Enter a password.');
  return { username, password };
}

document.getElementById('show-login').addEventListener('click', () => showForm('login'));
document.getElementById('show-signup').addEventListener('click', () => showForm('signup'));

for (const [name, form] of Object.entries(forms)) {
  const opener = document.getElementById(`show-${name}`);
  form.querySelector('.cancel').addEventListener('click', () => showChoice(opener));
  form.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') showChoice(opener);
  });
}

forms.login.addEventListener('submit', (event) => {
  event.preventDefault();
  submitting(forms.login, async () => {
    await api('POST', '/api/login', credentials(forms.login));
    location.assign('/home');
  });
});

forms.signup.addEventListener('submit', (event) => {
  event.preventDefault();
  submitting(forms.signup, async () => {
    await api('POST', '/api/signup', credentials(forms.signup));
    location.assign('/home');
  });
});

guestForm.addEventListener('submit', (event) => {
  event.preventDefault();
  submitting(guestForm, async () => {
    const username = guestForm.elements.username.value.trim();
    const room = guestForm.elements.room.value.trim() || 'general';
    if (!username) throw new Error('Enter a name.');
    await api('POST', '/api/guest', { username });
    location.assign('/home?room=' + encodeURIComponent(room));
  });
});

// With a live session the server already redirects `/` to /home; this covers a page
// restored from the browser's cache.
api('GET', '/api/me').then(
  () => location.replace('/home'),
  () => {}, // 401: stay here
);
