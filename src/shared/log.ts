/**
 * A small structured logger: one line per event on stderr, `time level component message key=value…`.
 * Kept in-house because the agent logs little and must stay readable in a terminal.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const levelRank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  child(component: string): Logger;
}

export interface LoggerInit {
  level?: LogLevel;
  component?: string;
  write?: (line: string) => void;
}

function formatValue(value: string | number | boolean | null): string {
  if (typeof value === 'string') return /[\s="]/.test(value) || value === '' ? JSON.stringify(value) : value;
  return String(value);
}

export function createLogger(init: LoggerInit = {}): Logger {
  const minRank = levelRank[init.level ?? 'info'];
  const write = init.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const component = init.component ?? 'shoal';
  const emit = (level: LogLevel, message: string, fields?: LogFields): void => {
    if (levelRank[level] < minRank) return;
    let line = `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${component}: ${message}`;
    if (fields) {
      for (const [key, value] of Object.entries(fields)) {
        if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
      }
    }
    write(line);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (name) => createLogger({ ...init, component: `${component}/${name}` }),
  };
}

/** For tests and pure code paths that accept a logger but should stay quiet. */
export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};
