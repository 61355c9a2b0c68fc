// Small DOM helpers shared by the controllers.
export const $ = (sel) => document.querySelector(sel);

export function showError(message) {
  const el = $('#error');
  el.textContent = message;
  el.hidden = false;
}

export function clearError() {
  $('#error').hidden = true;
}

export function setStatus(el, state, text) {
  el.dataset.state = state;
  el.textContent = text;
}

export function download(name, data, type) {
  const url = URL.createObjectURL(new Blob([data], { type }));
  const a = Object.assign(document.createElement('a'), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// Unfold a collapsed section (a table of contents link or a lesson goes to it).
export function openSection(id) {
  const section = document.getElementById(id);
  if (!section?.classList.contains('collapsed')) return;
  section.classList.remove('collapsed');
  section.querySelector(':scope > .fold')?.setAttribute('aria-expanded', 'true');
  section.dispatchEvent(new CustomEvent('unfolded', { bubbles: true }));
}

export function html(name, attrs = {}, text) {
  const e = document.createElement(name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
