/** The dashboard's entry (bundled by scripts/build.mjs into /ui/app.js): its style, then the app. */
import { render } from 'preact';
import { App } from './app.ts';
import { html } from './html.ts';
import { css } from './style.ts';

const style = document.createElement('style');
style.textContent = css;
document.head.append(style);

const root = document.getElementById('app');
if (root !== null) {
  root.textContent = '';
  render(html`<${App} />`, root);
}
