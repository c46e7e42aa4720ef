/** htm bound to Preact's h: the dashboard's templates, without JSX or a compile step of their own. */
import htmModule from 'htm';
import { h, type ComponentChildren } from 'preact';

/**
 * htm's types are CommonJS (its package has no "type": "module"), so under nodenext its default export reads
 * as `.default`; the bundle takes its ES module (esbuild, platform browser), whose default is htm itself.
 */
const htm = htmModule as unknown as typeof htmModule.default;

export const html: (strings: TemplateStringsArray, ...values: unknown[]) => ComponentChildren = htm.bind(h);
