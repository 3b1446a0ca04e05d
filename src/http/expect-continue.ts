// Expect: 100-continue (RFC 9110 §10.1.1). Node's servers send the 100 as soon
// as the head is parsed unless they have a 'checkContinue' listener; the
// listeners register one (awaitContinue), so the 100 is the request flow's to
// send, and it goes when the flow starts reading the body (bodyOf). A request
// refused before that (a Content-Length over limits.maxBodyBytes, a source the
// filter drops, maintenance, a limit) gets its final answer without the client
// uploading the body first, as from nginx and HAProxy. Node then closes such an
// HTTP/1.1 connection after the answer: the body may still come, unread.

/** Responses whose client waits for 100 Continue before it sends the body. */
const AWAITING = new WeakSet<object>();

type Head = { httpVersionMajor: number; headers: Record<string, string | string[] | undefined> };

/** The client of `res` waits for 100 Continue: bodyOf sends it, if the body is ever wanted. */
export function awaitContinue(req: Head, res: { writeContinue(): unknown }): void {
  // No body at all (RFC 9110 forbids the expectation then; some clients send it anyway): the 100 at once, as before,
  // since a final answer without it would close the HTTP/1.1 connection for nothing. On HTTP/2 a body needs no header.
  const length = req.headers['content-length'];
  if (length === '0' || (req.httpVersionMajor === 1 && length === undefined && req.headers['transfer-encoding'] === undefined)) res.writeContinue();
  else AWAITING.add(res);
}

/** The request's body, asked for: a client still waiting for 100 Continue is told to send it now. */
export function bodyOf<T>(req: T, res: { writeContinue(): unknown } | null): T {
  if (res !== null && AWAITING.delete(res)) res.writeContinue();
  return req;
}
