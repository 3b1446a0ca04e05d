// JSON lines on stdout. Never a line per request for dropped or blocked traffic.
import pino from 'pino';

export type Logger = pino.Logger;

export const createLogger = (level: string): Logger => pino({ level, base: { service: 'scrubber' } });
