/**
 * The dashboard's two files, served by every node at /ui: an HTML shell and the app's script, which the
 * build bundles from src/ui (Preact) and embeds in the binary (scripts/build.mjs defines __SHOAL_UI_JS__).
 * Both are public: the app asks for a token and sends it with every API call, like any client; nothing in
 * these files is a secret. Run from the sources (tests, `npm start`), there is no bundle: the script says
 * how to get one.
 */
declare const __SHOAL_UI_JS__: string | undefined;

/** The app's script, or a stand-in that says the dashboard is built into dist/shoal. */
export function uiScript(): string {
  return typeof __SHOAL_UI_JS__ === 'string'
    ? __SHOAL_UI_JS__
    : "document.getElementById('app').textContent = 'The dashboard is built into the binary: npm run build, then open /ui on dist/shoal.';\n";
}

/** The page every dashboard address loads; the app draws the rest (its pages are #/… routes). */
export function uiPage(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>shoal</title>
<link rel="icon" href="data:,">
</head>
<body>
<div id="app">Loading…</div>
<script src="/ui/app.js"></script>
</body>
</html>
`;
}

/**
 * What the browser may do with the dashboard's pages: load scripts, styles and API answers from this node
 * only, nothing framed, nothing inline but styles (Preact sets style attributes).
 */
export const uiContentSecurityPolicy =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
