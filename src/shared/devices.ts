/**
 * Device kinds (gpu, fpga…), counted per node and per task. One bound for all: the task spec (cluster/),
 * the node records membership gossips, and the allocator, whose resource vectors hold one slot per kind
 * known anywhere in the cluster.
 */
export const deviceKindsMax = 16;
