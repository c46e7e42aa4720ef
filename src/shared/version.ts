/** shoal's version, as every node advertises it in membership and the API reports it. */
export const shoalVersion = '0.1.0';
