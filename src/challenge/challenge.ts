// A challenge asks an untrusted source to prove it is a real client before
// its requests reach an application under attack. Detection decides *when*
// (the verdict says "challenge"); a strategy decides *how*: the cookie round
// trip today, another kind (e.g. a proof of work for clients that cannot keep
// cookies) can join behind the same interface.
import type { Config } from '../config/schema.ts';
import type { RequestHead } from '../http/head.ts';
import type { Answer } from '../respond/reply.ts';

export interface Challenge {
  readonly kind: string;
  /** The request carries a valid proof for its source and domain. Pure (now passed in). */
  passed(head: RequestHead, domain: string, now: number): boolean;
  /** The client id of a valid proof the request carries, or null: trust is per client, and the ids tell the people
   *  behind one address apart. Pure (now passed in) but for the challenge's own bounded bookkeeping. */
  client?(head: RequestHead, domain: string, now: number): string | null;
  /** The answer that makes a client prove itself; passing it earns trust for trustMs. `again`: the client came straight
   *  back without the proof (on the same connection, for the same URL): it cannot keep it, and is told so. */
  issue(head: RequestHead, domain: string, now: number, trustMs: number, again?: boolean): Answer;
  reconfigure?(config: Config): void;
}
