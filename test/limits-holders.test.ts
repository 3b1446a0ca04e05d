// The holder list (limits/holders.ts) behaves as an insertion-ordered Set of
// the requests holding a place in a domain's limit: generated sequences of
// adds, deletes (also of absent holders) and removals during iteration,
// checked against a Set.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HolderList, type SlotHolder } from '../src/limits/holders.ts';

const holder = (i: number): SlotHolder & { i: number } => ({ i, sentAt: i, prevHolder: null, nextHolder: null, outlived() {} });
const items = (l: HolderList) => { const out: number[] = []; l.forEach((h) => out.push((h as SlotHolder & { i: number }).i)); return out; };

describe('HolderList', () => {
  it('matches an insertion-ordered Set through any sequence of adds and deletes', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 15 })), { maxLength: 200 }), (ops) => {
      const hs = Array.from({ length: 16 }, (_, i) => holder(i));
      const list = new HolderList();
      const model = new Set<number>();
      for (const [add, i] of ops) {
        if (add && !model.has(i)) { list.add(hs[i]); model.add(i); }
        else if (!add) { list.delete(hs[i]); model.delete(i); }
        expect(list.size).toBe(model.size);
      }
      expect(items(list)).toEqual([...model]);
    }), { seed: 7, numRuns: 300 });
  });

  it('lets the visited holder remove itself during forEach', () => {
    const list = new HolderList();
    const hs = [0, 1, 2, 3].map(holder);
    for (const h of hs) list.add(h);
    list.forEach((h) => { if ((h as SlotHolder & { i: number }).i % 2 === 0) list.delete(h); });
    expect(items(list)).toEqual([1, 3]);
    expect(list.size).toBe(2);
  });
});
