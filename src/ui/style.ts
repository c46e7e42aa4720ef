/** The dashboard's style sheet (a <style> element: the page's CSP allows inline styles, not inline scripts). */
export const css = `
:root { --fg: #1d2330; --muted: #6b7280; --line: #e3e6ea; --bg: #f7f8fa; --accent: #2563eb; --danger: #b42318; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
h1 { font-size: 20px; margin: 0 0 12px; }
h2 { font-size: 15px; margin: 20px 0 8px; }
nav { display: flex; align-items: center; gap: 4px; padding: 0 16px; height: 44px; background: #1d2330; color: #fff; }
nav a { color: #cbd5e1; padding: 6px 10px; border-radius: 4px; }
nav a.active, nav a:hover { color: #fff; background: #334155; text-decoration: none; }
nav .brand { font-weight: 700; margin-right: 12px; letter-spacing: 0.5px; }
nav .spacer { flex: 1; }
nav .muted { color: #94a3b8; margin-right: 8px; }
nav .stream { font-size: 12px; padding: 2px 8px; border-radius: 10px; margin-right: 8px; }
nav .stream.live { background: #166534; }
nav .stream.down { background: #92400e; }
button { font: inherit; padding: 4px 10px; border: 1px solid #cbd5e1; border-radius: 4px; background: #fff; cursor: pointer; }
button:hover { border-color: var(--accent); }
button:disabled { opacity: 0.6; cursor: default; }
button.danger { color: var(--danger); border-color: #f1b4ae; }
button.link { background: none; border: none; color: #cbd5e1; }
main { padding: 16px; }
.page { max-width: 1280px; margin: 0 auto; }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
table.narrow { width: auto; min-width: 220px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f1f3f6; font-weight: 600; font-size: 12px; color: #475569; }
th.wide { width: 18%; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.reason { color: #7c2d12; max-width: 320px; }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
.muted { color: var(--muted); }
.small { font-size: 12px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; min-width: 160px; }
.card .label { font-size: 12px; color: var(--muted); }
.card .value { font-size: 20px; font-weight: 600; }
.card .value.small { font-size: 14px; }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 16px; }
.bar { position: relative; height: 20px; background: #eef1f4; border-radius: 3px; overflow: hidden; min-width: 120px; }
.bar .fill { position: absolute; inset: 0 auto 0 0; }
.bar .fill.low { background: #93c5fd; }
.bar .fill.mid { background: #fcd34d; }
.bar .fill.high { background: #fca5a5; }
.bar span { position: relative; padding-left: 6px; font-size: 12px; line-height: 20px; white-space: nowrap; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; background: #e5e7eb; }
.badge.leader { background: #dbeafe; color: #1e40af; }
.badge.draining { background: #fef3c7; color: #92400e; }
.state-alive, .state-running, .job-running { background: #dcfce7; color: #166534; }
.state-pending, .state-assigned, .state-starting, .state-suspect { background: #fef9c3; color: #854d0e; }
.state-finished, .job-complete { background: #e0e7ff; color: #3730a3; }
.state-failed, .state-lost, .state-dead { background: #fee2e2; color: #991b1b; }
.state-killed, .state-left, .job-stopped { background: #e5e7eb; color: #374151; }
.note { padding: 8px 12px; border-radius: 4px; margin: 8px 0; }
.note.error { background: #fef2f2; color: var(--danger); border: 1px solid #fecaca; }
.note.warn { background: #fffbeb; color: #92400e; border: 1px solid #fde68a; }
.note.inline { display: inline-block; margin: 0 0 0 8px; padding: 2px 8px; }
.filters { display: flex; gap: 12px; align-items: center; margin-bottom: 10px; flex-wrap: wrap; }
.filters label { display: flex; gap: 6px; align-items: center; color: var(--muted); }
select, input { font: inherit; padding: 4px 6px; border: 1px solid #cbd5e1; border-radius: 4px; background: #fff; }
ul.events, ol.timeline { list-style: none; padding: 0; margin: 0; background: #fff; border: 1px solid var(--line); }
ul.events li, ol.timeline li { padding: 4px 10px; border-bottom: 1px solid var(--line); display: flex; flex-wrap: wrap; gap: 0 6px; align-items: baseline; }
.id { margin-left: 6px; }
dl.fields { display: grid; grid-template-columns: 110px 1fr; gap: 4px 12px; margin: 0 0 12px; background: #fff; border: 1px solid var(--line); padding: 10px; }
dl.fields dt { color: var(--muted); }
dl.fields dd { margin: 0; word-break: break-word; }
.logs pre { background: #0f172a; color: #e2e8f0; padding: 10px; border-radius: 4px; min-height: 80px; max-height: 480px; overflow: auto; white-space: pre-wrap; word-break: break-all; margin: 4px 0 0; }
.logs pre .stderr { color: #fca5a5; }
.topology { display: flex; flex-direction: column; gap: 10px; }
.topology .box { border: 2px solid #94a3b8; border-radius: 6px; background: #fff; padding: 6px; }
.topology .box.draining { border-style: dashed; border-color: #d97706; }
.topology .box.dead, .topology .box.left { opacity: 0.5; }
.topology .box-title { font-weight: 600; margin-bottom: 4px; }
.topology .blocks { display: flex; height: 34px; background: #f1f5f9; border-radius: 3px; overflow: hidden; }
.topology .block { display: block; height: 100%; border-right: 1px solid #fff; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; font-size: 11px; padding: 2px 4px; color: #1e293b; }
.count { margin-right: 6px; white-space: nowrap; }
.login { max-width: 380px; margin: 12vh auto; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 24px; }
.login form { display: flex; flex-direction: column; gap: 8px; }
.login input { padding: 8px; }
.login button { padding: 8px; background: var(--accent); color: #fff; border: none; }
`;
