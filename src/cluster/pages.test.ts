import { describe, expect, it } from 'vitest';
import { seededRandom } from '../shared/random.ts';
import { compareSubmission, pageOfTasks, parseTaskPageCursor, taskPageCursor } from './pages.ts';

describe('pages of the task list', () => {
  it('reads every task exactly once, in submission order, whatever the page size', () => {
    const random = seededRandom(5);
    // Entries that submit one task or a batch sharing an index, held out of order here and there.
    const tasks: { submitIndex: number; id: string }[] = [];
    for (let index = 1; index <= 200; index++) {
      const count = random.next() < 0.3 ? random.int(2, 20) : 1;
      for (let n = 0; n < count; n++) tasks.push({ submitIndex: index, id: random.int(0, 1e9).toString(16) });
    }
    for (let swap = 0; swap < 50; swap++) {
      const i = random.int(0, tasks.length);
      const j = random.int(0, tasks.length);
      [tasks[i], tasks[j]] = [tasks[j]!, tasks[i]!];
    }
    const all = [...tasks].sort(compareSubmission);
    expect(pageOfTasks(tasks, null, null)).toEqual({ tasks: all, next: null });
    for (const limit of [1, 7, 100, all.length, all.length + 1]) {
      const read: { submitIndex: number; id: string }[] = [];
      let after: string | null = null;
      for (let pages = 0; pages <= all.length; pages++) {
        const page: { tasks: { submitIndex: number; id: string }[]; next: string | null } = pageOfTasks(
          tasks,
          limit,
          after === null ? null : parseTaskPageCursor(after),
        );
        expect(page.tasks.length).toBeLessThanOrEqual(limit);
        read.push(...page.tasks);
        after = page.next;
        if (after === null) break;
      }
      expect(read).toEqual(all);
    }
  });

  it('lists a task submitted between pages later, and skips none when one is forgotten', () => {
    const tasks = [
      { submitIndex: 1, id: 'a' },
      { submitIndex: 2, id: 'b' },
      { submitIndex: 3, id: 'c' },
    ];
    const first = pageOfTasks(tasks, 2, null);
    expect(first.tasks.map((t) => t.id)).toEqual(['a', 'b']);
    tasks.splice(1, 1);
    tasks.push({ submitIndex: 4, id: 'd' });
    const second = pageOfTasks(tasks, 2, parseTaskPageCursor(first.next ?? ''));
    expect(second).toEqual({ tasks: [tasks[1], tasks[2]], next: null });
  });

  it('reads its own cursors back, a task id with dots included, and refuses what is none', () => {
    const task = { submitIndex: 42, id: 'fw.web-0' };
    expect(parseTaskPageCursor(taskPageCursor(task))).toEqual(task);
    for (const bad of ['', '42', '.x', 'x.y', '-1.x', '42.']) expect(parseTaskPageCursor(bad)).toBeNull();
  });
});
