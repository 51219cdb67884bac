// The DOM and theme helpers every anywidget view uses. anywidget ships one ES module per widget, so
// views/assets.py puts this file's text in place of each widget's `import ... from "./dom.js"` line.

// An element with attributes (`style`: an object of styles, `on...`: listeners) and children.
export function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'style') Object.assign(node.style, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

// A token as a short visible label: escapes shown, spaces (and GPT-2's Ġ) as ·, at most `length` characters.
export function shortToken(t, length = 16) {
  return (
    JSON.stringify(t)
      .slice(1, -1)
      .replace(/\\u0120|Ġ/g, '·')
      .replace(/ /g, '·')
      .slice(0, length) || '∅'
  );
}

// The widget's root in the shared theme (theme.css: the llm-view class and its colours).
export function themed(root, name) {
  root.classList.add('llm-view', name);
  return root;
}

// A CSS colour (variables resolved against `root`) as [r, g, b]; `fallback` until root is in the page.
export function cssColour(root, value, fallback) {
  if (!root.isConnected) return fallback; // nothing to resolve the variables against yet
  const probe = el('span', { style: { color: value, display: 'none' } });
  root.append(probe);
  const parts = getComputedStyle(probe).color.match(/[\d.]+/g);
  probe.remove();
  return parts ? parts.slice(0, 3).map(Number) : fallback;
}

// Calls `redraw` when JupyterLab switches theme and once `root` is first in the page (a canvas takes its
// colours from the theme when painted); returns the function that stops watching.
export function onTheme(root, redraw) {
  const theme = new MutationObserver(redraw);
  theme.observe(document.body, { attributes: true, attributeFilter: ['data-jp-theme-name', 'data-jp-theme-light'] });
  let attached = root.isConnected;
  const sized = new ResizeObserver(() => {
    if (!attached && root.isConnected) {
      attached = true;
      redraw();
    }
  });
  sized.observe(root);
  return () => {
    theme.disconnect();
    sized.disconnect();
  };
}
