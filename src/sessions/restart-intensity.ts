/**
 * OTP-style restart intensity, as a pure function: a session may crash at most
 * `maxRestarts` times within `windowMs`; one more and it is stopped, not
 * restarted forever. Returns the crash times still inside the window and
 * whether to stop.
 */
export function afterCrash(previous: readonly number[], nowMs: number, maxRestarts: number, windowMs: number): { crashes: number[]; stop: boolean } {
  const crashes = [...previous.filter((t) => nowMs - t < windowMs), nowMs];
  return { crashes, stop: crashes.length > maxRestarts };
}
