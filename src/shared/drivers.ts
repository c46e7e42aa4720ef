/**
 * The names of the task drivers, in one place: the task spec (cluster/), the node records membership
 * gossips and the runtime all name drivers, and membership may not import cluster/. In: nothing. Out:
 * `taskDrivers`, the list, and `TaskDriver`, one of its names.
 */
export const taskDrivers = ['exec', 'docker'] as const;
export type TaskDriver = (typeof taskDrivers)[number];
