// Detection's monotonic counters, as named fields (statistics and /metrics
// read them by field, not by string).
export class Counters {
  /** Connections from banned sources dropped after accept (those refused at accept are counted by the BlockList). */
  droppedConnections = 0;
  droppedRequests = 0;
  challenges = 0;
  challengesPassed = 0;
  challengesIgnored = 0;
  overflowsNotEnforced = 0;
  scoreNotEnforced = 0;
  attacksStarted = 0;
  /** Upgrade requests that would have been challenged: they cannot follow a redirect, so they are dropped. */
  upgradesRefused = 0;
}
